"""Projection tab: put an uploaded image into a model's latent space."""

from __future__ import annotations

import gradio as gr

from demos.common import AppContext, ImageUpload, caption, model_panel, read_upload
from demos.projection_curve import projection_curve


def prepare_target(ctx: AppContext, model, name: str, path: str | None, align: bool, request: gr.Request | None):
    """Upload -> the model-ready PIL image (face-aligned for face models when asked)."""
    from core.image_input import model_input

    img = read_upload(ctx, path, request, channels=3, min_side=min(16, model.image_size))
    try:
        img, warnings = model_input(img, model.image_size, model.channels, align and "faces" in ctx.registry.entry(name).tags)
    except ValueError as e:  # NoFaceError
        raise gr.Error(str(e)) from e
    for w in warnings:
        gr.Warning(w)
    return img


def spaces_for(ctx: AppContext, name: str | None):
    """The chosen model's spaces (loading it: it is about to be used); W+ first for StyleGAN."""
    if not name or ctx.registry.status(name) not in ("ready", "loaded"):
        return gr.update()
    model = ctx.model(name)
    default = "w+" if "w+" in model.spaces else model.default_space
    return gr.update(choices=list(model.spaces), value=default)


def loss_choices():
    """Losses runnable now (LPIPS only once its weights are downloaded), and whether to offer the download."""
    from core.losses import available, downloadable

    losses = {"auto": "the model's choice (StyleGAN: LPIPS when vgg16.pt is downloaded, else MS-SSIM + L1; others: MSE)",
              **available()}
    missing = downloadable()
    return (gr.update(choices=list(losses), info=" · ".join(f"{k}: {v}" for k, v in losses.items())),
            gr.update(visible=bool(missing), value=f"Download weights for: {', '.join(missing)}"))


def fetch_losses(progress=gr.Progress()):
    """Download what the missing losses need (LPIPS: NVIDIA's vgg16.pt), then offer them."""
    from core.losses import download, downloadable

    for name in downloadable():
        progress(0, desc=f"Downloading the weights of {name}")

        def report(done: int, total: int | None, name=name):
            if total:
                progress(done / total, desc=f"Downloading the weights of {name}: {done / 2**20:.0f} / {total / 2**20:.0f} MB")

        try:
            download(name, report)
        except Exception as e:
            raise gr.Error(str(e)) from e
    return loss_choices()


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "proj")
            image = ImageUpload(label="Image to project", type="filepath", sources=["upload", "clipboard", "webcam"], elem_id="proj_image")
            with gr.Row():
                run = gr.Button("Project", variant="primary", elem_id="proj_run")
                stop = gr.Button("Stop", elem_id="proj_stop")
            with gr.Accordion("Settings", open=False):
                space = gr.Dropdown(["latent", "w", "w+"], value=None, label="Latent space (empty: the model's default; W+ for StyleGAN)",
                                    allow_custom_value=True, elem_id="proj_space")
                init = gr.Radio(["auto", "encoder", "mean", "bank"], value="auto", label="Start from",
                                info="auto = the encoder when the model has one, else the mean latent", elem_id="proj_init")
                loss = gr.Dropdown(["auto", "mse", "ms-ssim+l1"], value="auto", label="Loss", elem_id="proj_loss")
                fetch_loss = gr.Button("Download loss weights", visible=False, size="sm", elem_id="proj_loss_download")
                steps = gr.Slider(1, ctx.max_steps, value=200, step=1, label="Steps", elem_id="proj_steps")
                align = gr.Checkbox(True, label="Detect and align the face first (face models)", elem_id="proj_align")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="proj_seed")
                noise_maps = gr.Checkbox(False, label="Also optimise noise maps (StyleGAN2)", elem_id="proj_noise",
                                         info="NVIDIA's projector does: finer detail, but the latent alone no longer reproduces "
                                              "the result (the maps are saved in the .npz). Off: the latent is everything.")
        with gr.Column(scale=2):
            with gr.Row():
                target = gr.Image(label="Target (what the model sees)", format="png", interactive=False, elem_id="proj_target")
                preview = gr.Image(label="Reconstruction", format="png", interactive=False, elem_id="proj_preview")
            status = gr.Markdown("Upload an image and press **Project**.", elem_id="proj_status")
            curve = gr.Plot(label="Quality", elem_id="proj_curve")
            files = gr.File(label="Downloads (latent .npz, reconstruction .png)", file_count="multiple", interactive=False, elem_id="proj_files")

    def project_image(name, path, space_name, init_name, loss_name, n_steps, do_align, seed_value, with_noise,
                      request: gr.Request, progress=gr.Progress()):
        from core.export import save_latent
        from core.images import from_pil, to_pil
        from core.projection import ProjectionConfig, project

        m = ctx.model(name)
        img = prepare_target(ctx, m, name, path, bool(do_align), request)
        space_name = space_name if space_name in m.spaces else ("w+" if "w+" in m.spaces else m.default_space)
        cfg = ProjectionConfig.for_model(m, space_name, steps=int(n_steps), init=init_name or "auto",
                                         loss=loss_name, seed=int(seed_value or 0),
                                         optimize_noise=True if with_noise else None)
        cfg.preview_every = max(1, cfg.steps // 40)
        target_path = ctx.save_image(request, img, "target", min_side=256)
        yield target_path, None, f"Projecting into **{space_name}** of {m.card.title}…", None, None
        history = []
        try:
            for ev in project(m, from_pil(img, m.channels), cfg):
                if not ev.done:
                    history.append((ev.step, ev.loss, ev.psnr))
                    progress(ev.step / ev.steps, desc=f"step {ev.step}/{ev.steps}")
                if ev.preview is None:
                    continue
                recon = to_pil(ev.preview)[0]
                text = (f"Step **{ev.step}/{ev.steps}** · loss ({ev.loss_name}) {ev.loss:.5f} · PSNR **{ev.psnr:.2f} dB** · "
                        f"start: {ev.init} · space: {ev.space}" + (" · noise maps optimised" if ev.noise else ""))
                if not ev.done:
                    yield target_path, ctx.save_image(request, recon, "preview", min_side=256), text, projection_curve(history, ev.loss_name), None
                    continue
                npz = save_latent(ctx.new_file(request, ".npz", "latent"), ev.latent, model=name, space=ev.space, noise=ev.noise,
                                  psnr=round(ev.psnr, 3), loss=ev.loss, loss_name=ev.loss_name, steps=ev.step,
                                  licence=m.card.licence)
                png = ctx.save_image(request, recon, "reconstruction")
                yield (target_path, ctx.save_image(request, recon, "preview", min_side=256), f"**Done.** {text}\n\n_{caption(ctx, name)}_", projection_curve(history, ev.loss_name),
                       [str(npz), png])
        except ValueError as e:
            raise gr.Error(str(e)) from e

    event = run.click(project_image, [model, image, space, init, loss, steps, align, seed, noise_maps],
                      [target, preview, status, curve, files], api_name="project", show_progress_on=[status],
                      concurrency_id="heavy")
    stop.click(None, None, None, cancels=[event], api_name="project_stop", api_visibility="private")
    model.change(lambda n: spaces_for(ctx, n), model, space, api_name="proj_spaces", show_progress="hidden")
    demo.load(loss_choices, None, [loss, fetch_loss], api_name="proj_losses", show_progress="hidden")
    fetch_loss.click(fetch_losses, None, [loss, fetch_loss], api_name="proj_loss_download", concurrency_id="download")
