"""The upload matrix: every kind of file a stranger can send becomes a clean image or a plain message."""

import io
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from core.image_input import ImageInputError, fit_square, load_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2), "RGB")


def test_plain_rgb_png_and_path(tmp_path):
    p = tmp_path / "a.png"
    _gradient().save(p)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.array_equal(np.asarray(img), np.asarray(_gradient()))


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        load_image(p)


def test_not_an_image():
    with pytest.raises(ImageInputError, match="not an image"):
        load_image(b"%PDF-1.4 this is a document, not a picture" * 10)


def test_truncated_jpeg():
    data = _bytes(_gradient(256, 256), "JPEG", quality=95)
    with pytest.raises(ImageInputError, match="damaged or incomplete"):
        load_image(data[: len(data) // 2])


def test_rgba_is_composited_on_white():
    a = np.zeros((32, 32, 4), np.uint8)
    a[..., 0] = 255  # red, fully transparent on the left half
    a[:, 16:, 3] = 255
    img = load_image(_bytes(Image.fromarray(a, "RGBA"), "PNG"))
    out = np.asarray(img)
    assert img.mode == "RGB"
    assert (out[:, :16] == 255).all()  # transparent -> white background
    assert (out[:, 16:] == [255, 0, 0]).all()


def test_greyscale_to_rgb_and_to_single_channel():
    g = Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32), "L")
    rgb = load_image(_bytes(g, "PNG"))
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb)[..., 1], np.asarray(g))
    single = load_image(_bytes(g, "PNG"), channels=1)
    assert single.mode == "L" and np.array_equal(np.asarray(single), np.asarray(g))


def test_cmyk_jpeg():
    img = load_image(_bytes(_gradient().convert("CMYK"), "JPEG", quality=95))
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img).astype(int) - np.asarray(_gradient()).astype(int)).mean() < 12


