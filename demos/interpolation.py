"""Interpolation tab: walk between two images or two samples; export frames, GIF and MP4."""

from __future__ import annotations

import zipfile

import gradio as gr

from demos.common import AppContext, ImageUpload, caption, model_panel
from demos.projection import prepare_target

GROUPS = ["coarse", "middle", "fine"]


def build(ctx: AppContext) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "interp")
            source = gr.Radio(["two seeds", "two images"], value="two seeds", label="Endpoints", elem_id="interp_source")
            with gr.Row():
                seed_a = gr.Number(1, precision=0, label="Seed A", elem_id="interp_seed_a")
                seed_b = gr.Number(2, precision=0, label="Seed B", elem_id="interp_seed_b")
            with gr.Row():
                image_a = ImageUpload(label="Image A", type="filepath", elem_id="interp_image_a")
                image_b = ImageUpload(label="Image B", type="filepath", elem_id="interp_image_b")
            frames = gr.Slider(2, 64, value=16, step=1, label="Frames", elem_id="interp_frames")
            with gr.Accordion("Settings", open=False):
                space = gr.Dropdown(["latent", "z", "w", "w+"], value=None, allow_custom_value=True,
                                    label="Space (empty: default). StyleGAN: Z with slerp, W with lerp", elem_id="interp_space")
                method = gr.Radio(["auto", "lerp", "slerp"], value="auto", label="Path",
                                  info="auto: slerp for Gaussian priors (z), lerp for learned spaces (w, autoencoders)",
                                  elem_id="interp_method")
                mixing = gr.CheckboxGroup(GROUPS, value=[], label="Style mixing: take only these layer groups from B (StyleGAN, W+)",
                                          elem_id="interp_mixing")
                steps = gr.Slider(1, ctx.max_steps, value=100, step=1, label="Projection steps (image endpoints)", elem_id="interp_steps")
                align = gr.Checkbox(True, label="Align faces first (face models)", elem_id="interp_align")
                fps = gr.Slider(1, 30, value=12, step=1, label="Frames per second", elem_id="interp_fps")
                boomerang = gr.Checkbox(True, label="Loop back and forth", elem_id="interp_boomerang")
            run = gr.Button("Interpolate", variant="primary", elem_id="interp_run")
            stop = gr.Button("Stop", elem_id="interp_stop")
        with gr.Column(scale=2):
            status = gr.Markdown("Choose two seeds or upload two images, then press **Interpolate**.", elem_id="interp_status")
            gallery = gr.Gallery(label="Frames", columns=8, height="auto", format="png", elem_id="interp_gallery")
            with gr.Row():
                gif = gr.Image(label="GIF", format="gif", interactive=False, elem_id="interp_gif")
                video = gr.Video(label="MP4", interactive=False, elem_id="interp_video")
            files = gr.File(label="Downloads (frames .zip, GIF, MP4, latents .npz)", file_count="multiple",
                            interactive=False, elem_id="interp_files")

    def interpolate(name, src, sa, sb, pa, pb, n_frames, space_name, method_name, groups, n_steps, do_align, fps_value,
                    loop, request: gr.Request, progress=gr.Progress()):
        import torch

        from core.export import save_gif, save_latent, save_mp4
        from core.images import from_pil, to_pil
        from core.interpolate import path
        from core.projection import ProjectionConfig, project

        m = ctx.model(name)
        space_name = space_name if space_name in m.spaces else m.default_space
        if src == "two images":
            if m.spaces[space_name].prior == "gaussian" and any(s.prior != "gaussian" for s in m.spaces.values()):
                gr.Warning(f"Images are projected into W, not {space_name}: interpolating in W instead.")
                space_name = "w+" if groups and "w+" in m.spaces else ("w" if "w" in m.spaces else m.default_space)
            imgs = [prepare_target(ctx, m, name, p, bool(do_align), request) for p in (pa, pb)]
            target = torch.cat([from_pil(i, m.channels) for i in imgs])
            cfg = ProjectionConfig.for_model(m, space_name, steps=int(n_steps), preview_every=0)
            yield None, None, None, None, "Projecting both images…"
            for ev in project(m, target, cfg):
                progress(ev.step / ev.steps, desc=f"projecting: step {ev.step}/{ev.steps}, PSNR {ev.psnr:.1f} dB")
                if ev.done:
                    a, b, proj_note = ev.latent[:1], ev.latent[1:], f" Endpoints projected ({ev.step} steps, PSNR {ev.psnr:.1f} dB)."
        else:
            a, b = m.sample(1, int(sa or 0), space_name), m.sample(1, int(sb or 0), space_name)
            proj_note = ""
        if groups:
            if "w+" not in m.spaces:
                raise gr.Error(f"Style mixing needs a per-layer space (W+); {m.card.title} has none.")
            if space_name != "w+":
                a, b = m.convert(a, space_name, "w+"), m.convert(b, space_name, "w+")
                space_name = "w+"
            layers = sorted(i for g in groups for i in m.layer_groups("w+")[g])
            b = m.mix(a, b, layers, "w+")  # the walk only moves the chosen layers
        how = m.spaces[space_name].interpolation if method_name == "auto" else method_name
        latents = path(a.to(m.device), b.to(m.device), int(n_frames), how)
        progress(0.9, desc="decoding frames")
        frames_pil = to_pil(m.generate(latents, space_name))
        label = caption(ctx, name)
        paths = [ctx.save_image(request, f, f"frame{i:03d}") for i, f in enumerate(frames_pil)]
        views = [ctx.save_image(request, f, f"view{i:03d}", min_side=128) for i, f in enumerate(frames_pil)]
        gif_path = save_gif(frames_pil, ctx.new_file(request, ".gif", "interpolation"), fps=fps_value, boomerang=loop,
                           min_side=256)
        mp4_path = save_mp4(frames_pil, ctx.new_file(request, ".mp4", "interpolation"), fps=fps_value, boomerang=loop)
        zip_path = ctx.new_file(request, ".zip", "frames")
        with zipfile.ZipFile(zip_path, "w") as z:
            for i, p in enumerate(paths):
                z.write(p, f"frame_{i:03d}.png")
            z.writestr("LICENCE.txt", f"Generated with Latent Lab by {label}\n")
        npz = save_latent(ctx.new_file(request, ".npz", "latents"), latents, model=name, space=space_name, method=how,
                          mixing=list(groups or []), licence=m.card.licence)
        text = f"{len(frames_pil)} frames in **{space_name}** with **{how}**{' (style mixing: ' + ', '.join(groups) + ')' if groups else ''}.{proj_note}\n\n_{label}_"
        yield [(p, f"{i}") for i, p in enumerate(views)], str(gif_path), str(mp4_path), [str(zip_path), str(gif_path), str(mp4_path), str(npz)], text

    event = run.click(interpolate, [model, source, seed_a, seed_b, image_a, image_b, frames, space, method, mixing, steps, align, fps,
                                    boomerang], [gallery, gif, video, files, status], api_name="interpolate",
                      show_progress_on=[status], concurrency_id="heavy")
    stop.click(None, None, None, cancels=[event], api_name="interpolate_stop", api_visibility="private")
