"""The image convention of Latent Lab and conversions to and from it.

Every image that crosses the latent-model interface is a float32 tensor of
shape (N, C, H, W) with values in [-1, 1] (the GAN convention; C is 1 or 3).
PIL images and uint8 arrays (H, W, C) are only used at the edges (files, UI).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W), (H, W, C) or (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 array, got {a.dtype}.")
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"Expected an image array with 2-4 dimensions, got shape {a.shape}.")
    t = torch.from_numpy(np.array(a, copy=True)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) or (C, H, W) in [-1, 1] -> uint8 (N, H, W, C), clamped and rounded."""
    t = images.detach()
    if t.ndim == 3:
        t = t[None]
    t = ((t.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return t.permute(0, 2, 3, 1).cpu().numpy()


def from_pil(image: Image.Image, channels: int = 3) -> torch.Tensor:
    """PIL image -> (1, channels, H, W) in [-1, 1]."""
    mode = "RGB" if channels == 3 else "L"
    return from_uint8(np.asarray(image.convert(mode)))


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> list of PIL images (RGB, or L for 1 channel)."""
    out = []
    for a in to_uint8(images):
        out.append(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a))
    return out


def psnr(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak range 2).

    ``weights`` (N or 1, 1, H, W) make it the PSNR inside a region (e.g. a face mask): a weighted mean of the error.
    """
    err = (a.float() - b.float()).pow(2)
    if weights is None:
        mse = err.flatten(1).mean(1)
    else:
        w = weights.to(err.device, err.dtype).expand(err.shape[0], 1, *err.shape[2:])
        mse = (err * w).flatten(1).sum(1) / (w.flatten(1).sum(1) * err.shape[1]).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def enlarge(image: Image.Image, min_side: int) -> Image.Image:
    """Enlarge by the smallest integer factor that reaches ``min_side`` (nearest neighbour, so an
    8x8 digit shows its real pixels); images already that large are returned as they are."""
    if not min_side or min(image.size) >= min_side:
        return image
    k = -(-min_side // min(image.size))
    return image.resize((image.size[0] * k, image.size[1] * k), Image.NEAREST)


def channel_images(latent, spatial: tuple[int, ...]) -> list[tuple[np.ndarray, float]]:
    """A spatial latent's channels as greyscale uint8 images, each with its scale s: -s is black, 0 mid-grey, +s white
    (s = the channel's largest magnitude), so a sign and a zero read the same in every channel. What a VAE's
    4 x H/8 x W/8 latent looks like."""
    z = np.asarray(latent, dtype=np.float32).reshape(-1, *spatial)[0]
    out = []
    for c in z:
        s = float(np.abs(c).max())
        out.append((((c / max(s, 1e-8) + 1) * 127.5).round().clip(0, 255).astype(np.uint8), s))
    return out


def channel_grid(latent, spatial: tuple[int, ...]) -> np.ndarray:
    """A latent's channels (``channel_images``) side by side as one greyscale uint8 image, white gaps between them."""
    chans = [c for c, _ in channel_images(latent, spatial)]
    gap = np.full((chans[0].shape[0], max(1, chans[0].shape[1] // 16)), 255, np.uint8)
    return np.concatenate([p for c in chans for p in (c, gap)][:-1], axis=1)
