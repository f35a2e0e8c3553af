"""Small pictures for choosing among things (the faces found in a photo); PIL only, read at start-up."""

from __future__ import annotations

from PIL import Image


def face_thumbnail(img: Image.Image, box: tuple[int, int, int, int], side: int = 96) -> Image.Image:
    """The detected face with a margin, for picking among several faces."""
    left, top, right, bottom = box
    pad = 0.3 * max(right - left, bottom - top)
    crop = img.crop((int(max(0, left - pad)), int(max(0, top - pad)), int(min(img.width, right + pad)),
                     int(min(img.height, bottom + pad))))
    crop.thumbnail((side, side))
    return crop
