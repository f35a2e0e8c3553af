"""Diffusion backends on this machine: DDIM inversion round trip, seconds per UNet step (ours vs diffusers'
DDIMPipeline), VAE encode / decode, 16-frame interpolation. ``python -m bench.diffusion [--full]``.

Models: the built-in folders under plugins/diffusion/weights/ (if any), the catalog's hub models when they are
in the HF cache (real weights), and otherwise random-weight models of the hub architectures (google/ddpm-cifar10-32,
google/ddpm-ema-celebahq-256, the SD VAE, TAESD). Random weights make every PSNR below meaningless as image
quality (a random UNet's noise predictions are not smooth, so nothing inverts through them; a random VAE
reconstructs nothing); they still time the real architectures. The CelebA-HQ UNet costs seconds per call on a CPU,
so by default it runs 2-step round trips and one-step timings only (``--full``: everything at every step count).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import deque
from pathlib import Path

import torch

from core.card import ModelCard

CIFAR = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 256, 256),
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
CELEBAHQ = dict(sample_size=256, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 128, 256, 256, 512, 512),
                down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256)


def _card(name: str, res: int) -> ModelCard:
    return ModelCard(name=name, title=name, description="", trained_on="random weights", resolution=res, licence="-", source="bench")


def unets(full: bool) -> list[tuple[str, object, list[int], bool]]:
    """(label, model, round-trip step counts, real weights?)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from plugins.diffusion import WEIGHTS, load_folder
    from plugins.diffusion.catalog import CATALOG
    from plugins.diffusion.hub import cached_folder
    from plugins.diffusion.models import DiffusionModel
    from plugins.registry import Registry

    out = []
    registry = Registry().discover(use_entry_points=False)
    for folder in sorted(p for p in WEIGHTS.glob("*") if (p / "model_index.json").is_file()) if WEIGHTS.is_dir() else []:
        # As users get it: the registry's model (plugins.diffusion's DiffusionModel), not the trainer's UNet.
        out.append((f"built-in {folder.name}", registry.get(f"diffusion/{folder.name}"), [10, 20, 50, 100], True))
    for name, cfg, steps in (("ddpm-cifar10-32", CIFAR, [10, 20, 50, 100] if full else [10, 20]),
                             ("ddpm-celebahq-256", CELEBAHQ, [10, 20, 50, 100] if full else [2])):
        repo = CATALOG[f"diffusion/{name}"][0]
        folder = cached_folder(repo)
        if folder is not None:
            out.append((f"{repo} (real)", load_folder(folder, _card(name, cfg["sample_size"])), steps, True))
        else:
            torch.manual_seed(0)
            out.append((f"{name} arch, random", DiffusionModel(_card(name, cfg["sample_size"]), UNet2DModel(**cfg).eval(),
                                                               dict(DDPMScheduler().config)), steps, False))
    return out


def test_images(n: int, size: int, channels: int) -> torch.Tensor:
    """Shared photos (centre crops) when present, else smooth random images."""
    from core.images import from_pil

    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "photos"
    files = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if len(files) == n:
        from PIL import Image, ImageOps

        imgs = [ImageOps.fit(Image.open(f).convert("RGB" if channels == 3 else "L"), (size, size)) for f in files]
        return torch.cat([from_pil(i, channels) for i in imgs])
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=size, mode="bilinear") * 1.6 - 0.8


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def heldout_digits(n: int, size: int) -> torch.Tensor:
    """The first ``n`` held-out digits (never trained on) at ``size`` px, as the trainer prepares them."""
    from plugins.diffusion.train import digits_images
    from plugins.small_ae.data import load_digits_dataset

    ds = load_digits_dataset()
    return digits_images(ds, size)[torch.from_numpy(ds.heldout)][:n]


