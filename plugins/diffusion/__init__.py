"""Diffusion backends through diffusers: SD VAEs, unconditional DDPM/DDIM with DDIM inversion, any hub model.

Three sources, one loader (``plugins.diffusion.folder``):

- the catalog (``catalog.py``): four hub models, listed as "not downloaded" until fetched into the
  standard Hugging Face cache (``hub.py``);
- built-in folders: every sub-folder of ``plugins/diffusion/weights/`` (a pipeline written by
  ``save_pretrained``, e.g. the small digits model trained by ``python -m plugins.diffusion.train``),
  described by an optional ``card.json`` beside it;
- the user's own: ``--model FOLDER`` / ``--model owner/name`` in the CLI, or the Models tab's "add a
  model" (a server path or a hub id), through the ``FOLDER`` file loader.

Listing imports neither torch nor diffusers; ``load`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from core.card import ModelCard
from plugins.contract import DIGITS, FACES, FOLDER, ModelEntry

if TYPE_CHECKING:
    from core.model import LatentModel

WEIGHTS = Path(__file__).parent / "weights"
KNOWN_TAGS = {"faces": FACES, "digits": DIGITS}


def load_folder(folder: str | Path, card: ModelCard, steps: int | None = None) -> LatentModel:
    """Check ``folder`` (refusing code and foreign classes), build its diffusers module and wrap it."""
    from plugins.diffusion import folder as checks
    from plugins.diffusion.models import DEFAULT_STEPS, DiffusionModel, VAEModel

    found = checks.inspect(folder)
    module = checks.build(found)
    if found.kind == "UNet2DModel":
        return DiffusionModel(card, module, found.scheduler, steps or DEFAULT_STEPS)
    return VAEModel(card, module, found.kind, card.resolution or found.sample_size or None)


def _card_from_folder(folder: Path, name: str, title: str | None = None, source: str = "") -> tuple[ModelCard, tuple[str, ...]]:
    """A card from the folder's optional ``card.json`` (title, description, trained_on, resolution, licence, tags)."""
    info: dict = {}
    if (folder / "card.json").is_file():
        try:
            info = json.loads((folder / "card.json").read_text())
        except ValueError:
            info = {}
    card = ModelCard(
        name=name, title=title or info.get("title") or f"diffusers model {folder.name}",
        description=info.get("description", "A diffusers model from a local folder."),
        trained_on=info.get("trained_on", "not stated (see the folder's own documentation)"),
        resolution=int(info.get("resolution", 0) or 0), licence=info.get("licence", "not stated"),
        source=source or str(folder), attribution=info.get("attribution", ""),
    )
    tags = tuple(KNOWN_TAGS[t] for t in info.get("tags", []) if t in KNOWN_TAGS)
    return card, tags


def _builtin_entries() -> list[ModelEntry]:
    entries = []
    if not WEIGHTS.is_dir():
        return entries
    for folder in sorted(p for p in WEIGHTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if not ((folder / "model_index.json").is_file() or (folder / "config.json").is_file()):
            continue
        card, tags = _card_from_folder(folder, f"diffusion/{folder.name}", source="built-in")
        tags = tags or tuple(tag for word, tag in KNOWN_TAGS.items() if word in folder.name)  # weights/digits: DIGITS
        entries.append(ModelEntry(card=card, load=lambda f=folder, c=card: load_folder(f, c), tags=tags))
    return entries


def add_path(path: str | Path, *, title: str | None = None, tags: tuple[str, ...] = (), copy: bool = False) -> ModelEntry:
    """A user's diffusers folder or hub id as an entry (checked now: refusals are ValueErrors); ``copy`` is moot
    for folders, which are read where they are."""
    from plugins.diffusion import catalog, hub
    from plugins.diffusion import folder as checks

    text = str(path)
    folder = Path(text).expanduser()
    if folder.is_dir():
        checks.inspect(folder)  # refuse code, foreign classes and conditional models before listing it
        card, own_tags = _card_from_folder(folder, str(folder.resolve()), title)
        return ModelEntry(card=card, load=lambda: load_folder(folder, card), tags=tuple(dict.fromkeys((*own_tags, *tags))))
    if not hub.looks_like_hub_id(text):
        raise ValueError(f"{text} is neither a folder nor a Hugging Face Hub id (owner/name).")
    known = catalog.by_repo(text)
    if known is not None:
        entry = catalog.entry(known)
        entry.tags = tuple(dict.fromkeys((*entry.tags, *tags)))
        return entry
    card = ModelCard(name=text, title=title or text, description=f"{text} from the Hugging Face Hub (its model card there "
                     "states its licence and training data).", trained_on="see the repository's model card",
                     resolution=0, licence="see the repository's model card", source=f"https://huggingface.co/{text}")
    return catalog.hub_entry(text, card, tags)


def get_models() -> list[ModelEntry]:
    from plugins.diffusion import catalog

    return [*_builtin_entries(), *catalog.entries()]


def get_file_loaders() -> dict:
    return {FOLDER: add_path}
