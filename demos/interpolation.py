"""Interpolation tab: walk between two images or two samples; export frames, GIF and MP4.

The handlers are top-level functions of plain values (tests call them directly);
the choice of space, path and style mixing is ``core.interpolate``'s, shared with the CLI.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import gradio as gr

from core.tags import FACES
from demos import face_picker
from demos.common import (
    DECODE_STEPS,
    HEAVY,
    AppContext,
    ImageUpload,
    caption,
    decode_steps_slider,
    decode_steps_view,
    model_panel,
    read_upload,
)
from demos.projection import prepare_target
from demos.wiring import bind, bind_settings, request_stop, stop_flag

GROUPS = ["coarse", "middle", "fine"]
SEEDS, IMAGES = "two seeds", "two images"
# Gradio lays a gallery out as N fixed columns of at least 100 px, which is wider than the column at 8 frames
# per row: frames ran off to the right. Let the row hold as many as fit, and wrap the rest.
CSS = ("#interp_gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(80px, 1fr)) !important; }\n"
       + face_picker.CSS)  # the app's one style sheet (demos.app)


def show_endpoints(source: str) -> tuple[dict, dict]:
    """Seed boxes for seeds, image boxes for images: (seed row, image row) visibility."""
    return gr.update(visible=source != IMAGES), gr.update(visible=source == IMAGES)


def model_hint(ctx: AppContext, name: str | None, image) -> str | None:
    """One plain line when a photo does not suit the chosen model (a colour face photo on the 8×8 greyscale digits
    model silently became a grey blob), naming the model to choose instead; None when it suits."""
    import numpy as np

    if not name or name not in ctx.registry.entries or FACES in ctx.registry.entry(name).tags:
        return None  # (read from the entry: a face model is not loaded just to say nothing)
    try:
        m = ctx.model(name)
    except gr.Error:
        return None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colour = float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean()) > 8
    much_larger = not m.resizable and min(image.size) >= 4 * m.image_size
    if not ((colour and m.channels == 1) or much_larger):
        return None
    kind = "greyscale" if m.channels == 1 else "colour"
    face = ctx.default_model(FACES)
    instead = (f"for a photo of a face choose {ctx.registry.entry(face).card.title} in the Model list" if face
               else "choose a model made for such images in the Model list")
    return (f"This image does not suit {m.card.title} ({m.image_size}×{m.image_size} px, {kind}): it would come out as a "
            f"{m.image_size}×{m.image_size} {kind} image; {instead}.")


def check_fit(ctx: AppContext, name: str | None, image_a: str | None, image_b: str | None,
              request: gr.Request | None = None) -> None:
    """Warn as soon as an uploaded image (or a newly chosen model) does not suit the model: before a long run."""
    for path in (image_a, image_b):
        if path:
            hint = model_hint(ctx, name, read_upload(ctx, path, request))
            if hint:
                gr.Warning(hint)
                return


@dataclass
class InterpolationSettings:
    """The tab's inputs by name (``demos.wiring.bind_settings``); defaults as the tab opens."""

    model: str | None
    source: str = SEEDS
    seed_a: float | None = 1
    seed_b: float | None = 2
    image_a: str | None = None
    image_b: str | None = None
    frames: float = 16
    space: str | None = None
    method: str = "auto"
    mixing: list[str] | None = None
    steps: float = 100  # projection steps (image endpoints)
    align: bool = True
    fps: float = 12
    boomerang: bool = True
    decode_steps: float | None = DECODE_STEPS  # a diffusion model's sampling steps per frame (one-shot decoders: none)


