"""Plugin registry: finds model backends and loads them lazily.

A plugin is a Python module with a function ``get_models()`` that returns
:class:`ModelEntry` objects, and optionally ``get_losses()`` and
``get_file_loaders()`` (the contract is ``plugins/contract.py``). Plugins are
found in three places:

1. built-in packages under ``plugins/`` (each sub-package's ``__init__``);
2. installed distributions, through the entry-point group ``latent_lab.plugins``
   (the entry point names a module or a ``get_models`` callable);
3. a user folder (``--plugins-dir``): every ``*.py`` file or package in it.

Nothing heavy happens at discovery: ``ModelEntry.load`` runs only when a model
is first selected, and the loaded model is cached. A plugin that fails to
import, or a model that fails to load, is recorded with its error; the rest of
the app keeps working. The contract is checked at both moments (``check_entry``
when found, ``check_model`` when loaded): a part missing is one sentence naming it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import re
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.handle import ModelHandle
from core.losses import register_loss
from plugins.contract import FOLDER, ContractError, FileLoader, ModelEntry, check_entry, check_model

__all__ = ["ENTRY_POINT_GROUP", "ModelEntry", "PluginError", "Registry", "UnknownModelError", "model_bytes", "parse_bytes"]

if TYPE_CHECKING:
    from core.model import LatentModel

ENTRY_POINT_GROUP = "latent_lab.plugins"
BUILTIN_FIRST = ("small_ae", "stylegan")  # listed first (the tabs' defaults); other built-in plugins follow by name
DEFAULT_MAX_BYTES = 2 * 1024**3  # --max-model-memory's default: 2 GiB of loaded weights (docs/serving.md, "Bounded memory")
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3, "t": 1024**4, "tb": 1024**4}


def parse_bytes(text: str | int) -> int:
    """"2GB", "512mb", "1.5g" or a plain number of bytes -> bytes (binary units: 1 GB = 1024**3); ValueError otherwise."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"A memory size is a number with an optional unit (e.g. 2GB, 512MB), not '{text}'.")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size < 1:
        raise ValueError(f"A memory budget must be more than 0 bytes, got '{text}'.")
    return size


