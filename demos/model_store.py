"""The models a session may use, and the datasets and maps made from them, as the tabs see them.

The registry (``plugins.registry``) knows every model; this adds what depends on the visitor: a model file one
session uploaded is that session's only, an unknown or not-downloaded model is one plain gr.Error, and the
labelled latent sets and maps the Latent map tab draws are built once (where the executor runs heavy work) and
kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from plugins.registry import Registry

if TYPE_CHECKING:  # both import torch, which the page is served without
    from core.executor import Executor
    from core.latent_map import MapCache
    from core.model import LatentModel


class Models:
    """``executor`` runs heavy model work (None: in this process, ``core.executor.LOCAL``); ``session_of`` gives a
    request's checked session key (``Sessions.key``); ``models_dir``: the only server folder visitors may name a model
    in (--models-dir); ``allow_shared_uploads``: an uploaded model is offered to everyone."""

    def __init__(self, registry: Registry, session_of: Callable[[gr.Request | None], str], executor: Executor | None = None,
                 models_dir: Path | None = None, allow_shared_uploads: bool = False, max_datasets: int = 4) -> None:
        if executor is None:
            from core.executor import LOCAL  # (torch: only when no executor was handed in)

            executor = LOCAL
        self.registry, self.executor = registry, executor
        self.models_dir, self.allow_shared_uploads = models_dir, allow_shared_uploads
        self.max_datasets = max_datasets  # labelled latent sets kept in memory (least recently used dropped first)
        self.dropdowns: list[gr.Dropdown] = []  # every tab's model list (refreshed when a model is added)
        self._session_of = session_of
        self._lock = threading.Lock()
        self._private: dict[str, str] = {}  # model name -> the session that uploaded it
        self._datasets: dict[tuple[str, str], object] = {}
        self._maps: MapCache | None = None

    # ----- who sees which model ------------------------------------------------------------------------------------
    def add_private(self, name: str, request: gr.Request | None) -> None:
        """A model only the uploading session sees and uses; removed when that session ends (:meth:`forget_session`)."""
        with self._lock:
            self._private[name] = self._session_of(request)

    def forget_session(self, key: str) -> None:
        """The session ``key`` ended: the models it uploaded go."""
        with self._lock:
            private = [n for n, k in self._private.items() if k == key]
            for name in private:
                del self._private[name]
        for name in private:
            self.registry.remove(name)

    def visible(self, name: str, request: gr.Request | None = None) -> bool:
        owner_key = self._private.get(name)
        if owner_key is None:
            return True
        request = request if request is not None else _current_request()
        if request is None:
            return False
        try:
            return self._session_of(request) == owner_key
        except gr.Error:
            return False

    def names(self, tag: str | None = None) -> list[str]:
        """The registry's models this session may see (other sessions' uploaded files are left out)."""
        return [n for n in self.registry.names(tag) if self.visible(n)]

    def choices(self, tag: str | None = None) -> list[tuple[str, str]]:
        out = []
        for name in self.names(tag):
            status = self.registry.status(name)
            suffix = "" if status in ("ready", "loaded") else f" ({status})"
            out.append((f"{self.registry.entry(name).card.title}{suffix}", name))
        return out

    def default_model(self, tag: str | None = None) -> str | None:
        names = self.names(tag)
        ready = [n for n in names if self.registry.status(n) in ("ready", "loaded")]
        return (ready or names or [None])[0]

    def model(self, name: str | None) -> LatentModel:
        """The loaded model, or a gr.Error that says what to do."""
        if not name:
            raise gr.Error("Choose a model first.")
        if name not in self.registry.entries or not self.visible(name):
            raise gr.Error(f"Unknown model '{name}'. Available: {', '.join(self.names()) or 'none'}.")
        try:
            if self.registry.status(name) == "not downloaded":
                raise gr.Error(f"{self.registry.entry(name).card.title} is not downloaded yet: press Download weights "
                               "in its model panel.")
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
        return entry.card.to_markdown() + f"\n- **Status:** {self.registry.status(name)}"

    # ----- datasets and maps ---------------------------------------------------------------------------------------
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
    def maps(self) -> MapCache:
        """The map cache (created on first use so start-up imports no scikit-learn)."""
        if self._maps is None:
            from core.latent_map import MapCache
            from core.paths import cache_dir

            self._maps = MapCache(cache_dir("maps"), fit=self.executor.latent_map)  # fitted where heavy work runs
        return self._maps


def _current_request() -> gr.Request | None:
    """The request of the event being run (Gradio keeps it in a context variable), for code not handed it."""
    from gradio.context import LocalContext

    return LocalContext.request.get(None)
