"""Train the built-in small diffusion model and write it as a standard diffusers pipeline folder.

    python -m plugins.diffusion.train digits --out plugins/diffusion/weights/digits --seed 0
    python -m plugins.diffusion.train digits-tiny --out /tmp/tiny --steps 20      # seconds: for tests

The folder is what ``DDPMPipeline.save_pretrained`` writes (``model_index.json``, ``unet/`` with
safetensors weights, ``scheduler/``) plus ``training.json`` (recipe, split, measured figures), so it
loads offline with diffusers' own ``from_pretrained`` like any hub model. The same seed and thread
count give byte-identical weights on the same machine: deterministic algorithms, a fixed thread
count, and every random draw (initialisation, batches, timesteps, noise) from the seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from plugins.small_ae.data import Dataset, load_digits_dataset

ROUNDTRIP_STEPS = (10, 20, 50, 100)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser steps (batches), not epochs: the budget is time
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    ema: float = 0.998  # the saved weights are an exponential moving average (much cleaner samples)
    size: int = 16  # the 8x8 digits are upsampled (bilinear) so the UNet has three resolutions
    seed: int = 0
    # One thread: on a shared CPU two threads were far slower per step (OpenMP threads spinning against other jobs;
    # docs/benchmarks.md, *Diffusion*). Part of what makes a run reproducible.
    threads: int = 1


@dataclass(frozen=True)
class Preset:
    unet: dict[str, Any]
    scheduler: dict[str, Any]
    train: TrainConfig


_SCHEDULER = dict(
    num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, prediction_type="epsilon", clip_sample=True
)

PRESETS: dict[str, Preset] = {
    # 1.1 M parameters, 4.5 MB: self-attention only at the 4x4 level, where it is cheap.
    "digits": Preset(
        unet=dict(
            in_channels=1,
            out_channels=1,
            layers_per_block=1,
            block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        ),
        scheduler=_SCHEDULER,
        train=TrainConfig(),
    ),
    # The same recipe at toy size, so the tests run the whole CLI in seconds.
    "digits-tiny": Preset(
        unet=dict(
            in_channels=1,
            out_channels=1,
            layers_per_block=1,
            block_out_channels=(8, 16),
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=8,
        ),
        scheduler=_SCHEDULER,
        train=TrainConfig(steps=20, batch_size=16, size=8, warmup=5, ema=0.9),
    ),
}


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def digits_images(ds: Dataset, size: int) -> torch.Tensor:
    """The digits at ``size`` x ``size`` (bilinear from 8x8), still in [-1, 1]."""
    x = ds.images
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x.contiguous()


def train_unet(images: torch.Tensor, preset: Preset, tc: TrainConfig, progress: bool = True):
    """Fit a ``UNet2DModel`` to predict the noise added by a ``DDPMScheduler``; returns (EMA UNet, scheduler)."""
    from diffusers import DDPMScheduler, UNet2DModel
    from tqdm import tqdm

    set_determinism(tc.seed, tc.threads)
    unet = UNet2DModel(sample_size=tc.size, **preset.unet)
    ema = UNet2DModel(sample_size=tc.size, **preset.unet).requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    sched = DDPMScheduler(**preset.scheduler)
    g = torch.Generator().manual_seed(tc.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    lr = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / tc.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, tc.steps) / tc.steps))
    )
    unet.train()
    perm, pos, running = torch.randperm(len(images), generator=g), 0, None
    bar = tqdm(range(tc.steps), desc="training", disable=not progress, file=sys.stderr)
    for step in bar:
        if pos + tc.batch_size > len(images):
            perm, pos = torch.randperm(len(images), generator=g), 0
        x0 = images[perm[pos : pos + tc.batch_size]]
        pos += tc.batch_size
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=g)
        loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr.step()
        decay = min(tc.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
    return ema.eval(), sched


@torch.no_grad()
def roundtrip_psnr(unet, scheduler_config, images: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-image PSNR of DDIM inversion to x_T followed by DDIM sampling back (the model's own round trip)."""
    from core.images import psnr
    from plugins.diffusion.ddim import ddim_invert, ddim_sample

    xT = ddim_invert(unet, scheduler_config, images, steps)
    return psnr(ddim_sample(unet, scheduler_config, xT, steps), images)


@torch.no_grad()
def sample_grid(unet, scheduler_config, n: int, seed: int, steps: int = 50) -> torch.Tensor:
    """``n`` DDIM samples from seeded noise (predicted x0 clipped at each step), (n, C, H, W) clamped to [-1, 1]."""
    from plugins.diffusion.ddim import ddim_sample

    c, s = unet.config.in_channels, unet.config.sample_size
    xT = torch.randn((n, c, s, s), generator=torch.Generator().manual_seed(seed))
    return ddim_sample(unet, scheduler_config, xT, steps, clip=True).clamp(-1, 1)


def run(
    name: str,
    tc: TrainConfig,
    out: str | Path,
    progress: bool = True,
    eval_steps: tuple[int, ...] = ROUNDTRIP_STEPS,
    eval_images: int = 64,
) -> dict:
    """Train preset ``name`` on the digits' training split and write the pipeline folder; returns facts for the log."""
    from diffusers import DDPMPipeline

    preset = PRESETS[name]
    ds = load_digits_dataset()
    images = digits_images(ds, tc.size)
    heldout = torch.from_numpy(ds.heldout)
    t0 = time.perf_counter()
    unet, sched = train_unet(images[~heldout], preset, tc, progress)
    seconds = time.perf_counter() - t0
    out = Path(out)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(out, safe_serialization=True)
    test = images[heldout][:eval_images]
    facts: dict[str, Any] = {
        "train_seconds": round(seconds, 1),
        "params": sum(p.numel() for p in unet.parameters()),
        "roundtrip_psnr_db": {str(k): round(float(roundtrip_psnr(unet, sched.config, test, k).mean()), 2) for k in eval_steps},
    }
    training = {
        "dataset": "scikit-learn digits (UCI optical recognition of handwritten digits), 8x8 upsampled bilinear",
        "n_train": int((~heldout).sum()),
        "n_heldout": int(heldout.sum()),
        "heldout_rule": "plugins.small_ae.data.load_digits_dataset (hash of the sample index, 20 %)",
        "preset": name,
        **asdict(tc),
        "roundtrip": {"images": len(test), "psnr_db_by_steps": facts["roundtrip_psnr_db"]},
    }
    (out / "training.json").write_text(json.dumps(training, indent=2, sort_keys=True) + "\n")
    return facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m plugins.diffusion.train", description=__doc__.split("\n\n")[0])
    p.add_argument("preset", choices=sorted(PRESETS), help="'digits' is the built-in model; 'digits-tiny' is for tests")
    p.add_argument("--out", required=True, help="folder to write the pipeline (model_index.json, unet/, scheduler/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="override the preset's number of optimiser steps")
    p.add_argument("--threads", type=int, help="torch threads (part of what makes a run reproducible)")
    p.add_argument(
        "--eval-steps",
        type=int,
        nargs="*",
        default=list(ROUNDTRIP_STEPS),
        help="DDIM step counts at which to measure the held-out round trip (none: skip)",
    )
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    tc = PRESETS[a.preset].train
    if a.steps is not None and a.steps < 1:
        p.error("--steps must be at least 1")
    tc = replace(tc, seed=a.seed, steps=a.steps or tc.steps, threads=a.threads or tc.threads)
    facts = run(a.preset, tc, a.out, progress=not a.quiet, eval_steps=tuple(a.eval_steps))
    print(json.dumps({"out": str(a.out), **facts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
