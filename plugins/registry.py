"""Plugin registry: finds model backends and loads them lazily.

A plugin is a Python module with a function ``get_models()`` that returns
:class:`ModelEntry` objects. Plugins are found in three places:

1. built-in packages under ``plugins/`` (each sub-package's ``__init__``);
2. installed distributions, through the entry-point group ``latent_lab.plugins``
   (the entry point names a module or a ``get_models`` callable);
3. a user folder (``--plugins-dir``): every ``*.py`` file or package in it.

Nothing heavy happens at discovery: ``ModelEntry.load`` runs only when a model
is first selected, and the loaded model is cached. A plugin that fails to
import, or a model that fails to load, is recorded with its error; the rest of
the app keeps working.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.card import ModelCard

if TYPE_CHECKING:
    from core.model import LatentModel

ENTRY_POINT_GROUP = "latent_lab.plugins"


@dataclass
class ModelEntry:
    """A model a plugin offers, described without loading it.

    ``load`` builds the model (reads weights). ``status`` says whether it can
    load now ("ready") or what is missing (e.g. "not downloaded");
    ``download(progress)`` fetches what is missing, calling
    ``progress(done_bytes, total_bytes)``.
    """

    name: str
    card: ModelCard
    load: Callable[[], LatentModel]
    status: Callable[[], str] = field(default=lambda: "ready")
    download: Callable[..., Any] | None = None
    plugin: str = ""
    tags: tuple[str, ...] = ()  # e.g. ("faces",) marks models the Family tab can use


@dataclass
class PluginError:
    plugin: str
    message: str
    detail: str = ""


class Registry:
    def __init__(self) -> None:
        self.entries: dict[str, ModelEntry] = {}
        self.errors: list[PluginError] = []
        self._models: dict[str, LatentModel] = {}
        self._load_errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # ----- discovery ----------------------------------------------------------------
    def discover(self, plugins_dir: str | Path | None = None, use_entry_points: bool = True) -> Registry:
        builtin = Path(__file__).parent
        for info in sorted(pkgutil.iter_modules([str(builtin)]), key=lambda i: i.name):
            if info.ispkg:
                self._add_from(f"plugins.{info.name}", lambda n=info.name: importlib.import_module(f"plugins.{n}"))
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._add_from(f"{ep.name} (entry point {ep.value})", ep.load)
        if plugins_dir is not None:
            self.discover_folder(plugins_dir)
        return self

    def discover_folder(self, folder: str | Path) -> None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            self.errors.append(PluginError(str(folder), f"Plugins folder '{folder}' does not exist."))
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            if path.suffix == ".py":
                self._add_from(str(path), lambda p=path: _import_path(p.stem, p))
            elif (path / "__init__.py").is_file():
                self._add_from(str(path), lambda p=path: _import_path(p.name, p / "__init__.py"))

    def _add_from(self, plugin: str, importer: Callable[[], Any]) -> None:
        try:
            obj = importer()
            get_models = obj if callable(obj) and not hasattr(obj, "get_models") else getattr(obj, "get_models", None)
            if get_models is None:
                raise AttributeError("the plugin module has no get_models() function")
            for entry in get_models():
                self.add(entry, plugin)
        except Exception as e:  # a broken plugin must never stop the app
            self.errors.append(PluginError(plugin, f"{type(e).__name__}: {e}", traceback.format_exc()))

    def add(self, entry: ModelEntry, plugin: str = "") -> None:
        if not isinstance(entry, ModelEntry):
            raise TypeError(f"get_models() must return ModelEntry objects, got {type(entry).__name__}")
        if entry.name in self.entries:
            raise ValueError(f"model name '{entry.name}' is already registered by {self.entries[entry.name].plugin}")
        entry.plugin = entry.plugin or plugin
        self.entries[entry.name] = entry

    # ----- access -------------------------------------------------------------------
    def names(self, tag: str | None = None) -> list[str]:
        return [n for n, e in self.entries.items() if tag is None or tag in e.tags]

    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            raise KeyError(f"Unknown model '{name}'. Available: {', '.join(self.entries) or 'none'}.")
        return self.entries[name]

    def status(self, name: str) -> str:
        if name in self._models:
            return "loaded"
        if name in self._load_errors:
            return f"failed: {self._load_errors[name]}"
        try:
            return self.entry(name).status()
        except Exception as e:
            return f"failed: {e}"

    def is_loaded(self, name: str) -> bool:
        return name in self._models

    def get(self, name: str) -> LatentModel:
        """The loaded model (loading it on first use). Raises RuntimeError with a plain message."""
        entry = self.entry(name)
        with self._lock:
            if name not in self._models:
                try:
                    self._models[name] = entry.load()
                    self._load_errors.pop(name, None)
                except Exception as e:
                    self._load_errors[name] = str(e) or type(e).__name__
                    raise RuntimeError(f"Model '{name}' could not be loaded: {e}") from e
            return self._models[name]

    def unload(self, name: str) -> None:
        with self._lock:
            self._models.pop(name, None)


def _import_path(name: str, path: Path) -> Any:
    """Import a user plugin file under a private module name."""
    mod_name = f"latent_lab_user_plugins.{name}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module
