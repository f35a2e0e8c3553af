"""Assemble the tabs into one Gradio app and launch it."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from starlette.middleware import Middleware

from core.private_dir import IDLE_S
from demos import family, interpolation, latent_map, models_tab, projection, serving
from demos.common import HEAVY, AppContext, plain_refusals, user_errors
from demos.file_access import FileAccess
from demos.login_guard import LoginGuard
from demos.sessions import session_key
from demos.wiring import describe_api
from plugins.registry import Registry

if TYPE_CHECKING:
    from core.executor import Executor

TITLE = "Latent Lab"
INTRO = (
    "# Latent Lab\nExplore the latent spaces of generative models: **project** an image into a model, **interpolate** "
    "between two images or samples, blend two parents into a **family**, and **map** a whole dataset. Every output is captioned with the model that made it "
    "and its licence."
)


def build_app(registry: Registry, max_steps: int = 1000, concurrency: int | None = None, models_dir: str | Path | None = None,
              allow_shared_uploads: bool = False, idle_s: float = IDLE_S, keep_files: bool = False,
              executor: Executor | None = None) -> gr.Blocks:
    """The app; ``models_dir`` / ``allow_shared_uploads`` / ``idle_s`` / ``keep_files`` are the privacy options of
    ``app.py`` (see the README's Privacy section). ``concurrency``: heavy jobs at once (None: derived from the
    cores / GPUs, ``demos/serving.py``). ``executor`` runs the heavy model work (``core.executor``: in this process
    by default, ``demos.ray_executor.RayExecutor`` with ``--ray``); the app closes it when it stops."""
    if idle_s <= 0:
        raise ValueError(f"--idle-timeout must be a positive number of seconds, got {idle_s}.")
    if models_dir is not None and not Path(models_dir).is_dir():
        raise ValueError(f"--models-dir {models_dir} is not a folder.")
    ctx = AppContext(registry, max_steps=max_steps, models_dir=Path(models_dir) if models_dir else None,
                     allow_shared_uploads=allow_shared_uploads, idle_s=idle_s, keep_files=keep_files, executor=executor)
    # Gradio also sweeps its cache (files older than an hour, and at shutdown) unless files are to be kept.
    with gr.Blocks(title=TITLE, delete_cache=None if keep_files else (600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Projection", id="projection"):
                projection.build(ctx, demo)
            with gr.Tab("Interpolation", id="interpolation"):
                interpolation.build(ctx, demo)
            with gr.Tab("Family", id="family"):
                family.build(ctx, demo)
            with gr.Tab("Latent map", id="latent_map"):
                latent_map.build(ctx, demo)
            with gr.Tab("Models", id="models"):
                models_tab.build(ctx, demo)
        demo.unload(ctx.end_session)
    describe_api(demo)  # one sentence per endpoint on the API page, no duplicates
    # Fair serving (demos/serving.py): light events in their own group; heavy jobs take fair turns at `heavy` slots.
    heavy = concurrency if concurrency is not None else serving.default_concurrency()
    if heavy < 1:
        raise ValueError(f"--concurrency must be 1 or more, got {heavy}.")
    serving.assign_groups(demo, serving.ADMITTED, serving.light_concurrency())
    sessions = ctx.sessions
    sessions.heavy_threads = heavy_threads = serving.HeavyThreads(heavy)  # heavy work ranked below pages and light events
    sessions.fair_turns = fair_turns = serving.FairTurns(heavy)
    sessions.files.client_busy = lambda owner: fair_turns.has_jobs(("client", owner.token, owner.user))
    # Every handler, in every tab: a user's mistake is one log line, a real fault keeps its traceback.
    for block_fn in demo.fns.values():
        if block_fn.fn is not None:
            block_fn.fn = user_errors(block_fn.fn)
            if block_fn.concurrency_id == HEAVY:
                # (the children's sliders re-render the same children: a newer slider move replaces a waiting one)
                block_fn.fn = serving.take_turns(block_fn.fn, fair_turns, heavy_threads, lambda key: sessions.gone(key),
                                                 api=block_fn.api_name,
                                                 replaceable=(block_fn.api_name or "").startswith("family_children_"))
    plain_refusals(demo)  # and a value no handler could take, or a fault of ours, is a sentence too (never "error": null)
    demo.queue(default_concurrency_limit=heavy, max_size=serving.QUEUE_SIZE)
    serving.plain_queue_full(demo)
    serving.keep_batch_requests(demo)  # batch=True events (map clicks) save each visitor's output in their own session
    demo.latent_lab = ctx  # tests and the CLI reach the context through the app
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: list[str] | None = None, max_file_size: str | None = "20mb", block: bool = True,
           login_guard: LoginGuard | None = None, warm_maps: bool | None = None) -> gr.Blocks:
    """Serve the app: files only to their owners (``demos/file_access.py``), idle sessions expired, logins guarded.

    ``login_guard`` replaces the default guard built from ``auth`` (tests pass one with short lock-outs).
    ``warm_maps``: compile UMAP in the background once the page is up (default: when serving for real, ``block``).
    """
    users: dict[str, str] = {}
    for a in auth or []:
        user, sep, password = a.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth expects USER:PASSWORD, got '{a}'.")
        users[user] = password
    if login_guard is None and users:
        login_guard = LoginGuard(users)
    ctx: AppContext = demo.latent_lab
    serving.limit_malloc_arenas()  # before the server's threads exist
    demo.launch(
        server_name=host, server_port=port, share=share, auth=login_guard.gradio_auth() if login_guard else None,
        max_file_size=max_file_size, prevent_thread_lock=True, quiet=True, head=latent_map.HEAD, css=interpolation.CSS,
        footer_links=["api", "settings"], app_kwargs={"middleware": [Middleware(serving.CookieSent), Middleware(FileAccess, files=ctx.files)]},
    )
    ctx.sessions.gone = serving.client_gone(demo)
    ctx.sessions.queued = serving.queued_events(demo, ctx.sessions.fair_turns)
    ctx.start_reaper(lambda: _busy_sessions(demo), after=serving.release_memory)
    _close = demo.close

    def close(*args, **kwargs):  # stopping the server ends every session: their files go, running jobs write nothing
        log = logging.getLogger("uvicorn.error")
        level = log.level
        try:
            _no_grace(demo)
            return _close(*args, **kwargs)  # returns once the server's thread has ended
        finally:
            log.setLevel(level)
            ctx.close()


    demo.close = close
    if share and not getattr(demo, "share_url", None):
        print(f"warning: the public share link could not be created (no internet access to Gradio's share servers?). "
              f"The app is still serving locally at {demo.local_url}", file=sys.stderr)
    # Import torch and the core modules in the background once the page is served, so the first
    # click does not wait for them (start-up itself stays free of them).
    threading.Timer(1.0, _warm_up, kwargs={"maps": block if warm_maps is None else warm_maps}).start()
    if block:
        print(f"Latent Lab is running at {demo.local_url}" + (f" and {demo.share_url}" if getattr(demo, "share_url", None)
                                                               else "" if share else " (python app.py --share: also a public link)"))
        try:
            while demo.is_running:  # not demo.block_thread(): on Ctrl-C it waits for open connections before closing
                time.sleep(0.1)
        finally:
            demo.close()
    return demo


def _no_grace(demo: gr.Blocks) -> None:
    """Stop serving without waiting for open connections: uvicorn's graceful shutdown waits for every stream to end
    (an open page's heartbeat, a running job's updates), and Gradio gives up on it only after 5 s per close. Every
    session ends with the server anyway, so nobody is left to receive what those streams would still send."""
    server = getattr(demo, "server", None)
    if server is not None:
        # The streams cut short end as cancelled tasks, each logged with a traceback: expected here, not faults.
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        server.force_exit = True
        server.should_exit = True


def _busy_sessions(demo: gr.Blocks) -> set[str]:
    """Sessions with an event queued or running (never expired mid-job)."""
    queue = getattr(demo, "_queue", None)
    events = list(getattr(queue, "event_ids_to_events", {}).values()) if queue is not None else []
    return {session_key(getattr(e, "session_hash", None)) for e in events}


def _warm_up(maps: bool = False) -> None:
    serving.share_cores()
    if maps:  # numba's first compile of UMAP, paid here rather than by the first visitor's map
        threading.Thread(target=latent_map.warm_up_umap, name="latent-lab-umap-warm-up", daemon=True).start()
    import core.interpolate  # noqa: F401
    import core.losses  # noqa: F401
    import core.projection  # noqa: F401

    serving.freeze_startup_objects()  # last: what start-up made is permanent
