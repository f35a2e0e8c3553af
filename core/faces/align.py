"""FFHQ-style face alignment.

Reproduces the procedure used to build the FFHQ dataset (Karras et al. 2019,
``ffhq-dataset`` recreation script): an oriented square is computed from the
eye centres and mouth corners, the photo is shrunk when the square is much
larger than the output, cropped with a border, padded by reflection with a
blurred, median-filled border when the square leaves the photo, and finally
resampled through the quad. Faces aligned this way match what FFHQ GANs
were trained on, which is what makes projection into them work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import fft


@dataclass(frozen=True)
class FivePoints:
    """Eye centres and mouth corners in image pixels (x, y); "left" = image left."""

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray

    @classmethod
    def from_68(cls, lm: np.ndarray) -> FivePoints:
        """From the iBUG 68-point layout (dlib): eyes 36-41 / 42-47, mouth corners 48 / 54."""
        lm = np.asarray(lm, dtype=np.float64)
        return cls(lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54])

    @property
    def inter_ocular(self) -> float:
        return float(np.hypot(*(self.eye_right - self.eye_left)))


def ffhq_quad(points: FivePoints) -> tuple[np.ndarray, float]:
    """The oriented crop square (4 corners, x/y) and its side length."""
    eye_avg = (points.eye_left + points.eye_right) * 0.5
    eye_to_eye = points.eye_right - points.eye_left
    mouth_avg = (points.mouth_left + points.mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def gaussian_blur(arr: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(arr, [sigma, sigma, 0])`` (mode "reflect") for an (H, W, C) array, by FFT.

    The same kernel and border rule, so results agree to float rounding
    (~1e-4), but the cost no longer grows with sigma: FFHQ's padding blurs with
    sigma = 2 % of the face square (30 px for a close selfie), which took 2-9 s
    with scipy's direct filter and takes a third of that here.
    """
    radius = int(truncate * float(sigma) + 0.5)
    if radius < 1:
        return arr.copy()
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    kernel /= kernel.sum()
    out = arr
    for axis in (0, 1):
        widths = [(0, 0)] * arr.ndim
        widths[axis] = (radius, radius)
        # scipy's "reflect" repeats the edge pixel (d c b a | a b c d): numpy calls that "symmetric".
        padded = np.pad(out, widths, mode="symmetric")
        n = fft.next_fast_len(padded.shape[axis] + 2 * radius, real=True)
        shape = [1] * arr.ndim
        shape[axis] = -1
        k = fft.rfft(kernel.astype(arr.dtype), n).reshape(shape)
        full = fft.irfft(fft.rfft(padded, n, axis=axis) * k, n, axis=axis)
        keep = [slice(None)] * arr.ndim
        keep[axis] = slice(2 * radius, 2 * radius + arr.shape[axis])
        out = full[tuple(keep)]
    return out.astype(arr.dtype, copy=False)


def to_aligned(points: np.ndarray, quad: np.ndarray, output_size: int) -> np.ndarray:
    """Where photo points (N, 2 pixel x/y) land in the aligned image of ``output_size`` (pixel x/y).

    ``quad`` is the square from :func:`ffhq_quad` (top-left, bottom-left,
    bottom-right, top-right). Used to check alignment and to draw landmarks.
    """
    q = np.asarray(quad, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    shrink = int(np.floor(np.hypot(*(q[3] - q[0])) / output_size * 0.5))
    if shrink > 1:
        # FFHQ divides pixel indices by the shrink factor, which moves the content by (shrink - 1) / 2 pixels.
        p = p - 0.5 * (shrink - 1)
    axes = np.stack([q[3] - q[0], q[1] - q[0]], axis=1)  # columns: image x and y directions of the square
    uv = np.linalg.solve(axes, (p - q[0]).T).T
    return uv * output_size - 0.5


def align_ffhq(
    image: Image.Image,
    points: FivePoints,
    output_size: int = 1024,
    transform_size: int = 4096,
    enable_padding: bool = True,
    shrink_window: bool = True,
) -> Image.Image:
    """Crop and rotate ``image`` around the face given by ``points``; returns RGB ``output_size``².

    ``transform_size`` is the supersampling size of the quad transform (4096
    in FFHQ); the result is then downsampled to ``output_size``. With
    ``shrink_window`` the shrink step computes only the shrunk pixels inside the
    crop (Pillow's ``resize(box=...)``, the same filter at the same positions)
    instead of shrinking the whole photo first: identical output, and a large
    photo no longer costs seconds.
    """
    img = image if image.mode == "RGB" else image.convert("RGB")
    quad, qsize = ffhq_quad(points)
    transform_size = max(transform_size, output_size)

    # Shrink: very large faces are first reduced, as FFHQ did.
    shrink = int(np.floor(qsize / output_size * 0.5))
    size = img.size
    if shrink > 1:
        size = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
        if not shrink_window:
            img = img.resize(size, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop to the quad plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, size[0]), min(hi[1] + border, size[1]))
    if img.size != size:  # shrink only the window: source pixels per shrunk pixel along x and y
        fx, fy = img.size[0] / size[0], img.size[1] / size[1]
        box = (crop[0] * fx, crop[1] * fy, crop[2] * fx, crop[3] * fy)
        img = img.resize((crop[2] - crop[0], crop[3] - crop[1]), Image.LANCZOS, box=box)
        quad -= crop[0:2]
    elif crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad by reflection where the quad leaves the photo, blending to a blurred median.
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = [max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0)]
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx = np.ogrid[:h, :w]
        with np.errstate(divide="ignore", invalid="ignore"):
            mask = np.maximum(
                1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
            )[..., None]
        blur = qsize * 0.02
        arr += (gaussian_blur(arr, blur) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    img = img.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return img