def round_trip(model, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
    """Per-image PSNR as users get it: ``core.projection.project`` (the Projection tab's and CLI's DDIM inversion),
    then ``generate`` of its latent with the model's options for inverted latents; and the PSNR the projection
    itself reported (its own reconstruction)."""
    from core.images import psnr
    from core.projection import ProjectionConfig, project

    final = deque(project(model, x, ProjectionConfig.for_model(model, "x_T", steps=steps, preview_every=0)), maxlen=1)[0]
    rec = model.generate(final.latent, "x_T", **model.decode_options(steps, inverted=True))
    return psnr(rec, x), final.psnr


def round_trips(rows: list, full: bool) -> None:
    print("\n## DDIM inversion round trip through the plugin path (core.projection.project, then generate), PSNR dB: "
          "mean (worst); built-in digits: held-out digits, others: 2 images")
    print("| model | images | " + " | ".join(f"{s} steps" for s in (10, 20, 50, 100)) + " | seconds (all runs) |")
    print("|---|---|---|---|---|---|---|")
    for label, model, steps, _ in rows:
        digits = label.startswith("built-in") and "digits" in label
        x = heldout_digits(64 if full else 16, model.image_size) if digits else test_images(2, model.image_size, model.channels)
        cells, gap, t0 = {}, 0.0, time.perf_counter()
        for s in steps:
            p, reported = round_trip(model, x, s)
            cells[s] = f"{float(p.mean()):.1f} ({float(p.min()):.1f})"
            gap = max(gap, abs(float(p.mean()) - reported))
        spent = time.perf_counter() - t0
        other = "".join(f" ({s} steps: {v})" for s, v in cells.items() if s not in (10, 20, 50, 100))
        print(f"| {label} | {len(x)} {'held-out digits' if digits else 'images'} | "
              + " | ".join(cells.get(s, "not run (CPU cost)") for s in (10, 20, 50, 100))
              + f" | {spent:.0f}{other} |")
        print(f"|  | (the projection's own reported PSNR differs from this decode by at most {gap:.2f} dB) | | | | | |")


def fresh_samples(rows: list, n: int = 64, steps: int = 50) -> None:
    """Speckle among fresh samples of the built-in digits model: clipped (what the app decodes) vs unclipped."""
    print(f"\n## Fresh samples of the built-in digits model ({n} seeds' noise, {steps} DDIM steps): speckle = rougher "
          "than the roughest held-out digit (mean |neighbour difference|)")
    print("| model | clipped x0 (the app's fresh samples) | unclipped (the inversion's mirror) |")
    print("|---|---|---|")

    def rough(x: torch.Tensor) -> torch.Tensor:
        return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))) / 2

    for label, model, _, _ in rows:
        if not (label.startswith("built-in") and "digits" in label):
            continue
        limit = rough(heldout_digits(10_000, model.image_size)).max()
        z = model.sample(n, seed=0)
        counts = [int((rough(model.generate(z, "x_T", **model.decode_options(steps, inverted=inv))) > limit).sum())
                  for inv in (False, True)]
        print(f"| {label} | {counts[0]} of {n} | {counts[1]} of {n} |")


def step_speed(rows: list, full: bool, reps: int = 3) -> None:
    from diffusers import DDIMPipeline, DDIMScheduler

    from plugins.diffusion.ddim import ddim_config

    print("\n## Seconds per UNet step, batch 1, CPU: ours (DiffusionModel.generate) vs diffusers' DDIMPipeline, same UNet, alternating")
    print("| model | ours s/step | DDIMPipeline s/step | ours / theirs speed |")
    print("|---|---|---|---|")
    for label, model, _, _ in rows:
        k = 1 if model.image_size >= 256 and not full else 5
        pipe = DDIMPipeline(unet=model.unet, scheduler=DDIMScheduler(**ddim_config(model.scheduler_config, clip=True)))
        pipe.set_progress_bar_config(disable=True)
        model.generate(model.sample(1, 99), "x_T", steps=1)  # untimed warm-up of both: the first call pays for allocations
        pipe(batch_size=1, num_inference_steps=1, eta=0.0, output_type="np")
        ours, theirs = [], []
        for rep in range(reps):
            z = model.sample(1, rep)
            ours.append(timed(model.generate, z, "x_T", steps=k) / k)
            g = torch.Generator().manual_seed(rep)
            theirs.append(timed(pipe, batch_size=1, generator=g, num_inference_steps=k, eta=0.0, output_type="np") / k)
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"| {label} | {o:.3f} | {t:.3f} | {t / o:.2f}x |")


