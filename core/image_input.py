"""Turn any uploaded file into a clean RGB (or greyscale) PIL image, or say plainly why not.

Uploads come from strangers: empty files, truncated JPEGs, PDFs renamed to
.png, 16-bit scans, CMYK prints, phone photos stored sideways with an EXIF
rotation tag, animated GIFs and decompression bombs (a tiny file that claims
gigapixels). Each case either becomes a normal image or raises
:class:`ImageInputError` with a sentence a user can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow refuses images above 2x this many pixels and warns above 1x; we refuse above 1x.
MAX_PIXELS = 64_000_000
MIN_SIDE = 16
MAX_BYTES = 50 * 1024 * 1024
# Photos are decoded to at most this many pixels per side (no model here is larger than 1024 px): a JPEG is
# decoded at 1/2, 1/4 or 1/8 scale from the start (its DCT "draft" mode), so a 40-megapixel photo costs tens of MB
# (a JPEG larger than this comes out 1536-2048 px a side). Other formats are decoded fully, then reduced at once.
MAX_SIDE = 2048
# Formats with no reduced decoding (PNG, WebP, TIFF, ...) are read in full first: above this many pixels they are
# refused, so one upload costs at most ~100 MB while it is read (Pillow holds RGB as 4 bytes a pixel).
MAX_FULL_DECODE_PIXELS = 16_000_000
# A progressive JPEG (or one whose colours come in separate scans) is not decoded in one pass: libjpeg keeps every
# DCT coefficient of the whole image (2 bytes each) while it reads, whatever the draft scale. Above this many bytes
# of coefficients it is refused (about 16 megapixels with the usual half-resolution colour, 8 with full), so reading
# one costs no more than reading a format decoded in full.
MAX_JPEG_COEFFICIENT_BYTES = 48 * 2**20


class ImageInputError(ValueError):
    """An upload that cannot be used as an image; the message is meant for the user."""


ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image | np.ndarray


def load_image(
    source: ImageSource,
    channels: int = 3,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    max_side: int | None = MAX_SIDE,
) -> Image.Image:
    """Decode ``source`` into an upright 8-bit RGB (channels=3) or L (channels=1) image.

    Transparency is composited onto ``background``; only the first frame of
    an animation is used; EXIF orientation is applied. Files larger than
    ``max_side`` on a side are reduced to it (aspect kept) while decoding;
    None keeps the full size.
    """
    if source is None:
        raise ImageInputError("No image was given: upload a photo first.")
    img = _open(source, max_pixels, max_side)
    try:
        img = _first_frame(img)
        img = _shrink(img, max_side)
        img = _upright(img)
        img = _to_8bit(img)
        img = _flatten_alpha(img, background)
        img = img.convert("RGB" if channels == 3 else "L")
    except ImageInputError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data surfaces while decoding
        raise ImageInputError(f"The image file is damaged or incomplete and cannot be read ({e}).") from e
    if min(img.size) < min_side:
        raise ImageInputError(
            f"The image is too small ({img.size[0]}×{img.size[1]} pixels); use one at least {min_side} pixels on each side."
        )
    return img


def _open(source: ImageSource, max_pixels: int, max_side: int | None = None) -> Image.Image:
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"The file '{path.name}' does not exist.")
        _check_bytes(path.stat().st_size)
        source = path.read_bytes()
    if isinstance(source, (bytes, bytearray)):
        _check_bytes(len(source))
        data: BinaryIO = io.BytesIO(source)
    else:
        data = source
    try:
        start = data.tell()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(data)
            _check_pixels(img.size, max_pixels)
            if max_side and img.format == "JPEG":
                _check_jpeg_passes(data, start, img.size)
            if max_side and img.format != "JPEG" and img.size[0] * img.size[1] > MAX_FULL_DECODE_PIXELS:
                raise ImageInputError(
                    f"The image is too large to read as {img.format or 'this format'} ({img.size[0]}×{img.size[1]}): "
                    f"more than {MAX_FULL_DECODE_PIXELS / 1e6:.0f} megapixels. Save it as JPEG, or resize it, and upload it again.")
            if max_side and img.format == "JPEG" and max(img.size) > max_side:
                # Decode at the smallest 1/2^k scale whose long side is still >= 3/4 of max_side (1536..3071 px),
                # then reduce. (draft wants both sides >= the request: ask for the photo's own aspect.)
                k = max_side * 3 / 4 / max(img.size)
                img.draft(None, (max(1, int(img.size[0] * k)), max(1, int(img.size[1] * k))))
            img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(_bomb_message(max_pixels)) from e
    except UnidentifiedImageError as e:
        raise ImageInputError("This file is not an image Latent Lab can read (use JPEG, PNG, WebP, GIF, BMP or TIFF).") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"The image file is damaged or incomplete and cannot be read ({e}).") from e
    return img


def _check_jpeg_passes(data: BinaryIO, start: int, size: tuple[int, int]) -> None:
    """Refuse a multi-pass JPEG whose coefficients alone would cost more than a format decoded in full."""
    pos = data.tell()
    try:
        data.seek(start)
        needed = jpeg_coefficient_bytes(data)
    finally:
        data.seek(pos)
    if needed > MAX_JPEG_COEFFICIENT_BYTES:
        limit = size[0] * size[1] * MAX_JPEG_COEFFICIENT_BYTES / needed / 1e6
        raise ImageInputError(
            f"The image is too large to read as a progressive JPEG ({size[0]}×{size[1]}): more than {limit:.0f} megapixels "
            "in this form. Save it as a standard (baseline) JPEG, or resize it, and upload it again.")


_SOF_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_SOF = {0xC0, 0xC1, 0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCD, 0xCF} | _SOF_PROGRESSIVE


def jpeg_coefficient_bytes(f: BinaryIO) -> int:
    """Bytes of DCT coefficients libjpeg holds at once to decode the JPEG at ``f``'s position: 0 for a one-pass file.

    A file needs the whole coefficient image when it is progressive, or when its first scan does not carry every
    colour component. Only the headers before the first scan are read.
    """
    if f.read(2) != b"\xff\xd8":
        return 0
    frame = None
    while True:
        byte = f.read(1)
        if not byte:
            return 0
        if byte != b"\xff":
            continue  # not at a marker: tolerate junk between segments, as libjpeg does
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return 0
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD9:
            continue  # markers without a length
        head = f.read(2)
        if len(head) < 2:
            return 0
        segment = f.read(max(0, int.from_bytes(head, "big") - 2))
        if m in _SOF and len(segment) >= 6:
            height, width, count = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
            factors = [(b >> 4 or 1, b & 15 or 1) for b in segment[7:6 + 3 * count:3]]
            frame = (m in _SOF_PROGRESSIVE, width, height, factors)
        elif m == 0xDA:  # start of scan: what follows is image data
            if frame is None or not segment:
                return 0
            progressive, width, height, factors = frame
            if not progressive and segment[0] >= len(factors):
                return 0
            return _coefficient_bytes(width, height, factors)


def _coefficient_bytes(width: int, height: int, factors: list[tuple[int, int]]) -> int:
    """libjpeg's whole-image coefficient arrays: per component, 8x8 blocks of 2-byte coefficients, padded to its factors."""
    def up(a: int, b: int) -> int:  # a / b rounded up
        return (a + b - 1) // b

    hmax, vmax = max(h for h, _ in factors), max(v for _, v in factors)
    total = 0
    for h, v in factors:
        blocks_w, blocks_h = up(up(width * h, hmax), 8), up(up(height * v, vmax), 8)
        total += up(blocks_w, h) * h * up(blocks_h, v) * v * 64 * 2
    return total


