"""What every tab shares: the app context, the model panel, uploads and per-session files.

Privacy: uploads and everything derived from them (crops, reconstructions,
exports) live only in a per-session folder inside Gradio's private cache
folder; it is deleted when the browser session ends (``demo.unload``) and the
whole cache folder is deleted when the app stops.
"""

from __future__ import annotations

import functools
import inspect
import shutil
import sys
import threading
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from plugins.registry import Registry

HEAVY = "heavy"  # concurrency_id shared by the long jobs (projection, maps, family): --concurrency of them at once


def user_errors(fn: Callable) -> Callable:
    """Wrap an event handler so a user's mistake is one log line and a plain message, not a traceback.

    A gr.Error, or a ValueError from validating the user's input, reaches the user
    as a gr.Error and the server log as one line; any other exception is a real
    fault and keeps Gradio's full traceback. Generators stay generators (Gradio
    streams them).
    """

    def refuse(e: Exception) -> gr.Error:
        error = e if isinstance(e, gr.Error) else gr.Error(str(e))
        error.print_exception = False
        print(f"user error in {getattr(fn, '__name__', 'a handler')}: {error.message}", file=sys.stderr)
        return error

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (gr.Error, ValueError) as e:
                error = refuse(e)
                raise error from (None if error is e else e)

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gr.Error, ValueError) as e:
            error = refuse(e)
            raise error from (None if error is e else e)

    return call


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
    model_dropdowns: list[gr.Dropdown] = field(default_factory=list)
    _sessions: dict[str, Path] = field(default_factory=dict)
    _uploads: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _caches: dict[str, dict] = field(default_factory=dict)
    _datasets: dict[tuple[str, str], Any] = field(default_factory=dict)
    _maps: Any = None

    # ----- per-session files ---------------------------------------------------------
    def session_dir(self, request: gr.Request | None) -> Path:
        """This browser session's private output folder (inside Gradio's cache, so it is served as is)."""
        key = _session_key(request)
        with self._lock:
            if key not in self._sessions:
                root = Path(gr.utils.get_upload_folder()) / "latent_lab_sessions" / key
                root.mkdir(parents=True, exist_ok=True)
                self._sessions[key] = root
            return self._sessions[key]

    def new_file(self, request: gr.Request | None, suffix: str, stem: str = "out") -> Path:
        return self.session_dir(request) / f"{stem}_{uuid.uuid4().hex[:10]}{suffix}"

    def save_image(self, request: gr.Request | None, image, stem: str = "image", min_side: int = 0) -> str:
        """Save a PIL image in the session folder; ``min_side`` upscales small images for display
        (nearest neighbour, so an 8x8 digit shows its real pixels)."""
        from core.images import enlarge

        path = self.new_file(request, ".png", stem)
        enlarge(image, min_side).save(path)
        return str(path)

    def track_upload(self, request: gr.Request | None, path: str | None) -> None:
        if path:
            with self._lock:
                self._uploads.setdefault(_session_key(request), set()).add(path)

    def session_cache(self, request: gr.Request | None) -> dict:
        """In-memory values of one session (e.g. parents' projections); dropped when it ends."""
        with self._lock:
            return self._caches.setdefault(_session_key(request), {})

    def end_session(self, request: gr.Request | None) -> None:
        """Delete this session's uploads, outputs and cached values (called when the browser tab closes)."""
        key = _session_key(request)
        with self._lock:
            self._caches.pop(key, None)
            folder = self._sessions.pop(key, None)
            uploads = self._uploads.pop(key, set())
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        for p in uploads:
            path = Path(p)
            path.unlink(missing_ok=True)
            try:  # Gradio stores each upload in its own hashed folder
                path.parent.rmdir()
            except OSError:
                pass

    # ----- datasets and maps ----------------------------------------------------------
    def dataset(self, name: str, dataset: str):
        """A model's labelled latent set (built once, then kept in memory)."""
        key = (name, dataset)
        if key not in self._datasets:
            makers = self.model(name).datasets()
            if dataset not in makers:
                raise gr.Error(f"{self.registry.entry(name).card.title} has no dataset '{dataset}'.")
            try:
                self._datasets[key] = makers[dataset]()
            except (OSError, ValueError, RuntimeError) as e:
                raise gr.Error(f"The dataset '{dataset}' could not be prepared: {e}") from e
        return self._datasets[key]

    @property
    def maps(self):
        """The map cache (created on first use so start-up imports no scikit-learn)."""
        if self._maps is None:
            from core.latent_map import MapCache
            from core.paths import cache_dir

            self._maps = MapCache(cache_dir("maps"))
        return self._maps

    # ----- models --------------------------------------------------------------------
    def choices(self, tag: str | None = None) -> list[tuple[str, str]]:
        out = []
        for name in self.registry.names(tag):
            entry = self.registry.entry(name)
            status = self.registry.status(name)
            suffix = "" if status in ("ready", "loaded") else f" ({status})"
            out.append((f"{entry.card.title}{suffix}", name))
        return out

    def default_model(self, tag: str | None = None) -> str | None:
        names = self.registry.names(tag)
        ready = [n for n in names if self.registry.status(n) in ("ready", "loaded")]
        return (ready or names or [None])[0]

    def model(self, name: str | None):
        """The loaded model, or a gr.Error that says what to do."""
        if not name:
            raise gr.Error("Choose a model first.")
        try:
            status = self.registry.status(name)
            if status == "not downloaded":
                raise gr.Error(f"{self.registry.entry(name).card.title} is not downloaded yet: press Download in the model panel.")
            return self.registry.get(name)
        except gr.Error:
            raise
        except (KeyError, RuntimeError) as e:
            raise gr.Error(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e  # str(KeyError) adds quotes

    def card_markdown(self, name: str | None) -> str:
        if not name:
            return "No model selected."
        try:
            entry = self.registry.entry(name)
        except KeyError as e:
            return str(e)
        status = self.registry.status(name)
        return entry.card.to_markdown() + f"\n- **Status:** {status}"


def _session_key(request: gr.Request | None) -> str:
    key = getattr(request, "session_hash", None) or "no-session"
    return "".join(c for c in str(key) if c.isalnum() or c in "-_")[:64] or "no-session"


def read_upload(ctx: AppContext, path: str | None, request: gr.Request | None, channels: int = 3, min_side: int = 16, what: str = "image"):
    """Decode an upload into a PIL image or raise a gr.Error with the plain reason."""
    from core.image_input import ImageInputError, load_image

    if not path:
        raise gr.Error(f"Upload the {what} first.")
    ctx.track_upload(request, path)
    try:
        return load_image(path, channels=channels, min_side=min_side)
    except ImageInputError as e:
        raise gr.Error(f"{what[:1].upper() + what[1:]}: {e}") from e


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
        download_model(ctx, name, progress)
        return ctx.card_markdown(name), gr.update(visible=False), gr.update(choices=ctx.choices(tag), value=name)

    dropdown.change(show, dropdown, [card, download], api_name=f"{prefix}_model_card", show_progress="hidden")
    dropdown.focus(lambda: gr.update(choices=ctx.choices(tag)), None, dropdown, api_name=f"{prefix}_model_list",
                   api_visibility="undocumented", show_progress="hidden")
    download.click(fetch, dropdown, [card, download, dropdown], api_name=f"{prefix}_download", concurrency_id="download")
    return dropdown, card, download


def download_model(ctx: AppContext, name: str, progress=None) -> None:
    """Download a model's weights with a progress bar, or a gr.Error that says why not."""
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
        raise gr.Error(str(e)) from e


def caption(ctx: AppContext, name: str) -> str:
    """The licence line stamped on a model's outputs."""
    return ctx.registry.entry(name).card.caption()
