"""Fair serving of one app to many visitors: concurrency groups, a per-session cap, a plain queue-full message,
and knowing when a client has gone.

Why: with one queue a 0.2 s face alignment waits behind other visitors' 1000-step projections. Light events (model
cards, alignment, decoding one point, lists) therefore run in their own group (``LIGHT``) with room for many at
once; heavy jobs (``HEAVY``: projections, maps, Family, interpolation) share ``--concurrency`` slots, and one
session runs at most one heavy job at a time (a second is refused with a sentence, not queued: a queued duplicate
would hold a slot other visitors wait for). A job whose client has disconnected stops within a step or a yield.
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import functools
import gc
import inspect
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

import gradio as gr

from demos.common import HEAVY, LIGHT
from demos.sessions import session_key

QUEUE_SIZE = 64  # queued events (all groups) before new ones are refused with BUSY
BUSY = "Busy: {n} requests are ahead of you. Please try again in a minute."
ONE_AT_A_TIME = "You already have a job running in this session: wait for it to finish, or press Stop, then try again."


def cpu_count() -> int:
    """Cores this process may use (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_concurrency() -> int:
    """Heavy jobs at once: one per GPU (a GPU runs one job fastest), else one per 4 cores (torch already uses
    several cores per job; more jobs only share the same cores and all finish later)."""
    try:
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count())
    except ImportError:
        pass
    return max(1, cpu_count() // 4)


def light_concurrency() -> int:
    """Light events at once: they are short, so enough that a crowd does not queue behind one another."""
    return max(4, 2 * cpu_count())


def share_cores() -> int:
    """On CPU, heavy jobs' torch keeps one core free for light events (``cores - 1`` threads, at least 1): else a
    projection's threads take every core and a 0.1 s model card waits for them. Returns torch's thread count."""
    import torch

    from core.device import get_device

    if get_device().type == "cpu" and cpu_count() >= 2:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpu_count() - 1)))
    return torch.get_num_threads()


def assign_groups(demo: gr.Blocks, heavy: int, light: int) -> None:
    """Put every event in its group: ``HEAVY`` ones keep theirs with ``heavy`` slots, events with their own limit
    (downloads, Stop buttons) stay as they are, the rest join ``LIGHT``."""
    for fn in demo.fns.values():
        if fn.concurrency_id == HEAVY:
            fn.concurrency_limit = heavy
        elif fn.concurrency_limit == "default" and fn.concurrency_id == str(id(fn.fn)):
            fn.concurrency_id = LIGHT
            fn.concurrency_limit = light


HEAVY_NICE = 10  # how far below the front-end the OS ranks heavy work (Linux nice: 10 gets ~1/10 of a busy core's share)


