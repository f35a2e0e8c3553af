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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.card import ModelCard
from core.losses import Loss, LossFn

if TYPE_CHECKING:
    from core.model import LatentModel

__all__ = ["DIGITS", "FACES", "FOLDER", "LOCAL_FILE", "FileLoader", "Loss", "LossFn", "ModelEntry"]

FACES = "faces"  # photos of faces: the Family tab offers it, uploads are face-aligned
DIGITS = "digits"  # handwritten digits
LOCAL_FILE = "stylegan-local"  # added from a file the user supplied (not from a catalog)
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