def interpolate(ctx: AppContext, s: InterpolationSettings, request: gr.Request | None = None, progress=gr.Progress()):
    """Make the walk (yields a "projecting" status first for image endpoints), then the files. Stop (or a client that
    leaves) ends the projection of two images at its next step, with the two endpoints as projected so far
    (:func:`stopped_result`)."""
    import torch

    from core.images import from_pil
    from core.interpolate import interpolate_images, interpolate_seeds, plan_interpolation, whole_number

    if s.source not in (SEEDS, IMAGES):
        raise gr.Error(f"Endpoints are '{SEEDS}' or '{IMAGES}', not '{s.source}'.")
    name, m = s.model, ctx.model(s.model)
    from_images = s.source == IMAGES
    plan = plan_interpolation(m, s.frames, s.space or None, s.method, s.mixing or [], from_images)  # ValueError -> gr.Error
    decode_kw = m.decode_options(s.decode_steps, inverted=from_images)
    if not from_images:
        progress(0.9, desc="decoding frames")
        yield export(ctx, interpolate_seeds(ctx.registry.handle(name, m), plan, s.seed_a or 0, s.seed_b or 0, ctx.executor,
                                            decode_kw), s.fps, s.boomerang, request)
        return
    from core.image_input import default_max_side, stacked_weights

    n_steps = whole_number(s.steps, "number of projection steps", 1, ctx.max_steps)
    hint = next(filter(None, (model_hint(ctx, name, read_upload(ctx, p, request)) for p in (s.image_a, s.image_b) if p)), None)
    first = prepare_target(ctx, m, name, s.image_a, bool(s.align), request, max_side=default_max_side(), slot="interp_a")
    inputs = [first, prepare_target(ctx, m, name, s.image_b, bool(s.align), request, shape=first.shape, slot="interp_b")]
    m = m.at_size(*first.shape)  # a VAE works at image A's size (B is fitted to it); other models: themselves
    for note in [*(i.note for i in inputs if i.note), *plan.notes]:
        gr.Warning(note)
    targets = torch.cat([from_pil(i.image, m.channels) for i in inputs])
    stop = stop_flag(ctx, request, "interpolation")  # also set once the client has gone: nobody would see the walk
    yield None, None, None, None, "Projecting both images…"
    reached = {"stage": "projecting", "step": 0, "steps": n_steps}  # the last step reported: where a Stop landed

    def report(i: int, n: int, p: float, stage: str = "projecting") -> None:
        reached.update(stage=stage, step=i, steps=n)
        what = "projecting" if stage == "projecting" else "tuning the decoder to both images"
        progress(i / n, desc=f"{what}: step {i}/{n}, PSNR {p:.1f} dB")

    try:
        result = interpolate_images(ctx.registry.handle(name, m), plan, targets, n_steps, report, stacked_weights(inputs),
                                    ctx.executor, decode=decode_kw, should_stop=stop.is_set)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    if result.stopped:
        yield stopped_result(ctx, result, reached, request)
        return
    note = " " + result.endpoints_sentence() + (f"\n\n**{hint}**" if hint else "")
    yield export(ctx, result, s.fps, s.boomerang, request, note)


def stopped_result(ctx: AppContext, result, where: dict, request: gr.Request | None) -> tuple:
    """The tab's outputs after a Stop during the projection (or the decoder's tuning): the two endpoints as found so far
    (``result`` holds only them), drawn, and their latents (.npz); no walk."""
    from core.export import save_latent
    from core.images import to_pil

    frames = to_pil(result.frames)
    views = [ctx.save_image(request, f, f"stopped_{who}", min_side=128) for who, f in zip("AB", frames, strict=True)]
    pngs = [ctx.save_image(request, f, f"endpoint_{who}") for who, f in zip("AB", frames, strict=True)]
    npz = save_latent(ctx.new_file(request, ".npz", "endpoints"), result.latents, model=result.handle.name,
                      space=result.plan.space, stopped=True, step=where["step"], steps=where["steps"],
                      licence=result.decoder.card.licence)
    what = ("projecting both images" if where["stage"] == "projecting"
            else "tuning the decoder to both images (the projection was complete)")
    text = (f"**Stopped.** The interpolation stopped at step {where['step']} of {where['steps']} while {what}; "
            f"no walk was made. Below: images A and B as projected so far (PSNR {result.psnr:.1f} dB), with their latents "
            f"(.npz). Press **Interpolate** to start again.\n\n_{caption(ctx, result.handle.name)}_")
    return ([(v, f"{who} so far") for who, v in zip("AB", views, strict=True)], None, None,
            [str(npz), *pngs], text)


