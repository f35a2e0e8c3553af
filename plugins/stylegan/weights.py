"""Safetensors cache of generators read from network pickles.

A pickle is parsed once (safely, see :mod:`plugins.stylegan.pickle_loader`); the generator is
then stored as ``model.safetensors`` + ``config.json`` in a folder named after the pickle's
SHA-256, so later loads read no pickle at all and are fast (the weights are memory-mapped).
Folders are written to a temporary name and renamed into place, so a crash or a concurrent
writer never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from plugins.stylegan.download import file_sha256
from plugins.stylegan.pickle_loader import NetworkPickleError, build_checked, load_network_pickle

FORMAT = "latent-lab-stylegan"
CACHE_VERSION = 1  # bump when the stored layout or our module names change
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def save_generator(G: torch.nn.Module, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``G`` as ``model.safetensors`` + ``config.json`` into ``folder`` (created if needed)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {"format": FORMAT, "version": CACHE_VERSION, **G.config, **({"source": extra} if extra else {})}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    return folder


def load_generator(folder: str | Path) -> torch.nn.Module:
    """A generator saved by :func:`save_generator` (eval mode, CPU). Reads no pickle.

    Built like a pickle's generator (:func:`pickle_loader.build_checked`): shapes first, memory once they agree."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"'{folder.name}' holds no {CONFIG_NAME}: it is not a saved StyleGAN generator.") from None
    except json.JSONDecodeError as e:
        raise NetworkPickleError(f"The {CONFIG_NAME} of '{folder.name}' is not valid JSON ({e}).") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("version") != CACHE_VERSION:
        raise NetworkPickleError(f"'{folder.name}' was not written by this version of the StyleGAN cache.")
    config = {k: v for k, v in config.items() if k not in ("format", "version", "source")}
    try:
        tensors = load_file(str(folder / WEIGHTS_NAME))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise NetworkPickleError(f"The cached {WEIGHTS_NAME} of '{folder.name}' is missing or unreadable ({type(e).__name__}).") from None
    return build_checked(config, tensors, f"the cached generator '{folder.name}'")


def _digest(path: Path, cache_root: Path) -> str:
    """SHA-256 of the pickle, remembered per (path, size, mtime) so unchanged files are not re-hashed."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = cache_root / "digests.json"
    try:
        index = json.loads(index_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        index = {}
    if isinstance(index, dict) and isinstance(index.get(key), str) and len(index[key]) == 64:
        return index[key]
    digest = file_sha256(path)
    index = index if isinstance(index, dict) else {}
    index[key] = digest
    tmp = cache_root / f".digests-{uuid.uuid4().hex}.json"
    tmp.write_text(json.dumps(index, indent=0))
    os.replace(tmp, index_path)
    return digest


def cache_folder(pkl_path: str | Path, cache_root: str | Path | None = None) -> Path:
    """Where the converted form of this pickle lives (whether or not it exists yet)."""
    root = Path(cache_root) if cache_root is not None else _default_root()
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{_digest(Path(pkl_path), root)}-v{CACHE_VERSION}"


def _default_root() -> Path:
    from core.paths import cache_dir

    return cache_dir("stylegan")


def load_cached(pkl_path: str | Path, cache_root: str | Path | None = None) -> torch.nn.Module:
    """The generator of a network pickle, converted once to safetensors and read from the cache afterwards."""
    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise FileNotFoundError(f"Network pickle '{pkl_path.name}' does not exist.")
    folder = cache_folder(pkl_path, cache_root)
    if (folder / CONFIG_NAME).is_file():
        try:
            return load_generator(folder)
        except (NetworkPickleError, FileNotFoundError):
            shutil.rmtree(folder, ignore_errors=True)  # a damaged entry: rebuild it from the pickle
    G = load_network_pickle(pkl_path)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex}"
    try:
        save_generator(G, tmp, extra={"pickle": pkl_path.name, "sha256": folder.name.split("-")[0]})
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return G
