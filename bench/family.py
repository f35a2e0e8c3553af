"""Time per Family stage on CPU: align both parents, project both, make 4 children (+ morph frames).

On the built-in faces autoencoder (real weights) and on an FFHQ-256-sized
StyleGAN2 with random weights (the architecture of the released model, so the
timing is the real one; the images are noise). Two London photos are the
parents (skipped with a message when ../shared is absent).

    python -m bench.family [--steps 100] [--new-steps 30] [--tune N] [--skip-small]

Then the Family path itself (core.family.Family: align, colour-match, project both parents as one batch, pivotal
tuning with the path term, 4 identity-balanced children) on the FFHQ-256-sized StyleGAN2, old default (start at
w_avg, float32, ``--steps``, no tuning) vs new (latent-bank start, bf16 gradient decodes where the CPU has them,
``--new-steps``, the face models' tuning steps), in one process. The bank is made once per model (cached on disk
for downloaded models), so it is timed apart.
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


def family_run(model, steps: int, tune: int) -> dict[str, float]:
    """Seconds of each stage of core.family.Family for the two photos: align, project (+ tune), 4 children."""
    from core.family import Family

    photos = [SHARED / "001_03.jpg", SHARED / "002_03.jpg"]
    out = {}
    t0 = time.perf_counter()
    fam = Family(model, "bench/sg2-256", ("faces",))
    for who, photo in zip(("father", "mother"), photos, strict=True):
        fam.set_parent(who, photo)
    t1 = time.perf_counter()
    tuned_at = None
    for ev in fam.project(steps, tune_steps=tune):
        if getattr(ev, "stage", "") == "tuning" and tuned_at is None:
            tuned_at = time.perf_counter()
    t2 = time.perf_counter()
    fam.children(ChildSettings(variation=0.25, children=4))
    t3 = time.perf_counter()
    out["align"], out["project+tune"], out["children"] = t1 - t0, t2 - t1, t3 - t2
    out["tune"] = t2 - tuned_at if tuned_at is not None else 0.0
    out["total"] = t3 - t0
    out["psnr"] = sum(p.psnr for p in fam.parents.values()) / 2
    return out


def old_vs_new(steps: int, new_steps: int, tune: int) -> None:
    from plugins.stylegan.model import BANK_SIZE, StyleGANModel
    from plugins.stylegan.random_init import build_preset
    from plugins.stylegan.start import bank_for, fast_grad_dtype

    card = ModelCard("bench/sg2-256", "StyleGAN2 FFHQ-256 architecture (random weights)", "", "", 256, "", "bench")
    model = StyleGANModel(build_preset("sg2-ffhq256"), card)
    t0 = time.perf_counter()
    bank_for(model, BANK_SIZE, 0, None)
    bank_s = time.perf_counter() - t0
    defaults = model.projection_defaults
    rows = []
    old = {"auto_init": "mean", "betas": (0.9, 0.95), "lr_rampup": 0.05}  # the defaults before the bank start
    for name, changes, fast, n, k in (("old: w_avg start, fp32, no tuning", old, False, steps, 0),
                                      ("new: bank start, bf16, tuned", {}, True, new_steps, tune)):
        model.projection_defaults = lambda space, c=changes: {**defaults(space), **c}
        model.fast_grad = fast
        r = family_run(model, n, k)
        rows.append(f"| {name} | {n} | {k} | {r['align']:.2f} | {r['project+tune'] - r['tune']:.1f} | {r['tune']:.1f} | "
                    f"{r['children']:.2f} | **{r['total']:.1f}** | {r['psnr']:.1f} |")
        print(rows[-1], flush=True)
    print(f"\nFamily, FFHQ-256-sized StyleGAN2, bf16 gradient decodes available: {fast_grad_dtype('cpu') is not None}; "
          f"one-time latent bank ({BANK_SIZE} drawings): {bank_s:.1f} s\n")
    print("| default | projection steps | tuning steps | align 2 | project 2 | tune | 4 children | total s | PSNR (face) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="projection steps (the old default in the comparison)")
    p.add_argument("--new-steps", type=int, default=30)
    p.add_argument("--tune", type=int, default=None, help="tuning steps of the new default (default: face models')")
    p.add_argument("--skip-small", action="store_true", help="only the StyleGAN comparison")
    a = p.parse_args()
    torch.set_num_threads(2)
    if not SHARED.is_dir():
        print(f"London photos not found at {SHARED}: nothing to time.")
        return
    from plugins.small_ae import load_model
    from plugins.stylegan.model import FACE_TUNING_STEPS, StyleGANModel
    from plugins.stylegan.random_init import build_preset

    old_vs_new(a.steps, a.new_steps, FACE_TUNING_STEPS if a.tune is None else a.tune)
    if a.skip_small:
        return
    card = ModelCard("bench/sg2-256", "StyleGAN2 FFHQ-256 architecture (random weights)", "", "", 256, "", "bench")
    rows = [stages(load_model("faces"), "small_ae/faces (64 px)", a.steps),
            stages(StyleGANModel(build_preset("sg2-ffhq256"), card), "StyleGAN2-256 (random weights)", a.steps)]
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| model | align 2 photos | project 2 parents | 4 children | 32-frame morph |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
