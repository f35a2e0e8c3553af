"""Time per Family stage on CPU: align both parents, project both, make 4 children (+ morph frames).

On the built-in faces autoencoder (real weights) and on an FFHQ-256-sized
StyleGAN2 with random weights (the architecture of the released model, so the
timing is the real one; the images are noise). Two London photos are the
parents (skipped with a message when ../shared is absent).

    python -m bench.family [--steps 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from core.card import ModelCard
from core.family import ChildSettings, make_children, morph
from core.image_input import load_image, model_input
from core.images import from_pil
from core.projection import ProjectionConfig, run_projection

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "london" / "neutral"


def stages(model, name: str, steps: int) -> list[str]:
    photos = [SHARED / "001_03.jpg", SHARED / "002_03.jpg"]
    space = model.edit_space()
    t0 = time.perf_counter()
    crops = [model_input(load_image(p), model.image_size, model.channels, align_face=True).image for p in photos]
    t1 = time.perf_counter()
    cfg = ProjectionConfig.for_model(model, space, steps=steps, preview_every=0)
    res = run_projection(model, torch.cat([from_pil(c, model.channels) for c in crops]), cfg)
    t2 = time.perf_counter()
    f, m = res.latent[:1].to(model.device), res.latent[1:].to(model.device)
    kids = make_children(model, f, m, space, ChildSettings(variation=0.25, children=4))
    model.generate(kids, space)
    t3 = time.perf_counter()
    model.generate(morph(f, kids[0], m, 32), space)
    t4 = time.perf_counter()
    return [name, f"{t1 - t0:.2f} s", f"{t2 - t1:.1f} s ({steps} steps, {(t2 - t1) / steps:.3f} s/step, PSNR {res.psnr:.1f} dB)",
            f"{t3 - t2:.2f} s", f"{t4 - t3:.2f} s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    a = p.parse_args()
    torch.set_num_threads(2)
    if not SHARED.is_dir():
        print(f"London photos not found at {SHARED}: nothing to time.")
        return
    from plugins.small_ae import load_model
    from plugins.stylegan.model import StyleGANModel
    from plugins.stylegan.random_init import build_preset

    card = ModelCard("bench/sg2-256", "StyleGAN2 FFHQ-256 architecture (random weights)", "", "", 256, "", "bench")
    rows = [stages(load_model("faces"), "small_ae/faces (64 px)", a.steps),
            stages(StyleGANModel(build_preset("sg2-ffhq256"), card), "StyleGAN2-256 (random weights)", a.steps)]
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| model | align 2 photos | project 2 parents | 4 children | 32-frame morph |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