def vaes() -> list[tuple[str, object, bool]]:
    from diffusers import AutoencoderKL, AutoencoderTiny

    from plugins.diffusion import load_folder
    from plugins.diffusion.catalog import CATALOG
    from plugins.diffusion.hub import cached_folder
    from plugins.diffusion.models import VAEModel

    out = []
    for name, kind, make in (("sd-vae-ft-mse", "AutoencoderKL", lambda: AutoencoderKL(**SD_VAE)),
                             ("taesd", "AutoencoderTiny", AutoencoderTiny)):
        repo, card, _ = CATALOG[f"diffusion/{name}"]
        folder = cached_folder(repo)
        if folder is not None:
            out.append((f"{repo} (real)", load_folder(folder, card), True))
        else:
            torch.manual_seed(0)
            out.append((f"{name} arch, random", VAEModel(_card(name, 256), make().eval(), kind, 256), False))
    return out


def vae_speed() -> list:
    from core.images import psnr

    print("\n## VAE at 256 px, CPU, per image (2 shared photos): encode / decode seconds, reconstruction PSNR")
    print("| model | encode s | decode s | PSNR dB |")
    print("|---|---|---|---|")
    rows = vaes()
    for label, model, real in rows:
        x = test_images(2, 256, 3)
        with torch.no_grad():
            te = timed(model.encode, x)
            z = model.encode(x)
            td = timed(model.generate, z, batch_size=2)
        p = float(psnr(model.generate(z), x).mean())
        print(f"| {label} | {te / 2:.2f} | {td / 2:.2f} | {p:.1f}{'' if real else ' (random weights: meaningless)'} |")
    return rows


def interpolation(rows: list, vae_rows: list, full: bool) -> None:
    from core.interpolate import path

    print("\n## 16-frame interpolation (two endpoints -> 16 decoded frames, batch 16), CPU")
    print("| model | setting | seconds |")
    print("|---|---|---|")
    for label, model, _, _ in rows:
        steps = 10 if model.image_size < 256 or full else 1
        a, b = model.sample(1, 1), model.sample(1, 2)
        t = timed(model.generate, path(a, b, 16, "slerp"), "x_T", steps=steps)
        est = "" if steps == 10 else f" (x10 for 10 steps: ~{t * 10:.0f} s, estimated)"
        print(f"| {label} | slerp in x_T, {steps} DDIM steps | {t:.1f}{est} |")
    for label, model, _ in vae_rows:
        z = model.encode(test_images(2, 256, 3))
        t = timed(model.generate, path(z[:1], z[1:], 16, "lerp"), batch_size=16)
        print(f"| {label} | lerp in the latent | {t:.1f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--full", action="store_true", help="every step count on every model (hours on a CPU for CelebA-HQ)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only-round-trip", action="store_true", help="stop after the round-trip and fresh-sample tables")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from diffusers.utils import logging

    logging.set_verbosity_error()
    rows = unets(a.full)
    print(f"# bench.diffusion ({a.threads} threads; {'real' if all(r[3] for r in rows) else 'some random-weight'} UNets)")
    for label, model, _, _ in rows:
        params = sum(p.numel() for p in model.unet.parameters()) / 1e6
        print(f"- {label}: {params:.1f} M parameters, {model.image_size} px, latent {math.prod(model.spaces['x_T'].spatial)} numbers")
    round_trips(rows, a.full)
    fresh_samples(rows)
    if a.only_round_trip:
        return
    step_speed(rows, a.full)
    vae_rows = vae_speed()
    interpolation(rows, vae_rows, a.full)


if __name__ == "__main__":
    main()
