"""Where the face is in an aligned crop: a soft mask from the 68 landmarks.

Projection should fit the person, not the backdrop, the hair beyond the crop or the clothes, which a
face model mostly cannot draw anyway and which otherwise pull the latent away from the face. The mask
is the hull of the jaw line and the eyebrows raised by a forehead (iBUG points 0-16 and 17-26), then
feathered so that the fit has no hard edge to follow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from core.faces.align import gaussian_blur

FOREHEAD = 0.55  # forehead height above the brows, as a fraction of the eye-to-mouth distance
FEATHER = 0.03  # Gaussian sigma of the edge, as a fraction of the crop side


def face_polygon(landmarks: np.ndarray) -> np.ndarray:
    """Points (K, 2) of the face outline: jaw line and brows lifted by a forehead, as a convex hull."""
    from scipy.spatial import ConvexHull  # deferred: scipy.spatial is slow to import; only masks need it

    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"A face mask needs the 68 iBUG landmarks, got an array of shape {lm.shape}.")
    eyes = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    mouth = (lm[48] + lm[54]) / 2
    up = eyes - mouth
    forehead = lm[17:27] + FOREHEAD * up
    points = np.concatenate([lm[0:17], lm[17:27], forehead])
    return points[ConvexHull(points).vertices]


def face_mask(landmarks: np.ndarray, size: int, feather: float = FEATHER) -> np.ndarray:
    """(size, size) float32 weights in [0, 1]: 1 on the face, 0 on the background, a soft edge just outside the outline.

    ``landmarks`` are the 68 points in the pixels of the ``size`` x ``size`` aligned crop
    (``core.faces.to_aligned`` maps a photo's landmarks there).
    """
    outline = face_polygon(landmarks)
    if feather > 0:  # push the outline out by two sigmas so the soft edge lies beyond the jaw and brows, not on them
        centre = outline.mean(0)
        radial = outline - centre
        outline = outline + 2 * feather * size * radial / np.linalg.norm(radial, axis=1, keepdims=True).clip(1e-6)
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in outline], fill=255)
    mask = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    if feather > 0:
        mask = gaussian_blur(mask, feather * size)
    return np.clip(mask[..., 0], 0.0, 1.0)


def as_weights(mask, n: int = 1):
    """A mask (H, W), (N, H, W) or (N, 1, H, W), array or tensor, as float weights (N or 1, 1, H, W) in [0, 1]."""
    import torch  # deferred: core.faces is read by start-up paths that must not load torch

    w = torch.as_tensor(np.asarray(mask, dtype=np.float32) if not isinstance(mask, torch.Tensor) else mask).float()
    if w.ndim == 2:
        w = w[None, None]
    elif w.ndim == 3:
        w = w[:, None]
    if w.ndim != 4 or w.shape[1] != 1:
        raise ValueError(f"Pixel weights must be (H, W), (N, H, W) or (N, 1, H, W); got shape {tuple(w.shape)}.")
    return w.clamp(0.0, 1.0)


def composite(recon, crop, mask):
    """The reconstruction inside the face mask, the photo's crop outside it: for display only.

    ``recon`` (N, C, h, w) and ``crop`` (N or 1, C, H, W) are images in [-1, 1]; ``mask`` is the face mask at
    the crop's size (any shape :func:`as_weights` takes). The reconstruction is resized to the crop. Never
    score this image: outside the mask it is the photo itself, so it would flatter the model.
    """
    import torch  # deferred: core.faces is read by start-up paths that must not load torch

    crop = crop.to(recon.device, recon.dtype)
    w = as_weights(mask).to(recon.device, recon.dtype)
    if w.shape[-2:] != crop.shape[-2:]:
        raise ValueError(f"The mask is {tuple(w.shape[-2:])} but the crop is {tuple(crop.shape[-2:])}; make it at the crop's size.")
    if recon.shape[-2:] != crop.shape[-2:]:
        recon = torch.nn.functional.interpolate(recon, size=crop.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    if recon.shape[1] != crop.shape[1]:
        raise ValueError(f"The reconstruction has {recon.shape[1]} channels but the crop has {crop.shape[1]}.")
    return w * recon + (1 - w) * crop
