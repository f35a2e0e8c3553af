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

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

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


def bind_settings(fn: Callable, ctx: AppContext, settings: type, fields: dict[str, Any]) -> tuple[Callable, list]:
    """``fn(ctx, settings, ...)`` as a Gradio handler, and its inputs: the components of ``fields`` (settings field
    name -> component, in the event's order) arrive as one ``settings`` object, so a component meets its parameter by
    name, never by position. A field named here that the settings lack, or a field without a default left out, fails
    when the tab is built, not when a visitor presses a button.

    The Gradio-facing function names one parameter per component (the API page shows those names and keeps its
    positional order), then ``fn``'s own parameters after ``settings`` (``gr.Request``, ``gr.Progress``)."""
    known = {f.name: f for f in dataclasses.fields(settings)}
    needed = {n for n, f in known.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if set(fields) - set(known) or needed - set(fields):
        raise TypeError(f"{fn.__name__}: components {sorted(set(fields) - set(known))} have no field in "
                        f"{settings.__name__}; fields {sorted(needed - set(fields))} have no component.")
    names = list(fields)
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def bound(*args, **kwargs):
            yield from fn(ctx, settings(**dict(zip(names, args, strict=False))), *args[len(names):], **kwargs)
    else:

        @functools.wraps(fn)
        def bound(*args, **kwargs):
            return fn(ctx, settings(**dict(zip(names, args, strict=False))), *args[len(names):], **kwargs)

    rest = list(inspect.signature(fn).parameters.values())[2:]
    own = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    bound.__signature__ = inspect.Signature(own + rest)
    bound.__annotations__ = {k: v for k, v in _resolved(fn).items() if k in {p.name for p in rest}}
    del bound.__wrapped__
    return bound, list(fields.values())


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


# What the API page ("Use via API") says of each public endpoint: one sentence for a user of the API, never a
# handler's docstring (those are notes for developers). Model panels' endpoints are named "<tab>_model_card" and
# "<tab>_download" in every tab.
API_SENTENCES = {
    "project": "Project an uploaded image into the chosen model's latent space; streams previews, then the "
               "reconstruction, its quality and the latent (.npz).",
    "proj_spaces": "The latent spaces the chosen model offers, and the one it projects into by default.",
    "proj_losses": "The reconstruction losses the chosen model can use now.",
    "proj_model_note": "A note on what the chosen model can do with photos, with a button to get a better one.",
    "proj_photo_download": "Download the suggested photo model (StyleGAN2 FFHQ) and choose it.",
    "proj_loss_download": "Download the weights the LPIPS loss needs.",
    "edit": "Move your latest projection along up to three directions: the edited picture, its identity, its latent.",
    "edit_strip": "One direction from -2 to +2 std applied to your latest projection, as one picture.",
    "edit_directions": "The directions your latest projection can be edited along (the model's and the ones you taught).",
    "teach": "Teach a direction from photos with and without a trait: held-out accuracy and verdict, this session only.",
    "interpolate": "Walk between two seeds or two uploaded images: frames, a GIF, an MP4 and the latents.",
    "family_align": "Find and align the faces in the father's and the mother's photos.",
    "family_project": "Project both parents' faces into the chosen face model.",
    "family_children": "Make children from the two parents' faces with the given genes, directions, variation and seed.",
    "family_morph": "A video that morphs the father into a child and on into the mother.",
    "family_directions": "The attribute directions (age, gender, …) of the chosen face model and how reliable each is.",
    "family_model_view": "What the chosen face model offers in the Family tab (layer dominance, notes).",
    "family_photo_download": "Download the suggested photo model (StyleGAN2 FFHQ) and choose it for the family.",
    "map": "Compute the PCA, UMAP or t-SNE map of one of the model's datasets (/map_datasets lists them).",
    "map_datasets": "The chosen model's datasets for the latent map, and the labels of the first one.",
    "map_labels": "The labels a dataset's points can be coloured by.",
    "map_click": "Decode the map point sent as \"index:anything\" (what a click on the plot sends).",
    "map_decode_point": "Decode the point with the given number into an image.",
    "map_decode_xy": "Decode the latent at the given map coordinates into an image.",
    "map_neighbours": "The dataset's nearest neighbours of an uploaded image, and the map with them marked.",
    "models": "Every model with its status, size and licence, and the plugins that failed to load.",
    "add_pickle": "Add a model file (a StyleGAN .pkl) to this session's model lists.",
}
PANEL_SENTENCES = {
    "_model_card": "The chosen model's card: what it is, its training data, licence and status.",
    "_download": "Download the chosen model's weights; a failure comes back as a line on the card.",
}


def describe_api(demo: gr.Blocks) -> None:
    """Give every public endpoint its sentence (none: no description rather than a docstring) and keep duplicates
    (the same handler on the same components under a second name) off the API page; they stay callable."""
    for block in demo.blocks.values():  # a list filled per model (empty now) reads as text, not as ``Literal[]``
        if isinstance(block, gr.Dropdown) and not block.choices and "api_info" not in vars(block):
            block.api_info = lambda: {"type": "string", "description": "one of the choices the app offers for the model"}
    seen: set[tuple] = set()
    for fn in demo.fns.values():
        if fn.fn is None or fn.api_visibility != "public":
            continue
        name = fn.api_name or ""
        key = (getattr(fn.fn, "__qualname__", name), tuple(b._id for b in fn.inputs), tuple(b._id for b in fn.outputs))
        if "<lambda>" not in key[0] and key in seen:
            fn.api_visibility = "undocumented"
            continue
        seen.add(key)
        sentence = API_SENTENCES.get(name) or next((s for end, s in PANEL_SENTENCES.items() if name.endswith(end)), None)
        fn.api_description = sentence or False
