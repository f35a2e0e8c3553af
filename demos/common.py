"""What every tab shares: the app context, the model panel, uploads and per-session files.

Privacy: uploads and everything derived from them (crops, reconstructions,
exports) live only in a per-session folder inside the run's private cache
folder, belong to the client that made them and are deleted when the session
ends (tab closed, or idle for REST clients) and when the app stops; the rules
are in ``demos/sessions.py`` and the README's Privacy section. Every file input
passes ``AppContext.own_input`` (``read_upload`` does it for images).

The context is two parts with one concern each: ``demos/session_store.py`` (sessions and their files) and
``demos/model_store.py`` (models, datasets and maps).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.data_classes import FileData

from core.private_dir import IDLE_S
from demos.model_store import Models, _current_request  # noqa: F401 - _current_request: demos.serving reads it here
from demos.session_store import Sessions
from demos.sessions import SessionFiles
from demos.taught import TaughtStore
from plugins.registry import Registry, UnknownModelError

if TYPE_CHECKING:  # torch and the serving machinery: types only, the page is served without them
    from core.executor import Executor
    from core.latent_map import MapCache
    from core.model import LatentModel
    from demos.serving import FairTurns

HEAVY = "heavy"  # concurrency_id shared by the long jobs (projection, maps, family): --concurrency of them at once
LIGHT = "light"  # every short event (cards, alignment, decoding a point): many at once, never behind HEAVY (demos/serving.py)
DECODE = "decode"  # batched decoding (map clicks, batch=True): requests queued meanwhile go into one generate call
DECODE_STEPS = 50  # a diffusion model's sampling steps per decoded image, by default (its own default)


def user_errors(fn: Callable) -> Callable:
    """Wrap an event handler so a user's mistake is one log line and a plain message, not a traceback.

    A gr.Error, a ValueError from validating the user's input, or an unknown model
    name reaches the user as a gr.Error and the server log as one line; any other
    exception is a real fault: its full traceback is logged and the visitor gets a
    general sentence (:func:`plain_refusals`). Generators stay generators (Gradio
    streams them).
    """

    def refuse(e: Exception) -> gr.Error:
        error = e if isinstance(e, gr.Error) else gr.Error(str(e))
        error.print_exception = False
        print(f"user error in {getattr(fn, '__name__', 'a handler')}: {error.message[:300]}", file=sys.stderr)
        return error

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (gr.Error, ValueError, UnknownModelError) as e:
                error = refuse(e)
                raise error from (None if error is e else e)

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gr.Error, ValueError, UnknownModelError) as e:
            error = refuse(e)
            raise error from (None if error is e else e)

    return call


FAULT = ("Something went wrong on the server while handling this request (it has been logged). "
         "Try again, or with other settings.")


def finite_number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float | int | None:
    """A number input, or a gr.Error naming it: NaN and infinity slip through range checks (every comparison
    with NaN is false), so they are refused here by name, as are non-numbers and values outside [low, high]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise gr.Error(f"{what} must be a number; got {_shown(value)}.")
    if not math.isfinite(value):
        raise gr.Error(f"{what} must be a finite number; got {value}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise gr.Error(f"{what} must be from {low:g} to {high:g}; got {value:g}." if low is not None and high is not None
                       else f"{what} must be at least {low:g}; got {value:g}." if low is not None
                       else f"{what} must be at most {high:g}; got {value:g}.")
    return value


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _input_name(block: Any) -> str:
    """How a refusal names an input: its label up to any explanation in brackets, else its elem_id."""
    label = getattr(block, "label", None) or (getattr(block, "elem_id", None) or "").replace("_", " ")
    return label.split(" (")[0].strip() or "A value"


