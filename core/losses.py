"""Image-distance losses for projection, selectable by name.

A loss maps (reconstruction, target), both (N, C, H, W) in [-1, 1], to one
value per image. Backends or plugins add losses with :func:`register_loss`
(StyleGAN adds LPIPS when its VGG16 weights are available). ``available()``
lets the UI offer only what can run now, and say which loss was used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Loss:
    name: str
    description: str
    build: Callable[[torch.device], LossFn]  # builds (and caches) the callable on a device
    is_available: Callable[[], bool] = lambda: True


_LOSSES: dict[str, Loss] = {}
_BUILT: dict[tuple[str, str], LossFn] = {}


def register_loss(loss: Loss) -> None:
    _LOSSES[loss.name] = loss


def available() -> dict[str, str]:
    """Losses that can run now: name -> description."""
    return {n: loss.description for n, loss in _LOSSES.items() if loss.is_available()}


def get_loss(name: str, device: torch.device) -> LossFn:
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss '{name}'; choose one of {', '.join(_LOSSES)}.")
    loss = _LOSSES[name]
    if not loss.is_available():
        raise ValueError(f"The loss '{name}' is not available here: {loss.description}")
    key = (name, str(device))
    if key not in _BUILT:
        _BUILT[key] = loss.build(device)
    return _BUILT[key]


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).pow(2).flatten(1).mean(1)


register_loss(Loss("mse", "Pixel mean squared error: exact colours, blurry on details it cannot match.", lambda device: mse))
