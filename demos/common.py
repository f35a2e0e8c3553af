"""What every tab shares: the app context, the model panel, uploads and per-session files.

Privacy: uploads and everything derived from them (crops, reconstructions,
exports) live only in a per-session folder inside the run's private cache
folder, belong to the client that made them and are deleted when the session
ends (tab closed, or idle for REST clients) and when the app stops; the rules
are in ``demos/sessions.py`` and the README's Privacy section. Every file input
passes ``AppContext.own_input`` (``read_upload`` does it for images).

Why one file (over 450 lines): the app context every tab receives (models, per-session files and caches,
ownership checks) is one object; its parts only make sense together.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import threading
import traceback
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from core.private_dir import IDLE_S
from demos.sessions import SessionError, SessionFiles, owner_of, session_key
from plugins.registry import Registry, UnknownModelError

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


@dataclass
class AppContext:
    registry: Registry
    max_steps: int = 1000
    models_dir: Path | None = None  # the only server folder visitors may name a model (.pkl, model folder) in (--models-dir)
    allow_shared_uploads: bool = False  # an uploaded .pkl is offered to everyone (--allow-shared-uploads)
    idle_s: float = IDLE_S  # a session with no open tab ends after this long without activity
    keep_files: bool = False  # --keep-files: nothing is deleted (debugging)
    executor: Any = None  # where heavy model work runs (core.executor.Executor; None: in this process, core.executor.LOCAL)
    model_dropdowns: list[gr.Dropdown] = field(default_factory=list)
    files: SessionFiles = field(init=False)
    _private_models: dict[str, str] = field(default_factory=dict)  # model name -> the session that uploaded it
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _caches: dict[str, dict] = field(default_factory=dict)
    _datasets: dict[tuple[str, str], Any] = field(default_factory=dict)
    _maps: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _reaper: threading.Thread | None = None
    max_datasets: int = 4  # labelled latent sets kept in memory (least recently used dropped first)
    gone: Callable[[str], bool] = lambda key: False  # has this session's client disconnected? (set by launch)
    # the ids of a session's queued events for some endpoints (set by launch; serving.queued_events)
    queued: Callable[[str, tuple[str, ...]], set[str]] = lambda key, apis: set()
    heavy_threads: Any = None  # demos.serving.HeavyThreads: where heavy handlers run (set by build_app)
    _ended_count: int = 0  # sessions ended so far (the reaper hands memory back after some end)

    def __post_init__(self) -> None:
        if self.executor is None:
            from core.executor import LOCAL

            self.executor = LOCAL
        self.files = SessionFiles(lambda: Path(gr.utils.get_upload_folder()), idle_s=self.idle_s, keep_files=self.keep_files)

    # ----- per-session files ---------------------------------------------------------
    def _key(self, request: gr.Request | None) -> str:
        """This request's session, checked: it must be the caller's own and not have ended."""
        key = _session_key(request)
        try:
            self.files.touch(key, owner_of(request))
        except SessionError as e:
            raise gr.Error(str(e)) from e
        return key

    def session_dir(self, request: gr.Request | None) -> Path:
        """This session's private output folder (random name, inside Gradio's cache, served to its client only)."""
        try:
            return self.files.folder(_session_key(request), owner_of(request))
        except SessionError as e:
            raise gr.Error(str(e)) from e

    def new_file(self, request: gr.Request | None, suffix: str, stem: str = "out") -> Path:
        return self.session_dir(request) / f"{stem}_{uuid.uuid4().hex[:10]}{suffix}"

    def save_image(self, request: gr.Request | None, image, stem: str = "image", min_side: int = 0) -> str:
        """Save a PIL image in the session folder; ``min_side`` upscales small images for display
        (nearest neighbour, so an 8x8 digit shows its real pixels)."""
        from core.images import enlarge

        path = self.new_file(request, ".png", stem)
        enlarge(image, min_side).save(path)
        return str(path)

    def own_input(self, request: gr.Request | None, path: str | None) -> str | None:
        """Accept a file input only from the client that uploaded (or made) it; it is deleted with the session.

        Another session's path, a path outside the app's folder typed into an API call, or a file already deleted
        all get the same plain message.
        """
        if path:
            try:
                self.files.use(path, _session_key(request), owner_of(request))
            except SessionError as e:
                raise gr.Error(str(e)) from e
        return path

    def queued_events(self, request: gr.Request | None, apis: tuple[str, ...]) -> set[str]:
        """Ids of this session's events for ``apis`` still waiting in the queue."""
        return self.queued(_session_key(request), apis)

    def client_gone(self, request: gr.Request | None) -> bool:
        """True once the client of this request has disconnected: its job should stop, nobody will see the result."""
        return request is not None and self.gone(_session_key(request))

    def track_upload(self, request: gr.Request | None, path: str | None) -> None:
        self.own_input(request, path)

    def session_cache(self, request: gr.Request | None) -> dict:
        """In-memory values of one session (e.g. parents' projections); dropped when it ends."""
        key = self._key(request)
        with self._lock:
            return self._caches.setdefault(key, {})

    def end_session(self, request: gr.Request | None) -> None:
        """Delete this session's uploads, outputs, private models and cached values (its tab closed)."""
        self._end(_session_key(request), owner_of(request))

    def _end(self, key: str, owner=None) -> None:
        if not self.files.end(key, owner):
            return  # a request that named someone else's session
        self._ended_count += 1
        with self._lock:
            self._caches.pop(key, None)
            private = [n for n, k in self._private_models.items() if k == key]
            for name in private:
                del self._private_models[name]
        for name in private:
            self.registry.remove(name)

    def expire_sessions(self, busy: set[str] = frozenset()) -> list[str]:
        """End the sessions idle for ``idle_s`` (no open tab, no running job); run by the reaper."""
        ended = self.files.expire(busy)
        for key in ended:
            self._end(key)
        return ended

    def start_reaper(self, busy: Callable[[], set[str]] = set, after: Callable[[], None] | None = None) -> None:
        """Expire idle sessions in the background, every quarter of the idle time (at most every 30 s); ``after``
        runs when sessions have ended (e.g. to hand their memory back)."""
        if self._reaper is not None:
            return
        period = max(0.2, min(self.idle_s / 4, 30.0))
        seen = [self._ended_count]

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.expire_sessions(busy())
                    if after is not None and self._ended_count != seen[0]:  # tabs closed or sessions expired
                        seen[0] = self._ended_count
                        after()
                except Exception as e:  # the reaper must outlive anything a request left behind
                    print(f"warning: session clean-up failed: {e}", file=sys.stderr)

        self._reaper = threading.Thread(target=loop, name="latent-lab-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        """The app stops: no job writes anything more, and every session's files are deleted."""
        self._stop.set()
        self.executor.close()
        if self.heavy_threads is not None:
            self.heavy_threads.close()
        self.files.close()
        with self._lock:
            keys = list(self._caches)
        for key in keys:
            self._end(key)

    # ----- models visible to this session -----------------------------------------------
    def add_private_model(self, name: str, request: gr.Request | None) -> None:
        """A model only the uploading session sees and uses; removed when that session ends."""
        with self._lock:
            self._private_models[name] = self._key(request)

    def visible(self, name: str, request: gr.Request | None = None) -> bool:
        owner_key = self._private_models.get(name)
        if owner_key is None:
            return True
        request = request if request is not None else _current_request()
        if request is None:
            return False
        try:
            return self._key(request) == owner_key
        except gr.Error:
            return False

    # ----- datasets and maps ----------------------------------------------------------
    def dataset(self, name: str, dataset: str):
        """A model's labelled latent set (built once, then kept in memory: the ``max_datasets`` most recently used)."""
        key = (name, dataset)
        with self._lock:
            if key in self._datasets:
                self._datasets[key] = self._datasets.pop(key)  # most recently used last
                return self._datasets[key]
        model = self.model(name)
        if dataset not in model.datasets():
            raise gr.Error(f"{self.registry.entry(name).card.title} has no dataset '{dataset}'.")
        try:
            value = self.executor.dataset(model, dataset)  # encoding a dataset is model work (maybe on a replica)
        except (OSError, ValueError, RuntimeError) as e:
            raise gr.Error(f"The dataset '{dataset}' could not be prepared: {e}") from e
        with self._lock:
            self._datasets[key] = value
            while len(self._datasets) > max(1, self.max_datasets):
                self._datasets.pop(next(iter(self._datasets)))
        return value

    @property
    def maps(self):
        """The map cache (created on first use so start-up imports no scikit-learn)."""
        if self._maps is None:
            from core.latent_map import MapCache
            from core.paths import cache_dir

            self._maps = MapCache(cache_dir("maps"), fit=self.executor.latent_map)  # fitted where heavy work runs
        return self._maps

    # ----- models --------------------------------------------------------------------
    def names(self, tag: str | None = None) -> list[str]:
        """The registry's models this session may see (other sessions' uploaded .pkl files are left out)."""
        return [n for n in self.registry.names(tag) if self.visible(n)]

    def choices(self, tag: str | None = None) -> list[tuple[str, str]]:
        out = []
        for name in self.names(tag):
            entry = self.registry.entry(name)
            status = self.registry.status(name)
            suffix = "" if status in ("ready", "loaded") else f" ({status})"
            out.append((f"{entry.card.title}{suffix}", name))
        return out

    def default_model(self, tag: str | None = None) -> str | None:
        names = self.names(tag)
        ready = [n for n in names if self.registry.status(n) in ("ready", "loaded")]
        return (ready or names or [None])[0]

    def model(self, name: str | None):
        """The loaded model, or a gr.Error that says what to do."""
        if not name:
            raise gr.Error("Choose a model first.")
        if name not in self.registry.entries or not self.visible(name):
            raise gr.Error(f"Unknown model '{name}'. Available: {', '.join(self.names()) or 'none'}.")
        try:
            status = self.registry.status(name)
            if status == "not downloaded":
                raise gr.Error(f"{self.registry.entry(name).card.title} is not downloaded yet: press Download weights in its model panel.")
            return self.registry.get(name)
        except gr.Error:
            raise
        except (KeyError, RuntimeError) as e:
            raise gr.Error(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e  # str(KeyError) adds quotes

    def card_markdown(self, name: str | None) -> str:
        if not name:
            return "No model selected."
        if not self.visible(name):
            return f"Unknown model '{name}'."
        try:
            entry = self.registry.entry(name)
        except KeyError as e:
            return str(e)
        status = self.registry.status(name)
        return entry.card.to_markdown() + f"\n- **Status:** {status}"


def _session_key(request: gr.Request | None) -> str:
    return session_key(getattr(request, "session_hash", None))


def _current_request() -> gr.Request | None:
    """The request of the event being run (Gradio keeps it in a context variable), for code not handed it."""
    from gradio.context import LocalContext

    return LocalContext.request.get(None)


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
    ctx.model_dropdowns.append(dropdown)

    def show(name):
        status = ctx.registry.status(name) if name else ""
        return ctx.card_markdown(name), gr.update(visible=status == "not downloaded")

    def fetch(name, progress=gr.Progress()):
        """A failed download is one warning and a line on the card: raised as an error, Gradio would lay a red
        "Error" over every output (the dropdown too) until dismissed."""
        try:
            download_model(ctx, name, progress)
        except gr.Error as e:
            gr.Warning(e.message)
            return (f"**Download failed:** {e.message}\n\n{ctx.card_markdown(name)}", gr.update(visible=True),
                    gr.update())
        return ctx.card_markdown(name), gr.update(visible=False), gr.update(choices=ctx.choices(tag), value=name)

    dropdown.change(show, dropdown, [card, download], api_name=f"{prefix}_model_card", show_progress="hidden")
    dropdown.focus(lambda: gr.update(choices=ctx.choices(tag)), None, dropdown, api_name=f"{prefix}_model_list",
                   api_visibility="undocumented", show_progress="hidden")
    download.click(fetch, dropdown, [card, download, dropdown], api_name=f"{prefix}_download", concurrency_id="download",
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