def model_bytes(model: LatentModel) -> int:
    """Bytes held by a model's parameters and buffers (each tensor counted once, shared ones too): what freeing
    the model hands back, give or take caches a backend keeps outside its modules."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in model.modules():
        for t in (*module.parameters(), *module.buffers()):
            key = (t.untyped_storage().data_ptr(), t.device.index or 0) if t.numel() else (id(t), -1)
            if key in seen:
                continue
            seen.add(key)
            total += t.untyped_storage().nbytes() if t.numel() else 0
    return total


@dataclass
class PluginError:
    plugin: str
    message: str
    detail: str = ""


class UnknownModelError(KeyError):
    """A model name nobody registered; the message names the closest ones (a KeyError, printed without quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "Unknown model."


class Registry:
    """``max_models``: loaded models kept in memory at once; ``max_bytes``: their parameters and buffers together
    (``model_bytes``, counted when loaded). Beyond either, the least recently used are freed first, never the one
    being handed out (so a model larger than the whole budget still loads, alone). None: no limit.
    A job still using a freed model keeps it until it ends; the next use loads it again."""

    def __init__(self, max_models: int | None = None, max_bytes: int | None = None) -> None:
        if max_models is not None and max_models < 1:
            raise ValueError(f"--max-models must be 1 or more, got {max_models}.")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"--max-model-memory must be more than 0 bytes, got {max_bytes}.")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._bytes: dict[str, int] = {}  # loaded model -> its model_bytes
        self._loading: dict[str, threading.Lock] = {}  # model being loaded -> the lock its other callers wait on
        self.entries: dict[str, ModelEntry] = {}
        self.errors: list[PluginError] = []
        self.file_loaders: dict[str, tuple[str, FileLoader]] = {}  # suffix -> (plugin, loader)
        self._models: dict[str, LatentModel] = {}
        self._load_errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # ----- discovery ----------------------------------------------------------------
    def discover(self, plugins_dir: str | Path | None = None, use_entry_points: bool = True) -> Registry:
        builtin = Path(__file__).parent
        first = {name: i for i, name in enumerate(BUILTIN_FIRST)}
        for info in sorted(pkgutil.iter_modules([str(builtin)]), key=lambda i: (first.get(i.name, len(first)), i.name)):
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
                raise ContractError("The plugin has no get_models() function: see docs/plugins.md.")
            for loss in getattr(obj, "get_losses", lambda: [])():
                register_loss(loss)
            for suffix, loader in getattr(obj, "get_file_loaders", dict)().items():
                self.file_loaders[suffix.lower()] = (plugin, loader)
            for entry in get_models():
                try:
                    self.add(entry, plugin)
                except ContractError as e:  # this model is broken, not the plugin's other models
                    self.errors.append(PluginError(plugin, str(e)))
        except ContractError as e:
            self.errors.append(PluginError(plugin, str(e)))
        except Exception as e:  # a broken plugin must never stop the app
            self.errors.append(PluginError(plugin, f"{type(e).__name__}: {e}", traceback.format_exc()))

    def add(self, entry: ModelEntry, plugin: str = "") -> None:
        if not isinstance(entry, ModelEntry):
            raise TypeError(f"get_models() must return ModelEntry objects, got {type(entry).__name__}")
        check_entry(entry)
        if entry.name in self.entries:
            raise ValueError(f"model name '{entry.name}' is already registered by {self.entries[entry.name].plugin}")
        entry.plugin = entry.plugin or plugin
        self.entries[entry.name] = entry

    def add_file(self, path: str | Path, *, title: str | None = None, tags: tuple[str, ...] = (), copy: bool = False) -> str:
        """Add a user's model file through the plugin that declared its suffix; returns the entry's name.

        The same file again keeps its entry and adds what is newly said about it (e.g. a FACES tag).
        A suffix no plugin reads, or a file its plugin refuses, is a ValueError with a plain message.
        """
        entry, plugin = self.file_entry(path, title=title, tags=tags, copy=copy)
        return self.add_or_update(entry, plugin)

    def file_entry(self, path: str | Path, *, title: str | None = None, tags: tuple[str, ...] = (), copy: bool = False,
                   cache_root: Path | None = None) -> tuple[ModelEntry, str]:
        """The checked entry (and the plugin reading it) for a user's model file, folder or hub id, not yet registered."""
        key = self.loader_key(path)
        if key is None:
            suffix = Path(path).suffix.lower()
            known = ", ".join(sorted(k for k in self.file_loaders if k != FOLDER)) or "none"
            folders = "; model folders and Hugging Face Hub ids (owner/name) work too" if FOLDER in self.file_loaders else ""
            raise ValueError(f"No plugin reads '{suffix or Path(path).name}' files (model files it can add: {known}){folders}.")
        plugin, loader = self.file_loaders[key]
        extra = {} if cache_root is None else {"cache_root": cache_root}  # plugins written before cache_root still work
        return loader(path, title=title, tags=tuple(tags), copy=copy, **extra), plugin

    def remove(self, name: str) -> None:
        """Forget a model and free it if loaded (a session's private upload, when the session ends)."""
        with self._lock:
            self._models.pop(name, None)
            self._bytes.pop(name, None)
            self.entries.pop(name, None)

    def loader_key(self, path: str | Path) -> str | None:
        """Which file loader takes ``path``: a folder or an ``owner/name`` hub id (not a local path) goes to the
        ``FOLDER`` loader, a file to its suffix's; None when no plugin reads it."""
        p = Path(path).expanduser()
        suffix = p.suffix.lower()
        if FOLDER in self.file_loaders and (p.is_dir() or (not p.exists() and suffix not in self.file_loaders
                                                          and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)))):
            return FOLDER
        return suffix if suffix in self.file_loaders and suffix != FOLDER else None

    def add_or_update(self, entry: ModelEntry, plugin: str = "") -> str:
        """Add ``entry``; if its name is known (the same file added again), keep that entry and add the new tags."""
        known = self.entries.get(entry.name)
        if known is None:
            self.add(entry, plugin)
        else:
            known.tags = tuple(dict.fromkeys((*known.tags, *entry.tags)))
        return entry.name

    # ----- access -------------------------------------------------------------------
    def names(self, tag: str | None = None) -> list[str]:
        return [n for n, e in self.entries.items() if tag is None or tag in e.tags]

    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            close = difflib.get_close_matches(str(name), list(self.entries), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UnknownModelError(f"Unknown model {name}.{hint} Available: {', '.join(self.entries) or 'none'}.")
        return self.entries[name]

    def handle(self, name: str, model: LatentModel | None = None) -> ModelHandle:
        """The model ``name`` with its tags (``core.handle.ModelHandle``), loaded unless ``model`` is given (the loaded
        object, or a resized view of it)."""
        return ModelHandle(name, tuple(self.entry(name).tags), self.get(name) if model is None else model)

    def status(self, name: str) -> str:
        if name in self._models:
            return "loaded"
        if name in self._load_errors:
            return f"failed: {self._load_errors[name]}"
        try:
            return self.entry(name).status()
        except Exception as e:
            return f"failed: {e}"

    def get(self, name: str) -> LatentModel:
        """The loaded model (loading it on first use). Raises RuntimeError with a plain message.

        A model loads under its own lock, not the registry's: a StyleGAN taking seconds to load must not hold up
        other visitors' requests for models already loaded (a decoded map point, a model card's status)."""
        entry = self.entry(name)
        with self._lock:
            if name in self._models:
                return self._use(name, self._models.pop(name))
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # one load per model at a time: a second caller waits for the first's result
            with self._lock:
                if name in self._models:
                    return self._use(name, self._models.pop(name))
            try:
                model = entry.load()
                check_model(model, name)
            except Exception as e:
                with self._lock:
                    self._load_errors[name] = str(e) or type(e).__name__
                if isinstance(e, ContractError):  # already one sentence naming the model and what it lacks
                    raise RuntimeError(str(e)) from e
                raise RuntimeError(f"Model '{name}' could not be loaded: {e}") from e
            size = model_bytes(model)
            with self._lock:
                self._load_errors.pop(name, None)
                self._loading.pop(name, None)
                if self.entries.get(name) is not entry:  # removed (its session ended) while it loaded: not kept
                    return model
                self._bytes[name] = size
                return self._use(name, model)

    def _use(self, name: str, model: LatentModel) -> LatentModel:
        """(Under the lock) ``model`` becomes the most recently used; the least recently used beyond the budget go."""
        self._models[name] = model
        while len(self._models) > 1 and self._over_budget():
            oldest = next(iter(self._models))
            self._models.pop(oldest)
            self._bytes.pop(oldest, None)
        return model

    def loaded_bytes(self) -> int:
        """Parameters and buffers of the models loaded now (what ``max_bytes`` bounds)."""
        with self._lock:
            return sum(self._bytes.values())

    def _over_budget(self) -> bool:
        if self.max_models is not None and len(self._models) > self.max_models:
            return True
        return self.max_bytes is not None and sum(self._bytes.values()) > self.max_bytes


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
