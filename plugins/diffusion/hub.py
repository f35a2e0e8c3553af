"""Hugging Face Hub downloads for diffusers models: the standard HF cache, configs + weights only.

``snapshot_download`` with an explicit file list: every ``*.json`` config and, per component folder,
one weights file (``diffusion_pytorch_model.safetensors``; the ``.bin`` only where a folder has no
safetensors). A repository holding Python files is refused before anything is downloaded (Latent Lab
never runs model code). Downloads resume (huggingface_hub keeps ``.incomplete`` files) and report bytes
to a ``progress(done, total)`` callback. Offline (``HF_HUB_OFFLINE=1``, or no network) the error is a
plain sentence naming the repository and how to fetch it ahead, at once, without retries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def looks_like_hub_id(text: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    return bool(HUB_ID.match(str(text))) and not Path(str(text)).expanduser().exists()


def is_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def fetch_ahead(repo: str) -> str:
    return (f"fetch it ahead on a connected machine with `python -m plugins.diffusion.download {repo}` "
            f"(or `huggingface-cli download {repo}`) and copy the Hugging Face cache "
            f"(~/.cache/huggingface/hub), or pass a local folder instead")


def offline_message(repo: str) -> str:
    return f"{repo} is not in the Hugging Face cache and this machine is offline: {fetch_ahead(repo)}."


def cached_folder(repo: str) -> Path | None:
    """The cached snapshot of ``repo`` if its configs and weights are there, without touching the network."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, local_files_only=True, allow_patterns=["*.json", *[f"*{w}" for w in WEIGHTS]]))
    except Exception:  # LocalEntryNotFoundError and kin: not cached
        return None
    return folder if any(folder.rglob("*.json")) and any(f.name in WEIGHTS for f in folder.rglob("*")) else None


def choose_files(files: list[str], repo: str) -> list[str]:
    """The files to fetch from a repository listing: configs, and one weights file per folder (safetensors first).

    Raises ValueError for a repository with Python code or without diffusers weights.
    """
    code = sorted(f for f in files if f.endswith(".py"))
    if code:
        raise ValueError(f"{repo} contains Python code ({', '.join(code[:3])}): Latent Lab never runs a model's own code "
                         "(no trust_remote_code, no custom pipelines), so it is refused.")
    chosen = [f for f in files if f.endswith(".json")]
    folders = {str(PurePosixPath(f).parent) for f in files if PurePosixPath(f).name in WEIGHTS}
    for folder in sorted(folders):
        prefix = "" if folder == "." else folder + "/"
        names = [w for w in WEIGHTS if prefix + w in files]
        chosen.append(prefix + names[0])
    if not folders:
        raise ValueError(f"{repo} has no diffusers weights (diffusion_pytorch_model.safetensors or .bin); "
                         "Latent Lab reads UNet2DModel, AutoencoderKL, AutoencoderTiny and VQModel repositories.")
    return chosen


def download(repo: str, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch ``repo``'s configs and weights into the HF cache (resuming); returns the snapshot folder."""
    from huggingface_hub import HfApi, snapshot_download

    folder = cached_folder(repo)
    if folder is not None:
        return folder
    if is_offline():
        raise ConnectionError(offline_message(repo))
    try:
        files = HfApi().list_repo_files(repo)
    except Exception as e:
        raise ConnectionError(_network_message(repo, e)) from None
    wanted = choose_files(files, repo)
    tqdm_class = _progress_tqdm(progress) if progress is not None else None
    try:
        return Path(snapshot_download(repo, allow_patterns=wanted, tqdm_class=tqdm_class))
    except Exception as e:
        raise ConnectionError(_network_message(repo, e)) from None


def _network_message(repo: str, e: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError):
        return f"{repo} is gated on the Hugging Face Hub: accept its terms there and log in (`huggingface-cli login`)."
    if isinstance(e, RepositoryNotFoundError):
        return f"There is no Hugging Face repository {repo} (or it is private)."
    return f"{repo} could not be downloaded ({type(e).__name__}); {fetch_ahead(repo)}."


def _progress_tqdm(progress: Callable[[int, int | None], None]):
    """A tqdm class for snapshot_download whose byte counts go to ``progress(done, total)``."""
    from tqdm.auto import tqdm

    class Report(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            if self.unit == "B":
                progress(int(self.n), int(self.total) if self.total else None)
            return out

    return Report
