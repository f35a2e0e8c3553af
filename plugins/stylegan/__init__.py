"""StyleGAN2 / StyleGAN3 backend: NVIDIA's published checkpoints and the user's own pickles.

``get_models()`` lists every catalog checkpoint without touching the network
or importing torch: each entry is "ready" when its pickle is on disk, else
"not downloaded", and ``download(progress)`` fetches it. Loading goes through
the safe pickle loader and its safetensors cache (``weights.load_cached``), so
only the first load parses the pickle; ``converted.json`` remembers which cache
folder holds each checkpoint, so it stays loadable if the pickle is deleted. Users can add a local ``.pkl`` (a path
or an upload) with :func:`register_local_pickle` / :func:`local_model_entry`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.card import ModelCard
from core.paths import cache_dir
from plugins.contract import FACES, LOCAL_FILE, FileLoader, Loss, ModelEntry
from plugins.stylegan.catalog import CHECKPOINTS, Checkpoint

if TYPE_CHECKING:
    from core.model import LatentModel
    from plugins.registry import Registry
    from plugins.stylegan.download import Progress, Verify

LOCAL_PREFIX = "stylegan/local/"

def _lpips_available() -> bool:
    from plugins.stylegan import lpips  # torch only, imported when the UI lists losses

    return lpips.is_available()


def _lpips_build(device: Any) -> Any:
    from plugins.stylegan import lpips

    return lpips.build_loss(device)


def _lpips_download(progress: Progress | None = None) -> Path:
    from plugins.stylegan import lpips

    return lpips.download(progress)


# LPIPS needs NVIDIA's vgg16.pt, fetched like the checkpoints, so this plugin offers it (``get_losses``); it
# appears in ``core.losses.available()`` once the file is in the cache.
LPIPS = Loss(
    "lpips",
    "LPIPS with VGG16 (Zhang et al. 2018), NVIDIA's weights: closest to human judgement; needs vgg16.pt "
    "(python -m plugins.stylegan.lpips --download).",
    _lpips_build,
    _lpips_available,
    _lpips_download,
)


def get_losses() -> list[Loss]:
    """The losses this plugin adds (the registry registers them at discovery)."""
    return [LPIPS]


def get_file_loaders() -> dict[str, FileLoader]:
    """Model files this plugin reads: NVIDIA-format network pickles (checked by the safe loader)."""
    return {".pkl": local_model_entry}

# ``download`` is imported on use, so ``python -m plugins.stylegan.download`` does not import itself twice.


def __getattr__(name: str) -> Any:
    if name in ("DownloadError", "NotDownloadedError"):
        from plugins.stylegan import download

        return getattr(download, name)
    raise AttributeError(f"module 'plugins.stylegan' has no attribute '{name}'")


def safe_load_check(path: Path) -> Any:
    """The default verification: the file is a complete pickle that the safe loader turns into a generator."""
    from plugins.stylegan.download import verify_network_pickle

    return verify_network_pickle(path)


# ----- catalog checkpoints -------------------------------------------------------------


def checkpoint_path(ckpt: Checkpoint) -> Path:
    """Where the pickle of ``ckpt`` lives once downloaded (also where to put it by hand)."""
    from plugins.stylegan.download import pickles_dir

    return pickles_dir() / ckpt.filename


def _converted_index() -> Path:
    return cache_dir("stylegan") / "converted.json"


def _converted_folder(ckpt: Checkpoint) -> Path | None:
    """The safetensors copy of ``ckpt`` made at its first load, if it is still there."""
    try:
        folder_name = json.loads(_converted_index().read_text()).get(ckpt.name)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(folder_name, str) or not folder_name or "/" in folder_name or "\\" in folder_name:
        return None
    folder = cache_dir("stylegan") / folder_name
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def _remember_converted(ckpt: Checkpoint, folder: Path) -> None:
    """Note which cache folder holds ``ckpt``, so it stays loadable if the user deletes the pickle."""
    index_path = _converted_index()
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    index = index if isinstance(index, dict) else {}
    if index.get(ckpt.name) == folder.name:
        return
    index[ckpt.name] = folder.name
    tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)


def checkpoint_status(ckpt: Checkpoint) -> str:
    """Return "ready" when the pickle or its safetensors copy is on disk, else "not downloaded"."""
    return "ready" if checkpoint_path(ckpt).is_file() or _converted_folder(ckpt) else "not downloaded"


def download_checkpoint(ckpt: Checkpoint, progress: Progress | None = None, verify: Verify | None = safe_load_check) -> Path:
    """Fetch ``ckpt`` into the cache (resumable, verified by the safe loader); a no-op when it is already there.

    Raises ``download.DownloadError`` with a plain message.
    """
    from plugins.stylegan.download import fetch

    return fetch(ckpt.url, checkpoint_path(ckpt), progress=progress, verify=verify)


def load_checkpoint(ckpt: Checkpoint) -> LatentModel:
    """The checkpoint's model, set up for its subject (faces are tuned after projection) with its latent bank
    kept in the user cache and made in the background now if it is not there yet (``plugins.stylegan.start``)."""
    from plugins.stylegan.model import prepare

    return prepare(_load_checkpoint(ckpt), faces=FACES in ckpt.tags, bank_dir=cache_dir("stylegan", "banks"), warm=True)


def _load_checkpoint(ckpt: Checkpoint) -> LatentModel:
    from plugins.stylegan.download import NotDownloadedError

    path = checkpoint_path(ckpt)
    if path.is_file():
        from plugins.stylegan import weights

        model = load_pickle_model(path, ckpt.card())
        if model.image_size != ckpt.resolution:  # e.g. another file put there by hand
            raise ValueError(
                f"The file at {path} holds a {model.image_size} px generator, but {ckpt.name} is {ckpt.resolution} px: "
                f"it is not {ckpt.filename}. Delete it and press Download weights (or put the right file there, from {ckpt.url})."
            )
        with contextlib.suppress(OSError):  # only a convenience: the pickle still loads without it
            _remember_converted(ckpt, weights.cache_folder(path, cache_dir("stylegan")))  # cheap: the digest is indexed
        return model
    folder = _converted_folder(ckpt)
    if folder is not None:  # the pickle was deleted, its converted copy remains
        from plugins.stylegan.model import StyleGANModel

        return StyleGANModel.from_folder(folder, ckpt.card())
    raise NotDownloadedError(
        f"{ckpt.card().title} is not downloaded yet: press Download weights in its model panel, or put the file at {path} (from {ckpt.url})."
    )


def catalog_entry(ckpt: Checkpoint) -> ModelEntry:
    """The registry entry of a catalog checkpoint (nothing is read or fetched here)."""
    return ModelEntry(
        card=ckpt.card(),
        load=partial(load_checkpoint, ckpt),
        status=partial(checkpoint_status, ckpt),
        download=partial(download_checkpoint, ckpt),
        tags=ckpt.tags,
    )


# ----- loading ---------------------------------------------------------------------------


def load_pickle_model(path: str | os.PathLike, card: ModelCard, cache_root: str | os.PathLike | None = None) -> LatentModel:
    """A LatentModel from a network pickle, through the safetensors cache (the pickle is read once).

    ``cache_root`` moves that cache (a session's private upload keeps its converted copy in the session folder).
    """
    from plugins.stylegan.model import StyleGANModel

    return StyleGANModel.from_pickle(Path(path), card, cache_root=cache_root or cache_dir("stylegan"))


# ----- the user's own pickles ------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def _local_card(name: str, resolution: int, title: str | None, source: str, original: str) -> ModelCard:
    return ModelCard(
        name=name,
        title=title or f"StyleGAN (local file {original})",
        description=f"A network pickle supplied by the user ({original}), loaded without running any code from it.",
        trained_on="unknown (not stated in the file)",
        resolution=resolution,  # 0 when not known yet
        licence="unknown: check the terms of whoever made this file (NVIDIA's own pickles are non-commercial)",
        source=source,
        commercial_use=False,  # we cannot know; the safe assumption for StyleGAN pickles
    )


def _reason(e: Exception, src: Path) -> str:
    """Why ``src`` was refused, naming no folder (a visitor must not learn server paths) and the file only once."""
    text = str(e)
    for full in {str(src.resolve()), str(src.absolute()), str(src)}:
        text = text.replace(full, src.name)
    for prefix in (f"'{src.name}' was refused: ", f"{src.name} (G_ema): "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def local_model_entry(
    path: str | os.PathLike,
    *,
    title: str | None = None,
    tags: tuple[str, ...] = (),
    copy: bool = False,
    cache_root: str | os.PathLike | None = None,
    verify: Verify | None = safe_load_check,
) -> ModelEntry:
    """A registry entry for a user's ``.pkl`` file, checked before it is offered.

    The file is verified (by default: loaded by the safe loader, nothing in it
    is executed); a bad or tampered file raises ValueError with a plain
    message. ``copy=True`` keeps a copy in the user cache (for uploads, whose
    temporary file may vanish); those copies are listed again at the next
    start. ``tags=(FACES,)`` offers the model to the Family tab. The name is
    ``stylegan/local/<file stem>-<first 8 hex digits of its sha256>``. ``cache_root`` moves the
    safetensors copy made on first load (default: the user cache).
    """
    from plugins.stylegan.download import file_sha256

    src = Path(path).expanduser()
    if not src.is_file():
        raise ValueError(f"No file at {src.name}: give the path of a StyleGAN network pickle (.pkl).")
    if src.stat().st_size == 0:
        raise ValueError(f"{src.name} is empty: it is not a StyleGAN network pickle.")
    stem = f"{_slug(Path(src.name).stem)}-{file_sha256(src)[:8]}"
    target = cache_dir("stylegan", "local") / f"{stem}.pkl" if copy else src
    generator: Any = None
    if verify is not None:
        try:
            generator = verify(src)
        except ImportError:  # our loader is missing: not the file's fault, so not a ValueError
            raise
        except Exception as e:
            raise ValueError(f"{src.name} is not a usable StyleGAN network pickle: {_reason(e, src)}") from e
    info = {
        "title": title,
        "tags": list(tags),
        "resolution": int(getattr(generator, "img_resolution", 0) or 0),
        "original": src.name,
        "source": f"uploaded file {src.name}" if copy else f"local file {src.name}",  # every visitor sees it: no folder
    }
    if copy:
        if not target.is_file():
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)  # only a verified, complete copy gets the final name
        try:  # adding the same file again keeps what was said about it before, unless said anew
            old = json.loads(target.with_suffix(".json").read_text())
            info = {**old, **{k: v for k, v in info.items() if v}} if isinstance(old, dict) else info
        except (OSError, ValueError):
            pass
        tmp = target.with_name(target.name + ".json.part")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, target.with_suffix(".json"))
    return _entry_for_local(target, stem, info, cache_root)


def _entry_for_local(path: Path, stem: str, info: dict, cache_root: str | os.PathLike | None = None) -> ModelEntry:
    name = LOCAL_PREFIX + stem
    card = _local_card(
        name, int(info.get("resolution") or 0), info.get("title"), str(info.get("source")), str(info.get("original"))
    )

    def status() -> str:
        return "ready" if path.is_file() else "not downloaded"

    def load() -> LatentModel:
        from plugins.stylegan.download import NotDownloadedError

        if not path.is_file():
            raise NotDownloadedError(f"{card.title} is gone: its file {path.name} no longer exists; add it again.")
        from plugins.stylegan.model import prepare

        return prepare(load_pickle_model(path, card, cache_root=cache_root), faces=FACES in tags)

    tags = (LOCAL_FILE, *(str(t) for t in info.get("tags") or ()))
    return ModelEntry(card=card, load=load, status=status, tags=tags)


def register_local_pickle(
    path: str | os.PathLike,
    registry: Registry | None = None,
    *,
    title: str | None = None,
    tags: tuple[str, ...] = (),
    copy: bool = True,
    verify: Verify | None = safe_load_check,
) -> str:
    """Verify a user's pickle (a path or an uploaded file), add it to ``registry`` and return its entry name.

    Adding the same file again returns the same name (the name is content-based).
    """
    entry = local_model_entry(path, title=title, tags=tags, copy=copy, verify=verify)
    if registry is not None:
        registry.add_or_update(entry, plugin="plugins.stylegan")
    return entry.name


def _saved_local_entries() -> list[ModelEntry]:
    """Entries for pickles uploaded earlier (verified copies in the cache; loading checks them again)."""
    entries = []
    try:
        saved = sorted(cache_dir("stylegan", "local").glob("*.pkl"))
    except OSError:  # an unusable cache folder must not hide the catalog
        return []
    for pkl in saved:
        try:
            info = json.loads(pkl.with_suffix(".json").read_text())
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            info = {"original": pkl.name, "source": f"uploaded file {pkl.name}"}
        entries.append(_entry_for_local(pkl, pkl.stem, info))
    return entries


def get_models() -> list[ModelEntry]:
    """Every catalog checkpoint plus earlier uploads. Offline, torch-free and quick."""
    return [catalog_entry(c) for c in CHECKPOINTS] + _saved_local_entries()
