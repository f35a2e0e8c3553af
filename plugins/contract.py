"""The plugin contract: everything a model backend gives Latent Lab, in one place.

A plugin is a module (a file, a package, or an installed entry point) with:

- ``get_models() -> list[ModelEntry]`` (required): the models it offers, described
  without loading them;
- ``get_losses() -> list[Loss]`` (optional): image losses its models can project
  with (StyleGAN offers LPIPS); the registry registers them in ``core.losses``;
- ``get_file_loaders() -> dict[str, FileLoader]`` (optional): the file suffixes it
  can turn into a model (StyleGAN: ``".pkl"``), so "add a local model file" works
  in the Models tab and ``--model FILE`` in the CLI without either knowing which
  plugin reads which file. The key ``FOLDER`` claims model folders and Hugging Face
  Hub ids (``owner/name``): diffusers models.

Tags say what a model is good for; use the constants below, not string literals.

The registry checks the contract when a plugin is found (``check_entry``: the entry, and a model class's
missing parts where its source shows them) and when a model loads (``check_model``): a broken plugin or model
is listed with one sentence naming what is missing (``ContractError``), never as ready. docs/plugins.md
lists every required part, optional hook and capability flag.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.card import ModelCard
from core.losses import Loss, LossFn
from core.tags import DIGITS, FACES, LOCAL_FILE  # the tags a plugin puts on its models: defined once, in core

if TYPE_CHECKING:
    from core.model import LatentModel

__all__ = ["DIGITS", "FACES", "FOLDER", "LOCAL_FILE", "ContractError", "FileLoader", "Loss", "LossFn", "ModelEntry",
           "check_entry", "check_model"]

FOLDER = "/"  # get_file_loaders() key of the loader for model folders and Hugging Face Hub ids


@dataclass
class ModelEntry:
    """A model a plugin offers, described without loading it; its name is its card's.

    ``load`` builds the model (reads weights). ``status`` says whether it can
    load now ("ready") or what is missing (e.g. "not downloaded");
    ``download(progress)`` fetches what is missing, calling
    ``progress(done_bytes, total_bytes)``.
    """

    card: ModelCard
    load: Callable[[], LatentModel]
    status: Callable[[], str] = field(default=lambda: "ready")
    download: Callable[..., Any] | None = None
    plugin: str = ""
    tags: tuple[str, ...] = ()  # e.g. (FACES,)

    @property
    def name(self) -> str:
        return self.card.name


class FileLoader(Protocol):
    """Turn a user's model file into an entry, checked before it is offered (a bad file: ValueError).

    ``copy=True`` keeps a private copy (an upload's temporary file may vanish);
    ``tags`` are what the user says about it (e.g. (FACES,)); ``cache_root`` is where
    files derived from it on load may go (None: the user cache; a session's private
    upload keeps them in the session folder, deleted with it; the registry passes it only when set).
    """

    def __call__(self, path: str | Path, *, title: str | None = None, tags: tuple[str, ...] = (),
                 copy: bool = False, cache_root: Path | None = None) -> ModelEntry: ...


class ContractError(ValueError):
    """A plugin or model lacks part of the contract; the message is one sentence naming what (shown as it is)."""


# What every LatentModel must have, and how the sentence names each part.
REQUIRED_ATTRIBUTES = {
    "card": "card (its ModelCard)",
    "image_size": "image_size (the side of its images in pixels)",
    "channels": "channels (1 for grey images, 3 for colour)",
    "spaces": "spaces (its latent spaces by name)",
    "default_space": "default_space (the name of one of its spaces)",
}
REQUIRED_METHODS = {"_sample": "_sample (how to draw latents)", "_decode": "_decode (latents to images)"}
# A capability flag, the method it promises, and what the flag means: a flag set without its method is broken.
FLAG_METHODS = {
    "has_encoder": ("_encode", "an encoder"),
    "iterative_inversion": ("inversion_events", "its own inversion"),
    "resizable": ("_resized", "any image size"),
}


def _sentence(who: str, missing: list[str]) -> str:
    listed = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
    return f"{who} is missing {listed}: see docs/plugins.md."


def _latent_model() -> type | None:
    """core.model's LatentModel if something imported it already (a plugin defining a model did); start-up stays free of
    torch, which core.model imports."""
    module = sys.modules.get("core.model")
    return getattr(module, "LatentModel", None)


def _names_in_class(cls: type, base: type) -> set[str] | None:
    """Every name, attribute and exact string in the source of ``cls`` and its bases below ``base`` (None when some of it
    cannot be read, e.g. a class built at run time): a required attribute not among them cannot be set by the class."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is base or not issubclass(klass, base):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            return None
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
    return names


def _takes_progress(method: Callable) -> bool:
    params = inspect.signature(method).parameters.values()
    names = {p.name for p in params}
    return any(p.kind is p.VAR_KEYWORD for p in params) or {"progress", "cancel"} <= names


def _missing_in_class(cls: type, base: type, by_source: bool = True) -> list[str]:
    """Required parts a model class lacks, as far as the class shows without building it: abstract methods, flags without
    their method, and (``by_source``) attributes neither set in a class body nor named anywhere in the class's code."""
    missing = [REQUIRED_METHODS.get(m, m) for m in sorted(getattr(cls, "__abstractmethods__", ()))]
    names = _names_in_class(cls, base) if by_source else None
    if names is not None:
        missing += [label for attr, label in REQUIRED_ATTRIBUTES.items() if not hasattr(cls, attr) and attr not in names]
    for flag, (method, what) in FLAG_METHODS.items():
        if getattr(cls, flag, False) is True and getattr(cls, method) is getattr(base, method):
            missing.append(f"{method} ({flag} promises {what})")
    if getattr(cls, "iterative_decode", False) is True and not _takes_progress(cls._decode):
        missing.append("progress and cancel keywords in _decode (iterative_decode promises them)")
    return missing


def check_entry(entry: object) -> None:
    """Check a model entry when its plugin is found (cheap: nothing is loaded); ContractError naming what is wrong."""
    if not isinstance(entry, ModelEntry):
        raise ContractError(f"get_models() must return ModelEntry objects, not {type(entry).__name__}.")
    if not isinstance(entry.card, ModelCard):
        raise ContractError(f"An entry's card must be a core.card.ModelCard, not {type(entry.card).__name__}.")
    if not callable(entry.load) or not callable(entry.status):
        raise ContractError(f"Model {entry.name}'s load and status must be functions (load builds the model).")
    if isinstance(entry.tags, str) or not all(isinstance(t, str) for t in entry.tags):
        raise ContractError(f"Model {entry.name}'s tags must be a tuple of names such as (FACES,), not {entry.tags!r}.")
    base = _latent_model()
    if base is not None and isinstance(entry.load, type) and issubclass(entry.load, base):
        missing = _missing_in_class(entry.load, base)
        if missing:
            raise ContractError(_sentence(f"Model {entry.name} ({entry.load.__name__})", missing))


def check_model(model: object, name: str) -> None:
    """Check a model just loaded (``ModelEntry.load``'s result) before anyone uses it; ContractError naming what is missing."""
    from core.model import LatentModel  # a model is loaded, so torch is in already; start-up must not import it

    if not isinstance(model, LatentModel):
        raise ContractError(f"Model {name}'s load() returned a {type(model).__name__}, not a core.model.LatentModel.")
    missing = _missing_in_class(type(model), LatentModel, by_source=False)  # the built model itself says which attributes it has
    missing += [label for attr, label in REQUIRED_ATTRIBUTES.items() if not hasattr(model, attr)]
    if not hasattr(model, "device"):
        missing.append("device (set by LatentModel.__init__: call super().__init__() first)")
    if missing:
        raise ContractError(_sentence(f"Model {name}", missing))
    if not isinstance(model.card, ModelCard):
        raise ContractError(f"Model {name}'s card must be a core.card.ModelCard, not {type(model.card).__name__}.")
    for attr in ("image_size", "channels"):
        value = getattr(model, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ContractError(f"Model {name}'s {attr} must be a whole number of 1 or more, not {value!r}.")
    if not isinstance(model.spaces, dict) or not model.spaces:
        raise ContractError(f"Model {name}'s spaces must be a dict of at least one LatentSpace by name.")
    if model.default_space not in model.spaces:
        raise ContractError(f"Model {name}'s default_space '{model.default_space}' is not one of its spaces "
                            f"({', '.join(model.spaces)}).")
