"""2-D affine helpers for looking at a photo rotated or rescaled and mapping points back.

All matrices are 3x3 and act on *continuous* pixel coordinates, in which pixel
(i, j) covers [i, i+1) x [j, j+1) and its centre is (i + 0.5, j + 0.5). That is
Pillow's convention for ``Image.transform``; detectors and landmark models
report pixel indices, so :func:`to_index` / :func:`from_index` convert.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def scaling(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def translation(tx: float, ty: float) -> np.ndarray:
    m = np.eye(3)
    m[:2, 2] = tx, ty
    return m


def rotation(angle: float, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Turn a ``size`` = (w, h) picture ``angle`` degrees counter-clockwise (as seen on screen) about its centre.

    Returns the matrix from source to destination coordinates and the size of
    the destination, which is enlarged so no corner is cut off. Multiples of
    90 degrees are exact (no rounding noise in the matrix).
    """
    w, h = size
    theta = np.deg2rad(angle)
    c, s = np.cos(theta), np.sin(theta)
    if float(angle) % 90 == 0:
        c, s = np.round(c), np.round(s)
    # On screen y points down, so a counter-clockwise turn is (x, y) -> (x c + y s, -x s + y c).
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = apply(rot, np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) - [w / 2, h / 2])
    span = corners.max(0) - corners.min(0)
    dw, dh = (int(np.ceil(v - 1e-6)) for v in span)
    return translation(dw / 2, dh / 2) @ rot @ translation(-w / 2, -h / 2), (dw, dh)


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a 3x3 affine matrix."""
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:2, :2].T + m[:2, 2]


def to_index(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) - 0.5


def from_index(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) + 0.5


def warp(image: Image.Image, src_to_dst: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Resample ``image`` into a ``size`` canvas where source point p lands at ``src_to_dst @ p`` (bilinear)."""
    inv = np.linalg.inv(src_to_dst)
    return image.transform(size, Image.AFFINE, tuple(inv[:2].ravel()), resample=Image.BILINEAR)