def _check_inputs(block_fn: Any, inputs: Any, state: Any = None) -> None:
    """What the components would fail on obscurely (or, for NaN, not at all), refused by name before they run;
    ``state``: the session's copies of the components (a range changed by an update is the one that holds)."""
    if not isinstance(inputs, list):
        raise gr.Error("The request's data must be a list of the endpoint's values (see its API page).")
    if len(inputs) < len(block_fn.inputs):
        raise gr.Error(f"This endpoint takes {len(block_fn.inputs)} values (see its API page); got {len(inputs)}.")
    for block, value in zip(block_fn.inputs, inputs, strict=False):
        if state is not None and getattr(block, "_id", None) in state:
            block = state[block._id]
        if isinstance(block, (gr.Number, gr.Slider)):
            finite_number(value, _input_name(block), getattr(block, "minimum", None), getattr(block, "maximum", None))
        elif isinstance(block, (gr.Radio, gr.Textbox)) or (isinstance(block, gr.Dropdown) and not block.multiselect):
            if isinstance(value, (list, dict)):
                raise gr.Error(f"{_input_name(block)} takes one value, not a {type(value).__name__}.")
        elif isinstance(block, gr.CheckboxGroup) and value is not None:
            if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
                raise gr.Error(f"{_input_name(block)} takes a list of its choices.")
        elif isinstance(block, gr.Checkbox) and value is not None and not isinstance(value, bool):
            raise gr.Error(f"{_input_name(block)} takes true or false; got {_shown(value)}.")
        elif isinstance(block, (gr.Image, gr.File)) and value is not None:
            files = value if isinstance(value, list) and getattr(block, "file_count", "single") != "single" else [value]
            if not all(isinstance(f, dict) and isinstance(f.get("path"), str) and f["path"] for f in files):
                raise gr.Error(f"{_input_name(block)} must be a file sent as {{\"path\": …}}, the path "
                               "POST /gradio_api/upload returned (see the API page).")


def plain_refusals(demo: gr.Blocks) -> None:
    """Every refusal reaches the visitor as a sentence: Gradio sends a message only for a gr.Error (anything else
    arrives as ``"error": null``). A value the components cannot take is refused by name with one log line; a fault
    of the app itself keeps its traceback in the log and the visitor gets a general sentence."""
    from gradio.exceptions import InvalidPathError

    preprocess, process = demo.preprocess_data, demo.process_api

    async def checked_preprocess(block_fn, inputs, *args, **kwargs):
        try:
            _check_inputs(block_fn, inputs, kwargs.get("state", args[0] if args else None))
            return await preprocess(block_fn, inputs, *args, **kwargs)
        except Exception as e:
            if isinstance(e, gr.Error):
                error = e
            elif isinstance(e, InvalidPathError):
                error = gr.Error("A file sent to this endpoint was not uploaded to this app: upload it first "
                                 "(POST /gradio_api/upload) and send the path that returns.")
            else:
                error = gr.Error("A value sent to this endpoint is not of the kind it takes (see its API page).")
            error.print_exception = False
            print(f"refused input of {block_fn.api_name or block_fn.name}: {error.message[:300]}", file=sys.stderr)
            raise error from None

    async def guarded_process(*args, **kwargs):
        block_fn = kwargs.get("block_fn", args[0] if args else None)
        inputs = kwargs.get("inputs", args[1] if len(args) > 1 else None)
        if getattr(block_fn, "batch", False) and not (  # one list per input, one value per request in each
                isinstance(inputs, (list, tuple)) and len(inputs) >= len(block_fn.inputs) and inputs
                and all(isinstance(column, (list, tuple)) and len(column) == len(inputs[0]) > 0 for column in inputs)):
            error = gr.Error(f"This endpoint takes {len(block_fn.inputs)} values (see its API page).")
            error.print_exception = False
            print(f"refused input of {block_fn.api_name}: {error.message}", file=sys.stderr)
            raise error
        try:
            return await process(*args, **kwargs)
        except Exception as e:
            if isinstance(e, gr.Error):
                raise
            traceback.print_exc()  # a fault of ours: its traceback for the log, a sentence for the visitor
            error = gr.Error(FAULT)
            error.print_exception = False
            raise error from None

    demo.preprocess_data = checked_preprocess
    demo.process_api = guarded_process


def _raw_path(self: gr.Image, payload: FileData | None) -> str | None:
    if payload is None:
        return None
    if payload.path is None:
        raise gr.Error("The image did not arrive; please upload it again.")
    return payload.path


def ImageUpload(**kwargs) -> gr.Image:  # noqa: N802 - used like a component class
    """A gr.Image whose handler receives the raw upload path, decoded by our own code.

    Stock gr.Image opens every upload with PIL before our code runs, so a
    non-image or a decompression bomb fails there with a message the user
    never sees; ``core.image_input.load_image`` explains each case instead.
    """
    image = gr.Image(type="filepath", **{k: v for k, v in kwargs.items() if k != "type"})
    image.preprocess = types.MethodType(_raw_path, image)
    return image