def _check_bytes(size: int) -> None:
    if size == 0:
        raise ImageInputError("The uploaded file is empty (0 bytes).")
    if size > MAX_BYTES:
        raise ImageInputError(f"The file is too large ({size / 2**20:.0f} MB); the limit is {MAX_BYTES // 2**20} MB.")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise ImageInputError(_bomb_message(max_pixels, size))


def _bomb_message(max_pixels: int, size: tuple[int, int] | None = None) -> str:
    dims = f" ({size[0]}×{size[1]})" if size else ""
    return f"The image is too large{dims}: more than {max_pixels / 1e6:.0f} megapixels. Resize it and upload it again."


def _from_array(a: np.ndarray, max_pixels: int) -> Image.Image:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageInputError(f"An image array must be H×W, H×W×3 or H×W×4; got shape {a.shape}.")
    _check_pixels((a.shape[1], a.shape[0]), max_pixels)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        hi = 1.0 if a.size and np.nanmax(a) <= 1.0 else (255.0 if np.nanmax(a) <= 255 else 65535.0)
        a = np.clip(np.nan_to_num(a) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return Image.fromarray(a)


def _shrink(img: Image.Image, max_side: int | None) -> Image.Image:
    """Reduce to ``max_side`` before any other copy is made (rotation, mode changes), so every copy stays small."""
    if not max_side or max(img.size) <= max_side:
        return img
    w, h = img.size
    k = max_side / max(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    try:
        factor = max(w, h) // max_side
        if factor >= 2 and img.mode not in ("P", "1"):  # a cheap box reduction first: the big copy is never made
            img = img.reduce(factor)
        return img.resize(size, Image.LANCZOS)
    except ValueError:  # a mode Pillow cannot resample (rare 16-bit variants): convert first
        return img.convert("I").resize(size, Image.NEAREST)


def _first_frame(img: Image.Image) -> Image.Image:
    if getattr(img, "is_animated", False):
        img.seek(0)
        img = img.copy()
    return img


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag so phone photos are not sideways."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not reject an otherwise fine photo
        return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float images scaled to 8 bits (Pillow's convert('L') would clip them)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F" and a.max(initial=0) <= 1.0:
            hi = 1.0
        return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img


def _flatten_alpha(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        base = Image.new("RGB", img.size, background)
        base.paste(img, mask=img.getchannel("A"))
        return base
    if img.mode == "1":
        return img.convert("L")
    return img


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` (Lanczos), the input a model expects."""
    return fit(img, (size, size))


def fit(img: Image.Image, shape: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect of ``shape`` (H, W) and resize to it (Lanczos): as little is cut as that aspect allows."""
    th, tw = shape
    w, h = img.size
    cw, ch = (w, round(w * th / tw)) if w * th <= h * tw else (round(h * tw / th), h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.resize((tw, th), Image.LANCZOS, box=(left, top, left + cw, top + ch))


def working_shape(size: tuple[int, int], multiple: int, max_side: int) -> tuple[tuple[int, int], str]:
    """The (H, W) a model that works at any multiple of ``multiple`` (a VAE: 8) uses for a ``size`` = (W, H) photo.

    The photo's own aspect, reduced so the longer side is at most ``max_side`` (time and memory grow with the
    pixels), each side then rounded to the nearest multiple (at least one). Returns the shape and a sentence saying
    what changed ("" when the photo is used as it is).
    """
    w, h = int(size[0]), int(size[1])
    if max_side < multiple:
        raise ValueError(f"The largest side must be at least {multiple} pixels for this model; got {max_side}.")
    k = min(1.0, max_side / max(w, h))
    cap = max_side // multiple * multiple

    def side(x: int) -> int:
        return min(cap, max(multiple, round(x * k / multiple) * multiple))

    out = (side(h), side(w))
    if out == (h, w):
        return out, ""
    why = [f"each side a multiple of {multiple}"]
    if k < 1:
        why.insert(0, f"longer side at most {max_side} px")
    return out, f"The {w}×{h} image is used at {out[1]}×{out[0]} px ({', '.join(why)})."


IDENTITY_SIDE = 256  # px: a face is described for identity at least this large (a 64 px crop is ~0.24 from its own photo)


@dataclass
class ModelInput:
    """What a model sees of an upload, and for an aligned face what the fit and the identity check need."""

    image: Image.Image  # size x size (or the (H, W) asked for), in the model's channels
    warnings: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None  # aligned faces: face-region weights (size, size) in [0, 1] for project(weights=...)
    reference: Image.Image | None = None  # aligned faces: the RGB crop at >= IDENTITY_SIDE px that identity is measured on
    note: str = ""  # how the upload was resized for a model that works at any size ("" when it was not)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of ``image``: the size to run a resizable model at (``LatentModel.at_size``)."""
        return self.image.size[1], self.image.size[0]

    @property
    def weights(self):
        """``project(weights=...)`` for this input: the face mask as a (1, 1, H, W) tensor, or None (every pixel counts)."""
        from core.faces.mask import as_weights  # deferred: loads torch; this module is read at start-up

        return None if self.mask is None else as_weights(self.mask)


def stacked_weights(inputs: list[ModelInput]):
    """``project(weights=...)`` for a batch of inputs: their face masks (N, 1, H, W), or None unless every one has a mask."""
    if not inputs or any(i.mask is None for i in inputs):
        return None
    import torch  # deferred: this module is read at start-up, which must not load torch

    return torch.cat([i.weights for i in inputs])


def default_max_side() -> int:
    """The longer side a resizable model (a VAE) works at by default: 512 px on a CPU (an SD VAE takes seconds there),
    1024 on a GPU."""
    from core.device import get_device  # deferred: core.device loads torch; this module is read at start-up

    return 1024 if get_device().type == "cuda" else 512


def input_for(model, img: Image.Image, align_face: bool = False, face: int = 0, max_side: int | None = None,
              shape: tuple[int, int] | None = None, found=None) -> ModelInput:
    """What ``model`` (a ``core.model.LatentModel``) sees of ``img``: ``model_input`` at the model's square size, or
    for a resizable model (a VAE) the photo at its own aspect (``working_shape``, longer side at most ``max_side``),
    or at ``shape`` = (H, W) (the second image of an interpolation takes the first one's). Giving neither keeps the
    model's own size (callers that cannot run it at another, such as the latent map); run the model at
    ``input.shape`` (``model.at_size``). An aligned face stays a square at the model's own size.
    """
    if not model.resizable or align_face or (max_side is None and shape is None):
        return model_input(img, model.image_size, model.channels, align_face, face, found)
    if shape is None:
        shape, note = working_shape(img.size, model.size_multiple, max_side)
    else:
        w, h = img.size
        same = abs(w * shape[0] - h * shape[1]) <= max(w, h)  # the same aspect, to a pixel
        note = "" if (h, w) == tuple(shape) else (
            f"The {w}×{h} image is {'resized' if same else 'centre-cropped and resized'} to {shape[1]}×{shape[0]} px "
            "(the first image's size).")
    inp = model_input(img, tuple(shape), model.channels)
    inp.note = note
    return inp


def model_input(img: Image.Image, size: int | tuple[int, int], channels: int = 3, align_face: bool = False, face: int = 0,
                found=None) -> ModelInput:
    """The image a model sees: the FFHQ-aligned face ``face`` (0: the largest; face models) or a centre square
    (``size`` an int), or the centre of the photo at ``size`` = (H, W) (a resizable model, see ``working_shape``).

    An aligned face also brings its mask (only the face should drive a projection, not the backdrop, hair beyond the
    crop or clothes) and a sharp reference crop for the identity distance; the face is aligned once, at the larger
    of the two sizes. ``found`` reuses a detection (``core.faces.find_faces``). Raises ``core.faces.NoFaceError`` (a
    ValueError) when a face was asked for and none is found.
    """
    mode = "RGB" if channels == 3 else "L"
    if not isinstance(size, int):
        if align_face:
            raise ValueError("An aligned face is a square crop: give one size, not a height and a width.")
        return ModelInput(fit(img, size).convert(mode))
    if not align_face:
        return ModelInput(fit_square(img, size).convert(mode))
    # deferred: core.faces (alignment, dlib) is slow to import; only face models need it
    from core.faces import align_face as align

    aligned = align(img, max(size, IDENTITY_SIDE), which=face, found=found)
    reference = aligned.image.convert("RGB")
    image = reference if reference.size[0] == size else reference.resize((size, size), Image.LANCZOS)
    return ModelInput(image.convert(mode), aligned.warnings, aligned.mask(size), reference)
