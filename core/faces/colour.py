"""Match a photo's face colours to what a face model draws, and undo it for display.

A model trained on one studio's photos has never seen a warm indoor cast or a dark, high-contrast face;
fitting those colours pulls the latent away from the person. Matching the face region's per-channel mean
and standard deviation to those of the model's own faces removes what the model cannot represent; the
inverse map puts the photo's colours back on the result for display. Measured in ``bench/identity.py``
(the ``masked+colour`` setting), which decides whether the app uses it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from core.model import LatentModel

MIN_STD = 0.02  # a flat channel (greyscale photo, blown highlights) must not be stretched without bound


def region_stats(images: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-image, per-channel mean and standard deviation (N, C, 1, 1) inside ``weights`` (N or 1, 1, H, W)."""
    w = weights.to(images.device, images.dtype).expand(images.shape[0], 1, *images.shape[2:])
    total = w.sum(dim=(2, 3), keepdim=True).clamp_min(1e-8)
    mean = (images * w).sum(dim=(2, 3), keepdim=True) / total
    variance = ((images - mean).square() * w).sum(dim=(2, 3), keepdim=True) / total
    return mean, variance.sqrt().clamp_min(MIN_STD)


@dataclass
class ColourMatch:
    """Per-image affine colour map from a photo's face statistics to the model's (``apply``) and back (``undo``)."""

    mean: torch.Tensor  # (N, C, 1, 1) the photo's face
    std: torch.Tensor
    ref_mean: torch.Tensor  # (1, C, 1, 1) the model's faces
    ref_std: torch.Tensor

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Photo colours -> the model's (what projection fits)."""
        return ((images - self.mean) / self.std * self.ref_std + self.ref_mean).clamp(-1, 1)

    def undo(self, images: torch.Tensor) -> torch.Tensor:
        """The model's colours -> the photo's (display only; scores are taken on the model's own output)."""
        return ((images - self.ref_mean) / self.ref_std * self.std + self.mean).clamp(-1, 1)

    def between(self, t: float | torch.Tensor) -> ColourMatch:
        """The map between the first (t = 0) and second (t = 1) image's colours, e.g. for a child of two parents.

        ``t`` is one weight, or one per image to map (N,), e.g. the frames of a father -> child -> mother walk.
        """
        t = torch.as_tensor(t, dtype=self.mean.dtype, device=self.mean.device).reshape(-1, 1, 1, 1)
        return ColourMatch(torch.lerp(self.mean[:1], self.mean[1:2], t), torch.lerp(self.std[:1], self.std[1:2], t),
                           self.ref_mean, self.ref_std)


STATS_SIDE = 64  # colour statistics need no detail: the model's faces are kept at most this size
_SAMPLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {n: its sample faces at <= STATS_SIDE px}


def model_faces(model: LatentModel, n: int = 128, seed: int = 0) -> torch.Tensor:
    """``n`` of the model's own faces (n, C, h, w) at most STATS_SIDE px, decoded once per model (a GAN is slow)."""
    cached = _SAMPLES.setdefault(model, {})
    if (n, seed) not in cached:
        images = model.generate(model.sample(n, seed=seed), batch_size=16)
        if images.shape[-1] > STATS_SIDE:
            images = torch.nn.functional.interpolate(images, size=(STATS_SIDE, STATS_SIDE), mode="area")
        cached[(n, seed)] = images
    return cached[(n, seed)]


def model_face_stats(model: LatentModel, weights: torch.Tensor, n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's typical face colours: mean over ``n`` samples of the face-region mean and std (1, C, 1, 1).

    ``weights`` (N or 1, 1, H, W) are the photos' face masks; their average stands for where a face lies.
    """
    images = model_faces(model, n)
    w = weights.float().mean(0, keepdim=True)
    if w.shape[-2:] != images.shape[-2:]:
        w = torch.nn.functional.interpolate(w, size=images.shape[-2:], mode="area")
    mean, std = region_stats(images, w)
    return mean.mean(0, keepdim=True), std.mean(0, keepdim=True)


def match_to_model(model: LatentModel, target: torch.Tensor, weights: torch.Tensor, n: int = 128) -> ColourMatch:
    """The colour map for targets (N, C, H, W) with face weights (N or 1, 1, H, W) onto ``model``'s face colours."""
    mean, std = region_stats(target.float(), weights)
    ref_mean, ref_std = model_face_stats(model, weights, n)
    return ColourMatch(mean, std, ref_mean.to(mean.device), ref_std.to(mean.device))


def match_to_each_other(target: torch.Tensor, weights: torch.Tensor) -> ColourMatch:
    """The colour map that gives every target (N, C, H, W) the same face colours: the average of their own.

    Why: a latent blend of a pale and a dark face decodes to a patchwork of the two; fitted on skin tones matched to
    their middle, two parents differ only in what the model can blend (shape, features), and ``between(t).undo`` puts a
    child's in-between tone back as one global map. Photos that already look alike are left almost as they are.
    """
    mean, std = region_stats(target.float(), weights)
    return ColourMatch(mean, std, mean.mean(0, keepdim=True), std.mean(0, keepdim=True))