def test_16bit_png_scaled_not_clipped():
    a = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    data = _bytes(Image.fromarray(a), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(load_image(data, channels=1)).astype(int)
    assert out.min() == 0 and out.max() == 255  # full range, not clipped at 255/65535
    assert abs(out[16, 0] - round(a[16, 0] / 257)) <= 1


def test_exif_rotation_is_applied():
    src = _gradient(64, 32)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = load_image(_bytes(src, "JPEG", exif=exif, quality=95))
    assert img.size == (32, 64)  # displayed upright: portrait
    expected = np.asarray(src.transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert np.abs(np.asarray(img).astype(int) - expected).mean() < 8


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = load_image(buf.getvalue())
    r, g, b = np.asarray(img)[16, 16]
    assert r > 200 and g < 50 and b < 50


def _png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims width x height: a decompression bomb's calling card."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_quickly():
    import time

    t0 = time.perf_counter()
    with pytest.raises(ImageInputError, match="too large"):
        load_image(_png_claiming(100_000, 100_000))
    with pytest.raises(ImageInputError, match="too large"):
        load_image(_png_claiming(9_000, 9_000))  # 81 MP: below Pillow's own error limit, above ours
    assert time.perf_counter() - t0 < 2.0  # refused from the header, nothing decoded


def test_tiny_image():
    with pytest.raises(ImageInputError, match="too small"):
        load_image(_bytes(Image.new("RGB", (4, 4)), "PNG"))
    assert load_image(_bytes(Image.new("RGB", (8, 8)), "PNG"), min_side=8).size == (8, 8)


def test_missing_file_and_none(tmp_path):
    with pytest.raises(ImageInputError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageInputError, match="No image"):
        load_image(None)


def test_numpy_inputs():
    f = np.random.default_rng(0).random((20, 30, 3))
    img = load_image(f)
    assert img.size == (30, 20) and img.mode == "RGB"
    with pytest.raises(ImageInputError, match="must be"):
        load_image(np.zeros((4, 4, 4, 4)))


def test_palette_with_transparency():
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    out = np.asarray(load_image(_bytes(p, "PNG", transparency=0)))
    assert (out == 255).all()


def test_fit_square_centre_crop():
    img = fit_square(_gradient(100, 50), 32)
    assert img.size == (32, 32)


# ----- progressive JPEGs: libjpeg holds every coefficient while reading one, whatever the draft scale ---------------
README_JPEG_MB = 32  # the README: "a 7900×7900 photo costs about 32 MB while it is read"

_PEAK_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from core.image_input import ImageInputError, load_image
def peak_mb():  # VmHWM, not getrusage: ru_maxrss survives exec and would start at pytest's own peak
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM:")).split()[1]) / 1024
idle = peak_mb()
try:
    size, message = list(load_image(sys.argv[1]).size), None
except ImageInputError as e:
    size, message = None, str(e)
print(json.dumps({"extra_mb": peak_mb() - idle, "size": size, "message": message}))
"""


def _read_in_fresh_process(path) -> dict:
    import json
    import subprocess

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-c", _PEAK_PROBE, str(path), str(ROOT)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _header(sof: int, components: list[tuple[int, int]], scan_components: int, w=6000, h=4000) -> bytes:
    """SOI, a frame header and a scan header: all a reader looks at before the image data."""
    sof_body = struct.pack(">BHHB", 8, h, w, len(components)) + b"".join(
        bytes([i + 1, (hs << 4) | vs, 0]) for i, (hs, vs) in enumerate(components))
    sos_body = bytes([scan_components]) + b"".join(bytes([i + 1, 0]) for i in range(scan_components)) + b"\x00\x3f\x00"
    app = b"\xff\xe1" + struct.pack(">H", 2 + 300) + b"x" * 300  # an EXIF-sized segment first
    return (b"\xff\xd8" + app + bytes([0xFF, sof]) + struct.pack(">H", 2 + len(sof_body)) + sof_body
            + b"\xff\xda" + struct.pack(">H", 2 + len(sos_body)) + sos_body + b"\x12\x34")


def test_coefficient_buffer_is_counted_only_for_multi_pass_jpegs():
    from core.image_input import jpeg_coefficient_bytes

    colour_420 = [(2, 2), (1, 1), (1, 1)]
    assert jpeg_coefficient_bytes(io.BytesIO(_header(0xC0, colour_420, 3))) == 0  # baseline, one interleaved scan
    progressive = jpeg_coefficient_bytes(io.BytesIO(_header(0xC2, colour_420, 1)))
    assert progressive == 6000 * 4000 * 3 // 2 * 2  # 2 bytes per coefficient; chroma at a quarter of the pixels
    separate_scans = jpeg_coefficient_bytes(io.BytesIO(_header(0xC0, colour_420, 1)))  # sequential, one colour a scan
    assert separate_scans == progressive
    assert jpeg_coefficient_bytes(io.BytesIO(_header(0xC2, [(1, 1)] * 3, 3))) == 6000 * 4000 * 3 * 2  # full colour
    assert jpeg_coefficient_bytes(io.BytesIO(b"not a jpeg")) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_a_huge_progressive_jpeg_costs_no_more_than_the_readme_says(tmp_path):
    path = tmp_path / "huge_progressive.jpg"
    Image.linear_gradient("L").resize((7900, 7900)).convert("RGB").save(path, quality=90, progressive=True)
    r = _read_in_fresh_process(path)
    assert r["message"] is not None and "progressive JPEG (7900×7900)" in r["message"], r
    assert "baseline" in r["message"] and r["message"].endswith("again.")
    assert r["extra_mb"] < README_JPEG_MB, r  # reading it in full took 196 MB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_a_progressive_photo_of_usual_size_is_still_read(tmp_path):
    from core.image_input import MAX_JPEG_COEFFICIENT_BYTES

    path = tmp_path / "photo_progressive.jpg"
    Image.linear_gradient("L").resize((4000, 3000)).convert("RGB").save(path, quality=90, progressive=True)  # 12 MP, 4:2:0
    r = _read_in_fresh_process(path)
    assert r["message"] is None and r["size"] == [2000, 1500], r  # decoded at half scale
    assert r["extra_mb"] < MAX_JPEG_COEFFICIENT_BYTES / 2**20 + 40, r  # its coefficients plus the reduced image
