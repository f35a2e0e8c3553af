"""Where Latent Lab keeps files that outlive a session (downloaded weights, caches).

``$LATENT_LAB_CACHE`` overrides the default ``$XDG_CACHE_HOME/latent_lab``
(``~/.cache/latent_lab``). Uploaded photos never go here.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """A folder inside the user cache, created on demand."""
    root = os.environ.get("LATENT_LAB_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latent_lab"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
