"""A latent direction: the type, moving latents along it, and its file format.

A :class:`Direction` is a unit vector in one latent space plus how it was made
(method, data, held-out metrics), so the UI can say how far to trust a slider.
Directions are saved as safetensors (vectors) with JSON metadata in the header:
no pickle, and each file says how its directions were made. How directions are
found is ``core.direction_fit``; users' labelled photos are ``core.user_directions``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

FORMAT = "latent_lab.directions/1"
METHODS = ("pca", "logistic", "ridge")


@dataclass
class Direction:
    """A unit vector in one latent space, and how it was made (shown in the UI)."""

    name: str
    vector: np.ndarray  # float32, shaped like ONE latent (for a per-layer space: one layer's vector)
    space: str
    method: str  # "pca", "logistic" or "ridge"
    source: str = ""  # what data it was made from
    metrics: dict = field(default_factory=dict)  # held-out accuracy / R2 / MAE, sample counts, ...
    units: str = ""  # what ``scale`` measures, e.g. "years per unit"
    scale: float = 1.0  # ridge: units of the target per unit step; logistic: log-odds per unit step
    std: float = 1.0  # spread (standard deviation) of the data's latents along the vector
    layers: list[int] | None = None  # per-layer spaces: the layers it applies to (None: all)
    created: str = field(default_factory=lambda: date.today().isoformat())

    def __post_init__(self) -> None:
        self.vector = np.asarray(self.vector, dtype=np.float32)
        if self.method not in METHODS:
            raise ValueError(f"Unknown direction method '{self.method}'; expected one of {', '.join(METHODS)}.")

    def describe(self) -> str:
        """One line for the UI: name, method, data and the held-out result."""
        m = self.metrics
        if "heldout_accuracy" in m:
            result = f"held-out accuracy {m['heldout_accuracy']:.0%} (chance {m.get('chance', 0.5):.0%})"
        elif "heldout_r2" in m:
            result = f"held-out R² {m['heldout_r2']:.2f}, MAE {m['heldout_mae']:.3g}"
        elif "explained_variance_ratio" in m:
            result = f"{m['explained_variance_ratio']:.1%} of the variance"
        else:
            result = "no held-out test"
        src = f" from {self.source}" if self.source else ""
        warn = "" if self.reliable else " — no better than chance on held-out data: treat this slider as unreliable"
        return f"{self.name}: {self.method}{src}; {result}{warn}"

    @property
    def reliable(self) -> bool:
        """Whether the direction predicted its label on held-out data clearly better than chance."""
        m = self.metrics
        if "heldout_accuracy" in m:
            return m["heldout_accuracy"] >= m.get("chance", 0.5) + 0.05
        if "heldout_r2" in m:
            return m["heldout_r2"] >= 0.05
        return True  # unsupervised (PCA) directions make no claim to test



# ----- use --------------------------------------------------------------------------------


def apply_direction(
    latents: torch.Tensor, direction: Direction, amount, layers: Sequence[int] | None = None, space: str | None = None
) -> torch.Tensor:
    """``latents + amount * vector`` (a new tensor).

    ``latents``: one latent shaped like the vector, a batch (N, *vector), or a
    per-layer batch (N, L, *vector) where only ``layers`` (default: the
    direction's own, else all) move. Given ``layers``, an (L, *vector) tensor
    is one per-layer latent. ``amount``: a number or one per latent (N,).
    """
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"apply_direction needs a torch tensor of latents, got {type(latents).__name__}.")
    if space is not None and direction.space and space != direction.space:
        raise ValueError(f"The direction '{direction.name}' lives in space '{direction.space}', not '{space}'.")
    vec = torch.as_tensor(direction.vector, dtype=latents.dtype, device=latents.device)
    k, vs, ls = vec.ndim, tuple(vec.shape), tuple(latents.shape)
    amount = torch.as_tensor(amount, dtype=latents.dtype, device=latents.device)
    if ls == vs:
        return latents + amount * vec
    if amount.ndim > 1:
        raise ValueError("amount must be a number or one number per latent.")
    if amount.ndim == 1 and amount.shape[0] != ls[0]:
        raise ValueError(f"Got {amount.shape[0]} amounts for {ls[0]} latents.")
    if len(ls) == k + 1 and ls[1:] == vs:
        if layers is not None:  # explicit layers: one per-layer latent (L, *vector)
            if amount.ndim:
                raise ValueError("One per-layer latent takes a single amount.")
            return apply_direction(latents[None], direction, amount, layers)[0]
        return latents + amount.reshape(-1, *[1] * k) * vec
    if len(ls) == k + 2 and ls[2:] == vs:
        chosen = layers if layers is not None else direction.layers
        chosen = list(range(ls[1])) if chosen is None else [int(i) for i in chosen]
        if any(not 0 <= i < ls[1] for i in chosen):
            raise ValueError(f"Layer indices {chosen} are out of range for latents with {ls[1]} layers.")
        mask = torch.zeros(ls[1], dtype=latents.dtype, device=latents.device)
        mask[chosen] = 1
        return latents + amount.reshape(-1, *[1] * (k + 1)) * mask.reshape(1, -1, *[1] * k) * vec
    raise ValueError(f"The direction '{direction.name}' has shape {vs}, which does not fit latents of shape {ls}.")


# ----- files ------------------------------------------------------------------------------


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def save_directions(path: str | Path, directions: Sequence[Direction]) -> Path:
    """Write vectors as safetensors and everything else as JSON in its header (atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, meta = {}, []
    for i, d in enumerate(directions):
        tensors[f"direction_{i}"] = np.ascontiguousarray(d.vector, dtype=np.float32)
        info = {k: v for k, v in asdict(d).items() if k != "vector"}
        meta.append(_jsonable(info))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT, "directions": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_directions(path: str | Path) -> list[Direction]:
    """Read a file written by :func:`save_directions` (never runs code from it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No directions file at {path}.")
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise ValueError(f"{path.name} is not a Latent Lab directions file (format {header.get('format')!r}).")
            meta = json.loads(header["directions"])
            return [Direction(vector=f.get_tensor(f"direction_{i}"), **m) for i, m in enumerate(meta)]
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path.name} is not a readable directions file: {e}") from e