def stop_interpolation(ctx: AppContext, request: gr.Request = None) -> None:
    """Stop: the session's projection of two images ends at its next step (a run still waiting for its turn at once)."""
    request_stop(ctx, request, "interpolation", ("interpolate",))


def export(ctx: AppContext, result, fps: float, boomerang: bool, request: gr.Request | None, note: str = "") -> tuple:
    """Frames, GIF, MP4, a zip of the frames and the latents of a ``core.interpolate.InterpolationResult``, in this
    session's folder: the tab's outputs."""
    from core.export import save_gif, save_latent, save_mp4
    from core.images import to_pil

    frames = to_pil(result.frames)
    label = caption(ctx, result.handle.name)
    paths = [ctx.save_image(request, f, f"frame{i:03d}") for i, f in enumerate(frames)]
    views = [ctx.save_image(request, f, f"view{i:03d}", min_side=128) for i, f in enumerate(frames)]
    gif = save_gif(frames, ctx.new_file(request, ".gif", "interpolation"), fps=fps, boomerang=boomerang, min_side=256)
    mp4 = save_mp4(frames, ctx.new_file(request, ".mp4", "interpolation"), fps=fps, boomerang=boomerang)
    zip_path = ctx.new_file(request, ".zip", "frames")
    with zipfile.ZipFile(zip_path, "w") as z:
        for i, p in enumerate(paths):
            z.write(p, f"frame_{i:03d}.png")
        z.writestr("LICENCE.txt", f"Generated with Latent Lab by {label}\n")
    npz = save_latent(ctx.new_file(request, ".npz", "latents"), **result.latent_fields())
    text = f"{result.summary()}.{note}\n\n_{label}_"
    return [(p, f"{i}") for i, p in enumerate(views)], str(gif), str(mp4), [str(zip_path), str(gif), str(mp4), str(npz)], text


def offer_faces_a(ctx: AppContext, name: str | None, path: str | None, align: bool, request: gr.Request = None):
    """Image A's face picker (demos.face_picker): shown for a photo with several faces."""
    return face_picker.offer(ctx, name, path, bool(align), "interp_a", "Image A: ", request)


def offer_faces_b(ctx: AppContext, name: str | None, path: str | None, align: bool, request: gr.Request = None):
    """Image B's face picker."""
    return face_picker.offer(ctx, name, path, bool(align), "interp_b", "Image B: ", request)


def choose_face_a(ctx: AppContext, path: str | None, evt: gr.SelectData, request: gr.Request = None) -> str:
    return _chosen(ctx, "interp_a", "Image A", path, int(evt.index), request)


def choose_face_b(ctx: AppContext, path: str | None, evt: gr.SelectData, request: gr.Request = None) -> str:
    return _chosen(ctx, "interp_b", "Image B", path, int(evt.index), request)