class AppContext:
    """What every tab's handlers receive: ``sessions`` (each visitor's files, values and queue state,
    ``demos.session_store.Sessions``) and ``models`` (the models a session may use, their datasets and maps,
    ``demos.model_store.Models``), plus ``max_steps``, the app's cap on projection steps.

    The methods below only forward to those two, so handlers written as ``ctx.model(name)`` or
    ``ctx.save_image(...)`` keep working; new code may reach the part it needs directly."""

    def __init__(self, registry: Registry, max_steps: int = 1000, models_dir: Path | None = None,
                 allow_shared_uploads: bool = False, idle_s: float = IDLE_S, keep_files: bool = False,
                 executor: Executor | None = None, max_datasets: int = 4) -> None:
        self.max_steps = max_steps
        self.sessions = Sessions(idle_s, keep_files)
        self.models = Models(registry, self.sessions.key, executor, models_dir, allow_shared_uploads, max_datasets)
        self.sessions.on_end.append(self.models.forget_session)
        self.taught = TaughtStore()  # directions taught in the browser, per session (demos.taught)
        self.sessions.on_end.append(self.taught.forget)

    def close(self) -> None:
        """The app stops: no job writes anything more, every session's files are deleted, the executor is closed."""
        self.sessions.close()
        self.models.executor.close()

    # ----- forwarded to .models --------------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        return self.models.registry

    @property
    def executor(self) -> Executor:
        return self.models.executor

    @property
    def models_dir(self) -> Path | None:
        return self.models.models_dir

    @property
    def allow_shared_uploads(self) -> bool:
        return self.models.allow_shared_uploads

    @property
    def model_dropdowns(self) -> list[gr.Dropdown]:
        return self.models.dropdowns

    @property
    def maps(self) -> MapCache:
        return self.models.maps

    def model(self, name: str | None) -> LatentModel:
        return self.models.model(name)

    def dataset(self, name: str, dataset: str):
        return self.models.dataset(name, dataset)

    def names(self, tag: str | None = None) -> list[str]:
        return self.models.names(tag)

    def choices(self, tag: str | None = None) -> list[tuple[str, str]]:
        return self.models.choices(tag)

    def default_model(self, tag: str | None = None) -> str | None:
        return self.models.default_model(tag)

    def card_markdown(self, name: str | None) -> str:
        return self.models.card_markdown(name)

    def visible(self, name: str, request: gr.Request | None = None) -> bool:
        return self.models.visible(name, request)

    def add_private_model(self, name: str, request: gr.Request | None) -> None:
        self.models.add_private(name, request)

    # ----- forwarded to .sessions ------------------------------------------------------------------------------------
    @property
    def files(self) -> SessionFiles:
        return self.sessions.files

    @property
    def _caches(self) -> dict[str, dict]:  # (tests look inside)
        return self.sessions._caches

    @property
    def fair_turns(self) -> FairTurns | None:
        return self.sessions.fair_turns

    def session_dir(self, request: gr.Request | None) -> Path:
        return self.sessions.session_dir(request)

    def new_file(self, request: gr.Request | None, suffix: str, stem: str = "out") -> Path:
        return self.sessions.new_file(request, suffix, stem)

    def save_image(self, request: gr.Request | None, image, stem: str = "image", min_side: int = 0) -> str:
        return self.sessions.save_image(request, image, stem, min_side)

    def own_input(self, request: gr.Request | None, path: str | None) -> str | None:
        return self.sessions.own_input(request, path)

    def track_upload(self, request: gr.Request | None, path: str | None) -> None:
        self.sessions.own_input(request, path)

    def session_cache(self, request: gr.Request | None) -> dict:
        return self.sessions.cache(request)

    def queued_events(self, request: gr.Request | None, apis: tuple[str, ...]) -> set[str]:
        return self.sessions.queued_events(request, apis)

    def client_gone(self, request: gr.Request | None) -> bool:
        return self.sessions.client_gone(request)

    def end_session(self, request: gr.Request | None) -> None:
        self.sessions.end_session(request)

    def expire_sessions(self, busy: set[str] = frozenset()) -> list[str]:
        return self.sessions.expire(busy)

    def start_reaper(self, busy: Callable[[], set[str]] = set, after: Callable[[], None] | None = None) -> None:
        self.sessions.start_reaper(busy, after)


def read_upload(ctx: AppContext, path: str | None, request: gr.Request | None, channels: int = 3, min_side: int = 16, what: str = "image"):
    """Decode an upload into a PIL image or raise a gr.Error with the plain reason.

    Only the caller's own uploads are read (see ``AppContext.own_input``); a refused image is deleted at once.
    """
    from core.image_input import ImageInputError, load_image

    if not path:
        raise gr.Error(f"Upload the {what} first.")
    ctx.own_input(request, path)
    try:
        return load_image(path, channels=channels, min_side=min_side)
    except ImageInputError as e:
        ctx.files.drop(path)
        raise gr.Error(f"{what[:1].upper() + what[1:]}: {e}") from e


