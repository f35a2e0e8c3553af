"""A photo just under the pixel cap is decoded at reduced size: its peak memory, measured in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT

PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from core.image_input import load_image
def peak_mb():  # VmHWM: this process's peak resident memory (getrusage's peak survives exec, so it would show pytest's)
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
idle = peak_mb()
img = load_image(sys.argv[1])
print(json.dumps({"idle_mb": idle, "peak_mb": peak_mb(), "size": img.size}))
"""


def _peak(path, tmp_path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_a_7900px_jpeg_costs_tens_of_mb(tmp_path):
    path = tmp_path / "big.jpg"
    Image.linear_gradient("L").resize((7900, 7900)).convert("RGB").save(path, quality=90)
    r = _peak(path, tmp_path)
    extra = r["peak_mb"] - r["idle_mb"]
    print(f"7900x7900 JPEG ({path.stat().st_size / 1e3:.0f} kB): peak RSS {extra:.0f} MB above idle, decoded to {r['size']}")
    assert 1536 <= r["size"][0] == r["size"][1] <= 2048  # decoded at 1/4 scale (1975 px), nothing bigger kept
    assert extra < 150, f"decoding took {extra:.0f} MB above idle"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_formats_read_in_full_are_capped(tmp_path):
    from core.image_input import MAX_FULL_DECODE_PIXELS, ImageInputError, load_image

    side = int(MAX_FULL_DECODE_PIXELS**0.5)  # the largest PNG still accepted
    path = tmp_path / "big.png"
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(path)
    r = _peak(path, tmp_path)
    extra = r["peak_mb"] - r["idle_mb"]
    print(f"{side}x{side} PNG: peak RSS {extra:.0f} MB above idle, decoded to {r['size']}")
    assert max(r["size"]) == 2048 and extra < 150
    bigger = tmp_path / "bigger.png"
    Image.new("RGB", (side + 200, side + 200)).save(bigger)
    with pytest.raises(ImageInputError, match="Save it as JPEG"):
        load_image(bigger)