def _chosen(ctx: AppContext, slot: str, what: str, path: str | None, index: int, request) -> str:
    """A face clicked in a picker: aligned on it when Interpolate is pressed."""
    if not path:
        return gr.update()
    face_picker.remember(ctx, request, slot, path, index)
    count = len(face_picker.offered(ctx, request, path).faces)
    return f"{what}: face {index + 1} of {count} will be used. Press **Interpolate**."


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "interp", default_tag=FACES)  # two photos of faces: the common case
            source = gr.Radio([SEEDS, IMAGES], value=SEEDS, label="Endpoints", elem_id="interp_source")
            with gr.Row(visible=True, elem_id="interp_seeds") as seeds_row:
                seed_a = gr.Number(1, precision=0, minimum=0, label="Seed A", elem_id="interp_seed_a")
                seed_b = gr.Number(2, precision=0, minimum=0, label="Seed B", elem_id="interp_seed_b")
            with gr.Row(visible=False, elem_id="interp_images") as images_row:
                image_a = ImageUpload(label="Image A", type="filepath", elem_id="interp_image_a")
                image_b = ImageUpload(label="Image B", type="filepath", elem_id="interp_image_b")
            with gr.Row():
                faces_a = face_picker.gallery("interp_faces_a", "Faces in image A: click to choose")
                faces_b = face_picker.gallery("interp_faces_b", "Faces in image B: click to choose")
            frames = gr.Slider(2, 64, value=16, step=1, label="Frames", elem_id="interp_frames")
            with gr.Accordion("Settings", open=False, elem_id="interp_settings"):
                space = gr.Dropdown(["latent", "z", "w", "w+"], value=None, allow_custom_value=True,
                                    label="Space (empty: default). StyleGAN: Z with slerp, W with lerp", elem_id="interp_space")
                method = gr.Radio(["auto", "lerp", "slerp"], value="auto", label="Path",
                                  info="auto: slerp for Gaussian priors (z), lerp for learned spaces (w, autoencoders)",
                                  elem_id="interp_method")
                mixing = gr.CheckboxGroup(GROUPS, value=[], label="Style mixing: take only these layer groups from B (StyleGAN, W+)",
                                          elem_id="interp_mixing")
                steps = gr.Slider(1, ctx.max_steps, value=100, step=1, label="Projection steps (image endpoints)", elem_id="interp_steps")
                decode_steps = decode_steps_slider(ctx, "interp")
                align = gr.Checkbox(True, label="Align faces first (face models)", elem_id="interp_align")
                fps = gr.Slider(1, 30, value=12, step=1, label="Frames per second", elem_id="interp_fps")
                boomerang = gr.Checkbox(True, label="Loop back and forth", elem_id="interp_boomerang")
            run = gr.Button("Interpolate", variant="primary", elem_id="interp_run")
            stop = gr.Button("Stop", elem_id="interp_stop")
        with gr.Column(scale=2):
            status = gr.Markdown("Choose two seeds or upload two images, then press **Interpolate**.", elem_id="interp_status")
            gallery = gr.Gallery(label="Frames", columns=8, height="auto", object_fit="contain", format="png",
                                 elem_id="interp_gallery")
            with gr.Row():
                gif = gr.Image(label="GIF", format="gif", interactive=False, elem_id="interp_gif")
                video = gr.Video(label="MP4", interactive=False, elem_id="interp_video")
            files = gr.File(label="Downloads (frames .zip, GIF, MP4, latents .npz)", file_count="multiple",
                            interactive=False, elem_id="interp_files")

    gr.on([image_a.upload, image_b.upload, model.input], bind(check_fit, ctx), [model, image_a, image_b], None,
          api_name="interp_check_fit", api_visibility="private", show_progress="hidden")
    for photo, faces, offer, choose, api in ((image_a, faces_a, offer_faces_a, choose_face_a, "interp_faces_a"),
                                             (image_b, faces_b, offer_faces_b, choose_face_b, "interp_faces_b")):
        gr.on([photo.change, model.change, align.change], bind(offer, ctx), [model, photo, align], faces, api_name=api,
              api_visibility="private", show_progress="hidden")
        faces.select(bind(choose, ctx), photo, status, api_name=f"{api}_choose", api_visibility="private",
                     show_progress="hidden")
    source.change(show_endpoints, source, [seeds_row, images_row], api_name="interp_endpoints", api_visibility="private",
                  show_progress="hidden")
    settings = {"model": model, "source": source, "seed_a": seed_a, "seed_b": seed_b, "image_a": image_a,
                "image_b": image_b, "frames": frames, "space": space, "method": method, "mixing": mixing, "steps": steps,
                "align": align, "fps": fps, "boomerang": boomerang, "decode_steps": decode_steps}
    run.click(*bind_settings(interpolate, ctx, InterpolationSettings, settings), [gallery, gif, video, files, status],
              api_name="interpolate", show_progress_on=[status], concurrency_id=HEAVY)
    # Stopped through the session's stop flag (the endpoints so far are shown), not cancelled: a cancel left the
    # projection running on the server and the page with a bare "Error".
    stop.click(bind(stop_interpolation, ctx), None, None, api_name="interpolate_stop", api_visibility="private",
               concurrency_limit=None)
    gr.on([model.change, demo.load], bind(decode_steps_view, ctx), model, decode_steps, api_name="interp_decode_steps_view",
          api_visibility="private", show_progress="hidden")
