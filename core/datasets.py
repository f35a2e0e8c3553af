"""Labelled sets of latents for the latent map and for fitting directions.

A model offers datasets by name (``LatentModel.datasets()``): its own training
data, encoded once and shipped with the weights, or fresh samples. Images are
optional: where the data may not be redistributed (photos of people), the map
shows decodings of the latents instead, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class LatentDataset:
    name: str
    latents: np.ndarray  # (N, *space shape), float32
    space: str
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # label name -> (N,) values
    description: str = ""
    images: Callable[[np.ndarray], torch.Tensor] | None = None  # indices -> real images (N, C, H, W) in [-1, 1]

    def __post_init__(self) -> None:
        self.latents = np.asarray(self.latents, dtype=np.float32)
        for k, v in self.labels.items():
            if len(v) != len(self.latents):
                raise ValueError(f"Label '{k}' has {len(v)} values for {len(self.latents)} latents.")

    def __len__(self) -> int:
        return len(self.latents)


def sample_dataset(model, n: int = 1000, seed: int = 0, space: str | None = None) -> LatentDataset:
    """Fresh samples from the model's prior: a dataset any model can offer."""
    space = model.check_space(space)
    with torch.no_grad():
        lat = model.sample(n, seed=seed, space=space).cpu().numpy()
    return LatentDataset(
        f"samples ({n}, seed {seed})", lat, space, {},
        f"{n} random samples of {model.card.title} in space '{space}' (no labels).",
    )
