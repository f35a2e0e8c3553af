"""Files users take home: latents (.npz), frame sequences (PNG, GIF, MP4)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.images import enlarge

LATENT_FORMAT = "latent-lab-latent/1"


def save_latent(path: str | os.PathLike, latent, model: str, space: str, noise: Sequence | None = None, **meta) -> Path:
    """Write a latent with the model and space it belongs to (a plain .npz, no pickle).

    ``noise``: the noise maps a projection optimised (StyleGAN2, coarse to fine), stored as ``noise_0`` ...
    because the latent alone does not reproduce that reconstruction. ``meta`` values must be JSON-serialisable.
    """
    arr = latent.detach().cpu().numpy() if hasattr(latent, "detach") else np.asarray(latent)
    maps = [m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m) for m in (noise or [])]
    info = {"format": LATENT_FORMAT, "model": model, "space": space, "noise_maps": len(maps), **meta}
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, latent=arr.astype(np.float32), info=np.array(json.dumps(info)),
                 **{f"noise_{i}": m.astype(np.float32) for i, m in enumerate(maps)})  # fmt: skip
    return path


def load_latent(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a latent saved by :func:`save_latent`; returns (array, info), with the noise maps (if any) as ``info["noise"]``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            latent, info = z["latent"], json.loads(str(z["info"]))
            if info.get("noise_maps"):
                info["noise"] = [z[f"noise_{i}"] for i in range(int(info["noise_maps"]))]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"'{Path(path).name}' is not a Latent Lab latent file ({e}).") from e
    if info.get("format") != LATENT_FORMAT:
        raise ValueError(f"'{Path(path).name}' has an unknown latent format {info.get('format')!r}.")
    return latent, info


def save_frames(frames: Sequence[Image.Image], folder: str | os.PathLike, prefix: str = "frame") -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(frames))))
    paths = []
    for i, im in enumerate(frames):
        p = folder / f"{prefix}_{i:0{digits}d}.png"
        im.save(p)
        paths.append(p)
    return paths


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 12, loop: bool = True, boomerang: bool = False,
             min_side: int = 0) -> Path:
    """Animated GIF; ``boomerang`` plays forward then back for a seamless loop.

    Frames smaller than ``min_side`` are enlarged by an integer factor (nearest neighbour).
    """
    seq = [enlarge(f, min_side) for f in _sequence(frames, boomerang)]
    path = Path(path)
    seq[0].save(path, save_all=True, append_images=seq[1:], duration=max(20, round(1000 / fps)), loop=0 if loop else 1, optimize=False)
    return path


def save_mp4(frames: Sequence[Image.Image], path: str | os.PathLike, fps: float = 12, boomerang: bool = False, min_side: int = 256) -> Path:
    """H.264 MP4 with the ffmpeg binary bundled in imageio-ffmpeg (no system ffmpeg needed).

    Small frames are upscaled (nearest) to at least ``min_side`` pixels so
    players show them, and to a multiple of 16 as H.264 requires.
    """
    import imageio.v2 as imageio  # imported lazily: only exports need it

    seq = [enlarge(f, min_side) for f in _sequence(frames, boomerang)]
    size = (_round16(seq[0].size[0]), _round16(seq[0].size[1]))
    arrays = [np.asarray(f if f.size == size else f.resize(size, Image.LANCZOS)) for f in seq]
    path = Path(path)
    imageio.mimwrite(path, arrays, fps=fps, codec="libx264", macro_block_size=16, pixelformat="yuv420p", quality=8)
    return path


def _round16(x: int) -> int:
    return max(16, int(np.ceil(x / 16)) * 16)


def _sequence(frames: Sequence[Image.Image], boomerang: bool) -> list[Image.Image]:
    if not frames:
        raise ValueError("There are no frames to export.")
    seq = [f.convert("RGB") for f in frames]
    return seq + seq[-2:0:-1] if boomerang and len(seq) > 2 else seq
