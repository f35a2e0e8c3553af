"""Projection tab: put an uploaded image into a model's latent space (wiring only; the work is core.projection)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.tags import FACES
from demos import edit_panel, face_picker
from demos.common import HEAVY, AppContext, ImageUpload, caption, model_panel, read_upload
from demos.face_note import download_photo_model, face_model_note
from demos.projection_curve import projection_curve
from demos.wiring import bind, bind_settings, request_stop, stop_flag

PANEL_HEIGHT = 300  # px: the target and reconstruction keep this size while nothing is in them yet


def prepare_target(ctx: AppContext, model, name: str, path: str | None, align: bool, request: gr.Request | None,
                   face: int = 0, max_side: float | None = None, shape: tuple[int, int] | None = None,
                   slot: str | None = None):
    """Upload -> what the model sees (``core.image_input.ModelInput``: face-aligned, with the face mask and an identity
    reference, for face models when asked; for a model that works at any size (a VAE) the photo at its own aspect,
    longer side at most ``max_side``, or at ``shape``; neither: the model's own size); warnings go to the user. Run the
    model at ``inp.shape`` (``model.at_size``). ``slot``: the face picker of this upload (demos.face_picker): its face
    (0-based ``face`` otherwise) and its detection are used, and the several-faces warning it said is not said again."""
    from core.checks import whole_number
    from core.faces import several_faces_note
    from core.image_input import MAX_SIDE, input_for

    img = read_upload(ctx, path, request, channels=3, min_side=min(16, model.image_size))
    found = face_picker.offered(ctx, request, path) if slot else None
    face = face_picker.chosen(ctx, request, slot, path) if slot else face
    try:
        side = None if max_side is None else whole_number(max_side, "largest side (pixels)", 1, MAX_SIDE)
        inp = input_for(model, img, align and is_face_model(ctx, name), face, side, shape, found=found)
    except ValueError as e:  # NoFaceError, a face number out of range, a largest side below the model's factor
        raise gr.Error(str(e)) from e
    said = several_faces_note(found.faces, face) if found is not None and len(found.faces) > 1 else None
    for w in inp.warnings:
        if w != said:
            gr.Warning(w)
    return inp


def is_face_model(ctx: AppContext, name: str | None) -> bool:
    return bool(name) and FACES in ctx.registry.entry(name).tags


def spaces_for(ctx: AppContext, name: str | None):
    """The chosen model's spaces (loading it: it is about to be used), the one it edits in first."""
    if not name or ctx.registry.status(name) not in ("ready", "loaded"):
        return gr.update()
    model = ctx.model(name)
    return gr.update(choices=list(model.spaces), value=model.edit_space())


def loss_choices(ctx: AppContext, name: str | None = None):
    """Losses runnable now (LPIPS once its weights are downloaded), and the download button, shown only when the
    chosen model projects with a loss whose weights are missing (StyleGAN: LPIPS)."""
    from core.losses import available, downloadable

    losses = {"auto": "the model's choice (StyleGAN: LPIPS when vgg16.pt is downloaded, else MS-SSIM + L1; others: MSE)",
              **available()}
    wanted = set()
    if name and ctx.registry.status(name) in ("ready", "loaded"):
        wanted = set(ctx.model(name).wanted_losses)
    missing = [n for n in downloadable() if n in wanted]
    return (gr.update(choices=list(losses), info=" · ".join(f"{k}: {v}" for k, v in losses.items())),
            gr.update(visible=bool(missing), value=f"Download weights for: {', '.join(missing)}"))


def fetch_losses(ctx: AppContext, name: str | None = None, progress=gr.Progress()):
    """Download what the missing losses need (LPIPS: NVIDIA's vgg16.pt), then offer them."""
    from core.losses import download, downloadable

    for loss in downloadable():
        progress(0, desc=f"Downloading the weights of {loss}")

        def report(done: int, total: int | None, loss=loss):
            if total:
                progress(done / total, desc=f"Downloading the weights of {loss}: {done / 2**20:.0f} / {total / 2**20:.0f} MB")

        try:
            download(loss, report)
        except Exception as e:
            raise gr.Error(str(e)) from e
    return loss_choices(ctx, name)


def projection_config(model, space_name: str | None, init_name, loss_name, n_steps, seed_value, with_noise):
    """The widgets' values as a ProjectionConfig; an unknown space or a fractional step count is a gr.Error."""
    from core.projection import ProjectionConfig

    if space_name and space_name not in model.spaces:
        raise gr.Error(f"{model.card.title} has no latent space '{space_name}' (it offers: {', '.join(model.spaces)}).")
    try:
        cfg = ProjectionConfig.for_model(model, space_name or model.edit_space(), steps=n_steps, init=init_name or "auto",
                                         loss=loss_name, seed=int(seed_value or 0), optimize_noise=True if with_noise else None)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    cfg.preview_every = max(1, cfg.steps // 40)
    return cfg


def status_line(ev) -> str:
    if ev.psnr != ev.psnr:  # NaN: an iterative inversion (DDIM) knows its PSNR only once it has reconstructed the image
        return f"Step **{ev.step}/{ev.steps}** · {ev.init}: PSNR once reconstructed · space: {ev.space}"
    return (f"Step **{ev.step}/{ev.steps}** · loss ({ev.loss_name}) {ev.loss:.5f} · PSNR **{ev.psnr:.2f} dB** · "
            f"start: {ev.init} · space: {ev.space}" + (" · noise maps optimised" if ev.noise else ""))


@dataclass
class ProjectionSettings:
    """The tab's inputs by name (``demos.wiring.bind_settings``); defaults as the tab opens."""

    model: str | None
    image: str | None = None
    space: str | None = None
    init: str = "auto"
    loss: str = "auto"
    steps: float = 200
    align: bool = True
    seed: float = 0
    noise_maps: bool = False
    max_side: float | None = None  # None: the default for this machine
    tune: bool = True


def project_image(ctx: AppContext, s: ProjectionSettings, request: gr.Request = None, progress=gr.Progress()):
    """Stream (target, preview, channels, status, curve, files); Stop ends it with the best latent so far, offered as
    files. A model that works at any size (a VAE) runs at the photo's own aspect, longer side at most ``max_side``.
    With ``tune``, a model with ``pivotal_tuning_steps`` (faces) then tunes a private copy of its decoder to the photo
    (core.pivotal): the projection alone draws a lookalike, the tuned decoder draws this person."""
    from core.image_input import default_max_side
    from core.images import from_pil, to_pil
    from core.photo_to_latent import project_and_tune

    name, tune = s.model, s.tune
    m = ctx.model(name)
    cfg = projection_config(m, s.space, s.init, s.loss, s.steps, s.seed, s.noise_maps)
    inp = prepare_target(ctx, m, name, s.image, bool(s.align), request,
                         max_side=default_max_side() if s.max_side is None else s.max_side, slot="proj")
    m = m.at_size(*inp.shape)  # itself, or a VAE's view at the photo's size
    img = inp.image
    stop = stop_flag(ctx, request, "projection")
    target_path = ctx.save_image(request, img, "target", min_side=256)
    size = f" at {img.size[0]}×{img.size[1]} px" if m.resizable else ""
    note = f"\n\n{inp.note}" if inp.note else ""
    channels = gr.update(value=None, visible=bool(m.spaces[cfg.space].spatial))
    yield target_path, None, channels, f"Projecting into **{cfg.space}** of {m.card.title}{size}…{note}", None, None
    history, projected = [], None
    try:
        for ev in project_and_tune(m, from_pil(img, m.channels), cfg, None if tune else 0, stop.is_set, inp.weights, ctx.executor):
            if ev.stage == "tuning":
                progress(ev.step / ev.steps, desc=f"tuning the decoder: step {ev.step}/{ev.steps}")
                if ev.done:
                    view = ctx.save_image(request, to_pil(ev.preview)[0], "preview", min_side=256)
                    yield target_path, view, *finished(ctx, request, ctx.registry.handle(name, m), inp, projected, history, ev)
                elif ev.step % max(1, ev.steps // 10) == 0:
                    yield (target_path, gr.update(), gr.update(), f"{status_line(projected)}\n\nTuning the decoder to this "
                           f"photo: step {ev.step}/{ev.steps}, PSNR {ev.psnr:.2f} dB", gr.update(), None)
                continue
            if not ev.done:
                history.append((ev.step, ev.loss, ev.psnr))
                progress(ev.step / ev.steps, desc=f"step {ev.step}/{ev.steps}")
            if ev.preview is None:
                continue
            recon = to_pil(ev.preview)[0]
            view = ctx.save_image(request, recon, "preview", min_side=256)
            if not ev.done:
                yield target_path, view, gr.update(), status_line(ev), projection_curve(history, ev.loss_name), None
            elif tune and m.pivotal_tuning_steps > 0 and not ev.stopped:  # the tuning's events follow
                projected = ev
                yield (target_path, view, gr.update(), f"{status_line(ev)}\n\nProjected; now tuning the decoder to this photo…",
                       projection_curve(history, ev.loss_name), None)
            else:
                yield target_path, view, *finished(ctx, request, ctx.registry.handle(name, m), inp, ev, history)
    except ValueError as e:
        raise gr.Error(str(e)) from e


def finished(ctx: AppContext, request, handle, inp, projected, history: list, tuned=None) -> tuple:
    """(channels, status, curve, files) of a finished or stopped projection (``core.projection_outcome``): the latent
    .npz and the reconstruction .png; for an aligned face also the identity verdict and the composite (labelled as
    such, never scored); with ``tuned`` (the tuning's final event) also what the projection alone draws."""
    from core.export import save_latent
    from core.images import to_pil
    from core.projection_outcome import finish_projection

    outcome = finish_projection(handle, inp, projected, tuned)
    edit_panel.remember_projection(ctx, request, handle, inp, projected, tuned)  # the Edit panel works on it
    m, ev = handle.model, projected
    recon = to_pil(outcome.shown)[0]
    extra, identity = [], ""
    if outcome.projection_alone is not None:
        extra.append(ctx.save_image(request, to_pil(outcome.projection_alone)[0], "projection_alone"))
    if outcome.composite is not None:
        identity = f" · {outcome.identity_sentence()} · PSNR measured inside the face"
        extra.append(ctx.save_image(request, to_pil(outcome.composite)[0], "composite_display_only"))
    npz = save_latent(ctx.new_file(request, ".npz", "latent"), **outcome.latent_fields())
    png = ctx.save_image(request, recon, "reconstruction")
    panel = None
    if m.spaces[ev.space].spatial:
        panel, grid = latent_channels(ctx, request, m, ev)
        extra.append(grid)
    head = (f"**Stopped at step {ev.step}** of {ev.steps}; the best latent so far is below." if ev.stopped
            else "**Stopped** while tuning the decoder; the result so far is below." if outcome.tuning_stopped
            else "**Done.**")
    if tuned is not None:
        head += f" {outcome.tuning_sentence()}"
    size = f" · image {recon.size[0]}×{recon.size[1]} px" if m.resizable else ""
    latent = f" · latent {' × '.join(map(str, m.spaces[ev.space].spatial))}" if m.spaces[ev.space].spatial else ""
    note = f"\n\n{inp.note}" if inp.note else ""
    text = f"{head} {status_line(ev)}{identity}{size}{latent}{note}\n\n_{caption(ctx, handle.name)}_"
    return panel, text, projection_curve(history, ev.loss_name), [str(npz), png, *extra]


def latent_channels(ctx: AppContext, request, m, ev) -> tuple[list[tuple[str, str]], str]:
    """A spatial latent's channels (a VAE's 4 x H/8 x W/8; a diffusion model's noise): one image each for the panel,
    labelled with its scale, and all side by side as a PNG to download."""
    from PIL import Image

    from core.images import channel_grid, channel_images

    first = ev.latent[0]
    first = first[0] if m.spaces[ev.space].per_layer else first  # x_T+: the first stage's noise
    spatial = m.spaces[ev.space].spatial
    panel = [(ctx.save_image(request, Image.fromarray(a), f"channel{k + 1}", min_side=128),
              f"channel {k + 1}: ±{s:.3g}")
             for k, (a, s) in enumerate(channel_images(first.numpy(), spatial))]
    grid = ctx.save_image(request, Image.fromarray(channel_grid(first.numpy(), spatial)), "latent_channels", min_side=256)
    return panel, grid


def offer_faces(ctx: AppContext, name: str | None, path: str | None, align: bool, request: gr.Request = None):
    """(picker, target) for a new upload: a photo with several faces shows them, and the target the one used."""
    faces = face_picker.offer(ctx, name, path, bool(align), "proj", "", request)
    if not faces.get("visible") or ctx.registry.status(name) not in ("ready", "loaded"):
        return faces, gr.update()
    return faces, aligned_view(ctx, name, path, request)


def choose_face(ctx: AppContext, name: str | None, path: str | None, evt: gr.SelectData, request: gr.Request = None):
    """A face clicked in the picker: used for this photo from now on; the target shows it aligned."""
    if not path:
        return gr.update()
    face_picker.remember(ctx, request, "proj", path, int(evt.index))
    return aligned_view(ctx, name, path, request)


def aligned_view(ctx: AppContext, name: str | None, path: str, request) -> str:
    """The chosen face as the model will see it."""
    inp = prepare_target(ctx, ctx.model(name), name, path, True, request, slot="proj")
    return ctx.save_image(request, inp.image, "target", min_side=256)


def stop_projection(ctx: AppContext, request: gr.Request = None) -> None:
    request_stop(ctx, request, "projection", ("project",))


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    from core.image_input import MAX_SIDE, default_max_side

    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "proj", default_tag=FACES)
            with gr.Row(equal_height=False):
                builtin_note = gr.Markdown("", visible=False, elem_id="proj_builtin_note")
                get_photo_model = gr.Button("Download", visible=False, size="sm", scale=0, min_width=140, elem_id="proj_photo_download")
            image = ImageUpload(label="Image to project", type="filepath", sources=["upload", "clipboard", "webcam"], elem_id="proj_image")
            faces = face_picker.gallery("proj_faces", "Faces in the photo: click to choose")
            with gr.Row():
                run = gr.Button("Project", variant="primary", elem_id="proj_run")
                stop = gr.Button("Stop", elem_id="proj_stop")
            with gr.Accordion("Settings", open=False, elem_id="proj_settings"):
                space = gr.Dropdown(["latent", "w", "w+"], value=None, label="Latent space (empty: the model's default; W+ for StyleGAN)",
                                    allow_custom_value=True, elem_id="proj_space")
                init = gr.Radio(["auto", "encoder", "mean", "bank"], value="auto", label="Start from",
                                info="auto = the encoder when the model has one, else the mean latent", elem_id="proj_init")
                loss = gr.Dropdown(["auto", "mse", "ms-ssim+l1"], value="auto", label="Loss", elem_id="proj_loss")
                fetch_loss = gr.Button("Download loss weights", visible=False, size="sm", elem_id="proj_loss_download")
                steps = gr.Slider(1, ctx.max_steps, value=200, step=1, label="Steps", elem_id="proj_steps")
                align = gr.Checkbox(True, label="Detect and align the face first (face models)", elem_id="proj_align")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="proj_seed")
                max_side = gr.Slider(64, MAX_SIDE, value=default_max_side(), step=8, elem_id="proj_max_side",
                                     label="Largest side, for models that work at any size (VAEs)",
                                     info=f"A VAE encodes the photo at its own aspect, each side rounded to a multiple of its "
                                          f"factor (8), the longer side at most this; time grows with the pixels (default "
                                          f"{default_max_side()} px on this {'GPU' if default_max_side() > 512 else 'CPU'}).")
                tune = gr.Checkbox(True, label="Then tune the decoder to this photo (pivotal tuning; face models)", elem_id="proj_tune",
                                   info="The projection alone draws a lookalike; a private copy of the decoder, tuned for a "
                                        "few seconds, draws this person (both are shown and offered). Used by models that "
                                        "offer it (the built-in faces model: 100 steps).")
                noise_maps = gr.Checkbox(False, label="Also optimise noise maps (StyleGAN2)", elem_id="proj_noise",
                                         info="NVIDIA's projector does: finer detail, but the latent alone no longer reproduces "
                                              "the result (the maps are saved in the .npz). Off: the latent is everything.")
        with gr.Column(scale=2):
            with gr.Row():
                target = gr.Image(label="Target (what the model sees)", format="png", interactive=False, height=PANEL_HEIGHT,
                                  elem_id="proj_target")
                preview = gr.Image(label="Reconstruction", format="png", interactive=False, height=PANEL_HEIGHT, elem_id="proj_preview")
            channels = gr.Gallery(label="Latent channels: black = −s, grey = 0, white = +s (each channel's ±s under it)",
                                  visible=False, columns=4, rows=1, height=240, object_fit="contain", format="png",
                                  elem_id="proj_channels")
            status = gr.Markdown("Upload an image and press **Project**.", elem_id="proj_status")
            curve = gr.Plot(label="Quality", elem_id="proj_curve")
            files = gr.File(label="Downloads (latent .npz, reconstruction .png; a spatial latent's channels as .png)", file_count="multiple", interactive=False, elem_id="proj_files")

    settings = {"model": model, "image": image, "space": space, "init": init, "loss": loss, "steps": steps, "align": align,
                "seed": seed, "noise_maps": noise_maps, "max_side": max_side, "tune": tune}
    projected = run.click(*bind_settings(project_image, ctx, ProjectionSettings, settings),
                          [target, preview, channels, status, curve, files], api_name="project", show_progress_on=[status],
                          concurrency_id=HEAVY)
    edit_panel.build(ctx, model, projected)  # under the outputs: edit the projection, teach a direction
    gr.on([image.change, model.change, align.change], bind(offer_faces, ctx), [model, image, align], [faces, target],
          api_name="proj_faces", api_visibility="private", show_progress="hidden")
    faces.select(bind(choose_face, ctx), [model, image], target, api_name="proj_choose_face", api_visibility="private",
                 show_progress="hidden")
    stop.click(bind(stop_projection, ctx), None, None, api_name="project_stop", api_visibility="private", concurrency_limit=None)
    model.change(bind(spaces_for, ctx), model, space, api_name="proj_spaces", show_progress="hidden")
    gr.on([demo.load, model.change], bind(loss_choices, ctx), model, [loss, fetch_loss], api_name="proj_losses", show_progress="hidden")
    gr.on([demo.load, model.change], bind(face_model_note, ctx), model, [builtin_note, get_photo_model], api_name="proj_model_note",
          show_progress="hidden")
    get_photo_model.click(bind(download_photo_model, ctx), None, [builtin_note, get_photo_model, model],
                          api_name="proj_photo_download", concurrency_id="download")
    fetch_loss.click(bind(fetch_losses, ctx), model, [loss, fetch_loss], api_name="proj_loss_download", concurrency_id="download")