class HeavyThreads:
    """Threads the OS ranks below the rest of the app (``nice`` +10), for heavy jobs' work.

    Why: on a CPU server a projection keeps a core busy, and a visitor's 0.1 s model card, face alignment or the
    server's own HTTP work then waits for its turn on the cores. A heavy handler's body runs here (each step of a
    stream in turn), so the OS serves those first and heavy jobs take what is left. A thread's nice cannot be lowered
    again without privileges, so these threads are kept for heavy work only; ``nice`` 0 (or a system that refuses)
    leaves them at the app's own priority."""

    def __init__(self, n: int, nice: int = HEAVY_NICE) -> None:
        self.niced: list[bool] = []
        self.pool = ThreadPoolExecutor(max(1, n), thread_name_prefix="latent-lab-heavy", initializer=self._lower,
                                       initargs=(nice,))

    def _lower(self, nice: int) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
            self.niced.append(nice > 0)
        except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the app
            self.niced.append(False)

    def _run(self, fn: Callable, *args):
        """``fn(*args)`` on a heavy thread, in the caller's context (Gradio's request and progress live in it)."""
        context = contextvars.copy_context()
        try:
            future = self.pool.submit(context.run, fn, *args)
        except RuntimeError:  # the app is stopping (pool shut down): a stream's clean-up still runs, here
            return context.run(fn, *args)
        return future.result()

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` (a generator function stays one) with its work on these threads; the caller's thread waits."""
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def stream(*args, **kwargs):
                gen = fn(*args, **kwargs)  # creating a generator runs none of its body
                try:
                    while True:
                        try:
                            item = self._run(next, gen)
                        except StopIteration as stop:
                            return stop.value
                        yield item
                finally:
                    self._run(gen.close)  # a Stop or a gone client: the generator's clean-up runs here too

            return stream

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return self._run(functools.partial(fn, *args, **kwargs))

        return call

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def one_heavy_per_session(fn: Callable, running: dict[str, object], gone: Callable[[str], bool]) -> Callable:
    """Wrap a heavy handler: refuse it while the same session has another heavy job running (``running`` maps a
    session to its job; a job whose client has gone no longer counts)."""

    def enter() -> tuple[str, object]:
        from demos.common import _current_request

        request = _current_request()
        key = session_key(getattr(request, "session_hash", None)) if request is not None else None
        token = object()
        if key is not None:
            if key in running and not gone(key):
                raise gr.Error(ONE_AT_A_TIME)
            running[key] = token
        return key, token

    def leave(key, token) -> None:
        if key is not None and running.get(key) is token:
            running.pop(key, None)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            key, token = enter()
            try:
                yield from fn(*args, **kwargs)
            finally:
                leave(key, token)

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        key, token = enter()
        try:
            return fn(*args, **kwargs)
        finally:
            leave(key, token)

    return call


def client_gone(demo: gr.Blocks) -> Callable[[str], bool]:
    """``gone(session)``: True once Gradio has marked that session's running event dead (its stream closed)."""

    def gone(key: str) -> bool:
        queue = getattr(demo, "_queue", None)
        for job_set in getattr(queue, "active_jobs", None) or []:
            for event in job_set or []:
                if session_key(event.session_hash) == key and not event.alive:
                    return True
        return False

    return gone


def queued_events(demo: gr.Blocks) -> Callable[[str, tuple[str, ...]], set[str]]:
    """``queued(session, apis)``: the ids of that session's events for those endpoints still waiting in the queue
    (not started), so a Stop pressed while a job waits can reach it when it starts."""

    def queued(key: str, apis: tuple[str, ...]) -> set[str]:
        queue = getattr(demo, "_queue", None)
        waiting = set()
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            for event in list(event_queue.queue):
                if session_key(event.session_hash) == key and getattr(event.fn, "api_name", None) in apis:
                    waiting.add(event._id)
        return waiting

    return queued


def plain_queue_full(demo: gr.Blocks) -> None:
    """Replace Gradio's "Queue is full. Max size is …" with BUSY, counting the requests ahead."""
    queue = demo._queue
    push = queue.push

    async def polite_push(body, request, username):
        ok, detail, state = await push(body, request, username)
        if not ok and state == "queue_full":
            detail = BUSY.format(n=len(queue))
        return ok, detail, state

    queue.push = polite_push


_BATCH_REQUESTS: ContextVar[list | None] = ContextVar("latent_lab_batch_requests", default=None)


def keep_batch_requests(demo: gr.Blocks) -> None:
    """Gradio's queue gathers one request per visitor for a ``batch=True`` event but hands the function only the
    first (``Blocks.call_function``); without the rest every visitor's output would be saved in the first visitor's
    session. This keeps the whole list, in the batch's order, for :func:`batch_requests`."""
    call = demo.call_function

    async def call_function(block_fn, processed_input, iterator=None, requests=None, *args, **kwargs):
        token = _BATCH_REQUESTS.set(list(requests) if isinstance(requests, list) else None)
        try:
            return await call(block_fn, processed_input, iterator, requests, *args, **kwargs)
        finally:
            _BATCH_REQUESTS.reset(token)

    demo.call_function = call_function


def batch_requests(n: int, request: gr.Request | None) -> list[gr.Request | None]:
    """The request of each of a batch's ``n`` items: from the queue's list (``keep_batch_requests``), else
    ``request`` for all (a direct call, or a batch of one). A list of another length is refused: a visitor's
    output must never be filed under someone else's session."""
    requests = _BATCH_REQUESTS.get()
    if requests is None or (n == 1 and len(requests) == 1):
        return [requests[0] if requests else request] * n
    if len(requests) != n:
        raise RuntimeError(f"A batch of {n} requests arrived with {len(requests)} sessions; not decoded.")
    return requests


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def limit_malloc_arenas(n: int = 2) -> bool:
    """glibc gives each worker thread its own malloc arena; with Gradio's 40 workers freed memory stays spread over
    them and RSS only grows. A few shared arenas keep it reusable (the ``MALLOC_ARENA_MAX`` setting, at run time)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(-8, n))  # -8: M_ARENA_MAX


def freeze_startup_objects() -> int:
    """Move everything alive now (Gradio's blocks, modules, torch) out of the cycle collector's reach
    (``gc.freeze``): a full collection of the app's ~300k start-up objects holds the GIL ~0.2 s, and each one (ours
    after sessions end, or Python's own) stalled every visitor's light requests. Objects made later are collected as
    usual. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def release_memory() -> None:
    """Collect cycles and hand freed heap pages back to the OS (after sessions end: their images, latents)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