def decode_steps_slider(ctx: AppContext, prefix: str) -> gr.Slider:
    """"Diffusion steps": sampling steps per decoded image; hidden until a model that decodes iteratively is chosen."""
    top = min(ctx.max_steps, 1000)
    return gr.Slider(1, top, value=min(DECODE_STEPS, top), step=1, visible=False,
                     label="Diffusion steps (decoding; more: slower, finer)", elem_id=f"{prefix}_decode_steps")


def decode_steps_view(ctx: AppContext, name: str | None) -> dict:
    """The "Diffusion steps" setting, shown only for a model that decodes iteratively (and is ready to load)."""
    iterative = bool(name) and ctx.registry.status(name) in ("ready", "loaded") and ctx.model(name).iterative_decode
    return gr.update(visible=iterative)


def model_panel(ctx: AppContext, prefix: str, tag: str | None = None, label: str = "Model", default_tag: str | None = None):
    """Model dropdown + card + Download button; returns (dropdown, card, download_button).

    ``tag`` limits the list (Family: face models only); ``default_tag`` only picks the first choice
    (Projection lists every model but opens on a face model).
    """
    first = ctx.default_model(tag or default_tag) or ctx.default_model(tag)
    with gr.Group():
        # Custom values allowed: models added while the app runs (a local .pkl) are valid before this
        # session's list is refreshed; ctx.model() still refuses unknown names with a plain message.
        dropdown = gr.Dropdown(ctx.choices(tag), value=first, label=label, elem_id=f"{prefix}_model",
                               allow_custom_value=True)
        with gr.Accordion("Model card (licence, training data)", open=False):
            card = gr.Markdown(ctx.card_markdown(first), elem_id=f"{prefix}_card")
        download = gr.Button("Download weights", visible=False, size="sm", elem_id=f"{prefix}_download")
        # beside the button, where the visitor looks after pressing it (the card's accordion is usually closed)
        failed = gr.Markdown("", visible=False, elem_id=f"{prefix}_download_status")
    ctx.model_dropdowns.append(dropdown)

    def show(name):
        status = ctx.registry.status(name) if name else ""
        return ctx.card_markdown(name), gr.update(visible=status == "not downloaded")

    def fetch(name, progress=gr.Progress()):
        """A failed download is one warning and a line beside the button: raised as an error, Gradio would lay a red
        "Error" over every output (the dropdown too) until dismissed."""
        try:
            download_model(ctx, name, progress)
        except gr.Error as e:
            gr.Warning(e.message)
            return (ctx.card_markdown(name), gr.update(visible=True), gr.update(),
                    gr.update(value=f"**Download failed:** {e.message}", visible=True))
        return (ctx.card_markdown(name), gr.update(visible=False), gr.update(choices=ctx.choices(tag), value=name),
                gr.update(value="", visible=False))

    dropdown.change(show, dropdown, [card, download], api_name=f"{prefix}_model_card", show_progress="hidden")
    dropdown.change(lambda: gr.update(value="", visible=False), None, failed, api_visibility="private", show_progress="hidden")
    dropdown.focus(lambda: gr.update(choices=ctx.choices(tag)), None, dropdown, api_name=f"{prefix}_model_list",
                   api_visibility="undocumented", show_progress="hidden")
    download.click(fetch, dropdown, [card, download, dropdown, failed], api_name=f"{prefix}_download", concurrency_id="download",
                   show_progress_on=[download])
    return dropdown, card, download


def download_model(ctx: AppContext, name: str, progress=None) -> None:
    """Download a model's weights with a progress bar, or a gr.Error that says why not."""
    if not name:
        raise gr.Error("Choose a model first, then press Download weights.")
    if name not in ctx.registry.entries or not ctx.visible(name):
        raise gr.Error(f"Unknown model '{name}'.")
    entry = ctx.registry.entry(name)
    if entry.download is None:
        raise gr.Error(f"{entry.card.title} has nothing to download.")
    if progress is not None:
        progress(0, desc=f"Downloading {entry.card.title}")

    def report(done: int, total: int | None):
        if total and progress is not None:
            progress(done / total, desc=f"Downloading {entry.card.title}: {done / 2**20:.0f} / {total / 2**20:.0f} MB")

    try:
        entry.download(report)
    except Exception as e:
        raise gr.Error(str(e) or f"The download of {entry.card.title} failed ({type(e).__name__}).") from e


def caption(ctx: AppContext, name: str) -> str:
    """The licence line stamped on a model's outputs."""
    return ctx.registry.entry(name).card.caption()
