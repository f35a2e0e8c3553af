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
    from scipy.spatial import ConvexHull

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
    """(size, size) float32 weights in [0, 1]: 1 on the face, 0 on the background, a soft edge between.

    ``landmarks`` are the 68 points in the pixels of the ``size`` x ``size`` aligned crop
    (``core.faces.to_aligned`` maps a photo's landmarks there).
    """
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in face_polygon(landmarks)], fill=255)
    mask = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    if feather > 0:
        mask = gaussian_blur(mask, feather * size)
    return np.clip(mask[..., 0], 0.0, 1.0)
