"""Helpers that keep the tabs' handlers top-level functions: binding the app context, and Stop.

Handlers take the :class:`~demos.common.AppContext` as their first argument, so tests call them directly
(no server). :func:`bind` gives Gradio a function without it, keeping the signature and the annotations
Gradio reads to inject ``gr.Request`` and ``gr.Progress`` (``functools.partial`` hides both), and
keeping generators generators (Gradio streams only generator functions).

Stop (and a client that disconnects, see :class:`StopFlag`): Gradio's ``cancels=`` closes a generator between yields, so the handler never gets to say where
it stopped or hand over what it has. A Stop button sets a per-session flag instead; the projection
checks it between steps and finishes with the best latent so far.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable

import gradio as gr

from demos.common import AppContext


def bind(fn: Callable, ctx: AppContext) -> Callable:
    """``fn(ctx, ...)`` as a Gradio handler ``(...)``."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def bound(*args, **kwargs):
            yield from fn(ctx, *args, **kwargs)
    else:

        @functools.wraps(fn)
        def bound(*args, **kwargs):
            return fn(ctx, *args, **kwargs)

    sig = inspect.signature(fn)
    bound.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    bound.__annotations__ = _resolved(fn)
    del bound.__wrapped__  # Gradio and inspect would otherwise read the unbound signature back
    return bound


class StopFlag(threading.Event):
    """Set by the session's Stop button; also reads as set once the session's client has disconnected, so a
    closed tab's 1000-step job ends at its next step instead of running for nobody."""

    def __init__(self, gone: Callable[[], bool]) -> None:
        super().__init__()
        self._gone = gone

    def is_set(self) -> bool:
        return super().is_set() or self._gone()


def stop_flag(ctx: AppContext, request: gr.Request | None, job: str) -> StopFlag:
    """A fresh stop flag for this session's ``job``; a run takes one as it starts. It starts set when Stop was
    pressed while this very run waited in the queue (the run then ends at once, with what it started from)."""
    flag = StopFlag(lambda: ctx.client_gone(request))
    cache = ctx.session_cache(request)
    cache[("stop", job)] = flag
    asked = cache.get(("stop while queued", job), set())
    event = _event_id()
    if event is not None and event in asked:
        asked.discard(event)
        flag.set()
    return flag


def request_stop(ctx: AppContext, request: gr.Request | None, job: str, apis: tuple[str, ...] = ()) -> None:
    """Ask this session's running ``job`` to stop after its current step; its runs of ``apis`` waiting for their turn
    leave the line at once (``serving.FairTurns``), and any still in Gradio's own queue stop as they start (else a Stop
    pressed while waiting was lost and the job ran in full)."""
    cache = ctx.session_cache(request)
    flag = cache.get(("stop", job))
    if flag is not None:
        flag.set()
    waiting = ctx.queued_events(request, apis)
    if waiting:
        cache.setdefault(("stop while queued", job), set()).update(waiting)


def _event_id() -> str | None:
    """The id of the event being run (Gradio keeps it in a context variable)."""
    from gradio.context import LocalContext

    return LocalContext.event_id.get(None)


def _resolved(fn: Callable) -> dict:
    """``fn``'s annotations as objects (they are strings under ``from __future__ import annotations``), less ctx."""
    out = {}
    for name, hint in fn.__annotations__.items():
        if name == "ctx":
            continue
        try:
            out[name] = eval(hint, fn.__globals__) if isinstance(hint, str) else hint  # noqa: S307 - our own source
        except Exception:  # a name only imported for type checking: Gradio does not need it
            continue
    return out
