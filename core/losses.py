"""Image-distance losses for projection, selectable by name.

A loss maps (reconstruction, target), both (N, C, H, W) in [-1, 1], to one
value per image. Backends or plugins add losses with :func:`register_loss`
(StyleGAN adds LPIPS when its VGG16 weights are available). ``available()``
lets the UI offer only what can run now, and say which loss was used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch  # deferred: plugins.contract reads this module at start-up, which must not load torch

# loss(recon (N, C, H, W), target (N or 1, C, H, W)) -> (N,): a target batch of 1 is broadcast to every recon.
# torch is imported on use: plugins register losses at listing time.
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Loss:
    name: str
    description: str
    build: Callable[[torch.device], LossFn]  # builds (and caches) the callable on a device
    is_available: Callable[[], bool] = lambda: True
    download: Callable[..., object] | None = None  # download(progress) fetches what is missing; progress(done, total)


_LOSSES: dict[str, Loss] = {}
_BUILT: dict[tuple[str, str], LossFn] = {}


def register_loss(loss: Loss) -> None:
    _LOSSES[loss.name] = loss


def available() -> dict[str, str]:
    """Losses that can run now: name -> description."""
    return {n: loss.description for n, loss in _LOSSES.items() if loss.is_available()}


def downloadable() -> dict[str, str]:
    """Losses that become available after a download: name -> description."""
    return {n: loss.description for n, loss in _LOSSES.items() if loss.download is not None and not loss.is_available()}


def download(name: str, progress: Callable[[int, int | None], None] | None = None) -> None:
    """Fetch what the loss ``name`` needs (its plugin's download: resumable, verified)."""
    loss = _LOSSES.get(name)
    if loss is None or loss.download is None:
        raise ValueError(f"The loss '{name}' has nothing to download.")
    loss.download(progress)


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


# ----- MS-SSIM + L1 (offline perceptual loss) -------------------------------------------------------------------------
# Zhao, Gallo, Frosio & Kautz 2017, "Loss Functions for Image Restoration with Neural Networks": the mix
# alpha * (1 - MS-SSIM) + (1 - alpha) * L1 with alpha = 0.84 beat L2 and L1 in their perceptual tests.
# MS-SSIM as in Wang, Simoncelli & Bovik 2003 (Gaussian window sigma 1.5, 11 taps, scale weights below,
# K1 = 0.01, K2 = 0.03) on images mapped from [-1, 1] to [0, 1] (the luminance term assumes non-negative
# intensities). Small images use fewer scales (down to 8 px, weights renormalised) and a window no wider than the image.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MIX_ALPHA = 0.84


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    import torch  # deferred: plugins.contract reads this module at start-up, which must not load torch

    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of every channel."""
    import torch  # deferred: plugins.contract reads this module at start-up, which must not load torch

    c = x.shape[1]
    x = torch.nn.functional.conv2d(x, g.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, g.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean luminance term l and contrast-structure term cs of SSIM."""
    size = min(11, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2  # odd
    g = _gaussian_window(size, 1.5, x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mx * mx
    syy = _blur(y * y, g) - my * my
    sxy = _blur(x * y, g) - mx * my
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return lum.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, min_side: int = 8) -> torch.Tensor:
    """Multi-scale SSIM per image of images in [-1, 1]: 1 = identical, near 0 = unrelated."""
    import torch  # deferred: plugins.contract reads this module at start-up, which must not load torch

    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) // 2**scales >= min_side:
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    value = torch.ones(x.shape[0], device=x.device)
    for i in range(scales):
        lum, cs = _ssim_terms(x, y, 1.0)
        term = lum * cs if i == scales - 1 else cs
        value = value * term.clamp_min(1e-4) ** weights[i]  # negative cs (anti-correlated) would make the power undefined
        if i < scales - 1:
            x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    return value


def ms_ssim_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """alpha (1 - MS-SSIM) + (1 - alpha) L1, with L1 on the [0, 1] scale (Zhao et al. 2017)."""
    l1 = (x - y).abs().flatten(1).mean(1) / 2
    return MIX_ALPHA * (1 - ms_ssim(x, y)) + (1 - MIX_ALPHA) * l1


register_loss(Loss("mse", "Pixel mean squared error: exact colours, blurry on details it cannot match.", lambda device: mse))
register_loss(
    Loss(
        "ms-ssim+l1",
        "0.84 (1 - MS-SSIM) + 0.16 L1 (Zhao et al. 2017): structure and contrast over exact values; no download.",
        lambda device: ms_ssim_l1,
    )
)
