"""Assemble the tabs into one Gradio app and launch it."""

from __future__ import annotations

import sys
import threading

import gradio as gr

from demos import family, interpolation, latent_map, models_tab, projection
from demos.common import AppContext, user_errors
from plugins.registry import Registry

TITLE = "Latent Lab"
INTRO = (
    "# Latent Lab\nExplore the latent spaces of generative models: **project** an image into a model, **interpolate** "
    "between two images or samples, blend two parents into a **family**, and **map** a whole dataset. Every output is captioned with the model that made it "
    "and its licence."
)


def build_app(registry: Registry, max_steps: int = 1000, concurrency: int = 1) -> gr.Blocks:
    ctx = AppContext(registry, max_steps=max_steps)
    with gr.Blocks(title=TITLE, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Projection", id="projection"):
                projection.build(ctx, demo)
            with gr.Tab("Interpolation", id="interpolation"):
                interpolation.build(ctx)
            with gr.Tab("Family", id="family"):
                family.build(ctx, demo)
            with gr.Tab("Latent map", id="latent_map"):
                latent_map.build(ctx, demo)
            with gr.Tab("Models", id="models"):
                models_tab.build(ctx, demo)
        demo.unload(ctx.end_session)
    # Every handler, in every tab: a user's mistake is one log line, a real fault keeps its traceback.
    for block_fn in demo.fns.values():
        if block_fn.fn is not None:
            block_fn.fn = user_errors(block_fn.fn)
    demo.queue(default_concurrency_limit=concurrency, max_size=32)
    demo.latent_lab = ctx  # tests and the CLI reach the context through the app
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: list[str] | None = None, max_file_size: str | None = "20mb", block: bool = True) -> gr.Blocks:
    pairs = []
    for a in auth or []:
        user, sep, password = a.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth expects USER:PASSWORD, got '{a}'.")
        pairs.append((user, password))
    demo.launch(
        server_name=host, server_port=port, share=share, auth=pairs or None, max_file_size=max_file_size,
        prevent_thread_lock=True, quiet=not block, head=latent_map.HEAD, css=interpolation.CSS, footer_links=["api", "settings"],
    )
    if share and not getattr(demo, "share_url", None):
        print(f"warning: the public share link could not be created (no internet access to Gradio's share servers?). "
              f"The app is still serving locally at {demo.local_url}", file=sys.stderr)
    # Import torch and the core modules in the background once the page is served, so the first
    # click does not wait for them (start-up itself stays free of them).
    threading.Timer(1.0, _warm_up).start()
    if block:
        print(f"Latent Lab is running at {demo.local_url}" + (f" and {demo.share_url}" if getattr(demo, "share_url", None) else ""))
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo


def _warm_up() -> None:
    import core.interpolate  # noqa: F401
    import core.losses  # noqa: F401
    import core.projection  # noqa: F401
