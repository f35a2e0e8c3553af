"""Projection speed: recover known latents of StyleGAN2 generators, NVIDIA's projector recipe vs ours.

For each generator, targets are ``G(w*)`` with ``w* = mapping(z, psi=0.7)`` rendered with
``noise_mode='none'`` (so the search for the latent is measured, not the recovery of random
noise maps). All targets of a generator are projected as one batch (independent projections
under a summed loss; see core.projection). PSNR is that of the current latent (decoded without
the exploration noise, with the current noise maps) after 50 / 100 / 200 / 500 / 1000 steps of
one run, plus the final result (best latent per image).

Methods (all with pixel MSE, the loss both can run here):

* ``nvidia``: the StyleGAN2-ADA projector recipe: start at the mean of 10,000 mapped samples, one w
  for all layers, Adam lr 0.1 (betas 0.9, 0.999), 5 % ramp-up, cosine ramp-down over the last 25 %,
  w noise 0.05 x w_std decaying to 0 over 75 % (squared), noise maps optimised with the
  autocorrelation regulariser (weight 1e5) and renormalised every step, 1000 steps;
* ``nvidia, no noise maps``: the same, without noise maps (rendered like the targets): an ablation
  that separates the latent search from the noise maps;
* ``ours W+`` / ``ours W``: ``StyleGANModel.projection_defaults(space)`` (what the app uses, with MSE), run
  for 200 steps, rendering noise like the targets (``noise_mode='none'``); ``ours W+ (1000)`` runs
  the same recipe for 1000 steps.

Seconds per step are measured twice: over each whole run, and, fairly on a shared CPU, by
alternating single steps of the NVIDIA recipe and ours (medians). One-time costs (statistics of
10,000 samples, ...) are reported separately.

    python bench/projection.py                    # full run (64 px: 8 targets; FFHQ-256-sized: 2 targets)
    python bench/projection.py --quick            # smoke run, a minute or two
    python bench/projection.py --only 64 --seeds 8

Compare timings within one run: the machine's other load changes absolute numbers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.card import ModelCard  # noqa: E402
from core.images import psnr  # noqa: E402
from core.projection import ProjectionConfig, project  # noqa: E402

FIXTURE_64 = ROOT.parent / "shared" / "fixtures" / "stylegan" / "ada_r64_fp16_legacy.pkl"
CHECKPOINTS = (50, 100, 200, 500, 1000)
CARD = ModelCard(name="bench/stylegan", title="Random StyleGAN2", description="random weights", trained_on="nothing",
                 resolution=64, licence="none", source="built-in")  # fmt: skip


def generator_64():
    """The shared 64 px fixture when present, else a random generator of the same configuration."""
    from plugins.stylegan.random_init import build_random

    if FIXTURE_64.is_file():
        from plugins.stylegan.pickle_loader import load_network_pickle

        return "SG2 64 px (fixture ada_r64_fp16_legacy)", load_network_pickle(FIXTURE_64)
    G = build_random("stylegan2", img_resolution=64, z_dim=80, w_dim=96, mapping_layers=2, channel_base=6144, channel_max=96, seed=64)
    return "SG2 64 px (random_init, fixture config)", G


def generator_256():
    from plugins.stylegan.random_init import build_preset

    return "SG2 FFHQ-256-sized (random_init sg2-ffhq256)", build_preset("sg2-ffhq256")


def make_model(G):
    from plugins.stylegan.model import StyleGANModel

    return StyleGANModel(G, CARD)


def targets(model, seeds: list[int], psi: float = 0.7) -> torch.Tensor:
    z = torch.stack([torch.randn(model.G.z_dim, generator=torch.Generator().manual_seed(1000 + s)) for s in seeds])
    with torch.no_grad():
        ws = model.G.mapping(z, None, truncation_psi=psi)
        return model.G.synthesis(ws, noise_mode="none")


def nvidia_config(steps: int, noise_maps: bool = True) -> ProjectionConfig:
    return ProjectionConfig(
        space="w", steps=steps, lr=0.1, init="samples", stats_samples=10_000, lr_rampup=0.05, lr_rampdown=0.25,
        latent_noise=0.05, latent_noise_ramp=0.75, optimize_noise=noise_maps, noise_regularize=1e5,
        noise_mode=None if noise_maps else "none", betas=(0.9, 0.999), loss="mse",
    )  # fmt: skip


def ours_config(model, space: str, steps: int) -> ProjectionConfig:
    """What the app uses, but with pixel MSE (the loss the baseline runs with) and targets' noise mode."""
    return ProjectionConfig.for_model(model, space, steps=steps, noise_mode="none", loss="mse")


def current_psnr(model, ev, target: torch.Tensor, noise_mode: str) -> float:
    """PSNR of the latent after this step, without exploration noise, with the noise maps after this step."""
    kw = {"noise": ev.noise} if ev.noise else {"noise_mode": noise_mode}
    with torch.no_grad():
        return float(psnr(model.decode(ev.latent, ev.space, **kw), target).mean())


def run(model, target: torch.Tensor, cfg: ProjectionConfig, checkpoints: tuple[int, ...] = CHECKPOINTS) -> dict:
    """One projection; PSNR at the checkpoints, final PSNR, seconds per step, one-time setup seconds."""
    cfg = replace(cfg, preview_every=math.gcd(*checkpoints))  # checkpoint events carry the noise maps
    out: dict = {"psnr": {}, "setup": 0.0}
    step_time = 0.0
    gen = project(model, target, cfg)
    while True:
        t0 = time.perf_counter()
        ev = next(gen, None)
        elapsed = time.perf_counter() - t0
        if ev is None:
            break
        if ev.done:
            out["final"] = ev.psnr
            continue
        if ev.step == 1:
            out["setup"] = ev.setup_seconds
            elapsed -= ev.setup_seconds
        step_time += elapsed
        if ev.step in checkpoints:
            fast, model.fast_grad = getattr(model, "fast_grad", False), False  # scored in float32
            out["psnr"][ev.step] = current_psnr(model, ev, target, cfg.noise_mode or "const")
            model.fast_grad = fast
    out["s_per_step"] = step_time / cfg.steps
    return out


def alternating_timing(model, target: torch.Tensor, cfgs: dict[str, ProjectionConfig], steps: int) -> dict[str, float]:
    """Median seconds per step of each config, single steps taken in turn (fair under a drifting background load)."""
    gens, times = {}, {k: [] for k in cfgs}
    for name, cfg in cfgs.items():
        gens[name] = project(model, target, replace(cfg, steps=1000, preview_every=0))
        next(gens[name])  # setup and first step
    for _ in range(steps):
        for name, gen in gens.items():
            t0 = time.perf_counter()
            next(gen)
            times[name].append(time.perf_counter() - t0)
    for gen in gens.values():
        gen.close()
    return {k: statistics.median(v) for k, v in times.items()}


def fmt_row(name: str, r: dict, steps: int) -> str:
    cells = [f"{r['psnr'][c]:6.2f}" if c in r["psnr"] else "     -" for c in CHECKPOINTS]
    return f"| {name:<28} | {steps:>5} | " + " | ".join(cells) + f" | {r['final']:6.2f} | {r['s_per_step']:6.3f} | {r['setup']:6.2f} |"


def bench_generator(title: str, G, seeds: list[int], scale: float, timing_steps: int, extra_runs: bool = True) -> None:
    model = make_model(G)
    target = targets(model, seeds)
    n_nv, n_ours, n_long = max(2, int(1000 * scale)), max(1, int(200 * scale)), max(2, int(1000 * scale))
    print(f"\n### {title}: {G.img_resolution} px, w_dim {G.w_dim}, {G.num_ws} layers; {len(seeds)} targets in one batch\n", flush=True)
    print(f"| method | steps | {' | '.join(f'@{c:>4}' for c in CHECKPOINTS)} |  final | s/step | setup s |")
    print("|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|---|", flush=True)
    runs = [
        ("nvidia", nvidia_config(n_nv), n_nv),
        ("ours W+", ours_config(model, "w+", n_ours), n_ours),
        ("ours W", ours_config(model, "w", n_ours), n_ours),
    ]
    if extra_runs:
        runs.insert(1, ("nvidia, no noise maps", nvidia_config(n_nv, noise_maps=False), n_nv))
        runs.append(("ours W+ (1000)", ours_config(model, "w+", n_long), n_long))
    results = {}
    for name, cfg, steps in runs:
        results[name] = run(model, target, cfg)
        print(fmt_row(name, results[name], steps), flush=True)
    goal = max(results["nvidia"]["psnr"].get(n_nv, -1.0), results["nvidia"]["final"])  # its better of last and best
    for name in ("ours W+", "ours W"):
        got = results[name]["psnr"].get(n_ours, results[name]["final"])  # the current latent, not the best seen
        print(f"\n{name} after {n_ours} steps: {got:.2f} dB vs nvidia after {n_nv}: {goal:.2f} dB -> "
              f"{'MEETS' if got >= goal else 'MISSES'} the 5x target", end="")  # fmt: skip
    print()
    t = alternating_timing(model, target, {"nvidia": nvidia_config(1000), "ours W+": ours_config(model, "w+", 200)}, timing_steps)
    print(f"\nalternating single steps ({timing_steps} each): nvidia {t['nvidia']:.3f} s/step, ours W+ {t['ours W+']:.3f} s/step "
          f"(ratio {t['ours W+'] / t['nvidia']:.2f})", flush=True)  # fmt: skip


COMPARE_CHECKPOINTS = (1, 10, 20, 30, 50, 100)


def compare_defaults(seeds: list[int], old_steps: int, new_steps: int, timing_steps: int) -> None:
    """FFHQ-256-sized: the old default (start at w_avg, float32) vs the new one (latent-bank start, bf16 gradient
    decodes where the CPU has them), same loss (MSE) and targets, PSNR vs steps, and single steps timed in turn."""
    from plugins.stylegan.model import BANK_SIZE
    from plugins.stylegan.start import bank_for, fast_grad_dtype

    title, G = generator_256()
    model = make_model(G)
    target = targets(model, seeds)
    t0 = time.perf_counter()
    bank_for(model, BANK_SIZE, 0, "none")
    bank_s = time.perf_counter() - t0
    bf16 = fast_grad_dtype("cpu") is not None
    print(f"\n### {title}: old default vs new, {len(seeds)} target(s) in one batch; bf16 gradient decodes: {bf16}\n")
    print(f"one-time latent bank ({BANK_SIZE} drawings, cached per model): {bank_s:.1f} s\n")
    cps = list(COMPARE_CHECKPOINTS)
    print(f"| default | steps | {' | '.join(f'@{c}' for c in cps)} | final | s/step |")
    print("|---|---|" + "---|" * len(cps) + "---|---|", flush=True)
    old = {"init": "mean", "betas": (0.9, 0.95), "lr_rampup": 0.05}  # the defaults before the bank start
    rows = [("old: w_avg start, fp32", old, False, old_steps), ("new: bank start, bf16", {}, True, new_steps),
            ("old start + new schedule, bf16", {"init": "mean"}, True, new_steps)]
    for name, changes, fast, steps in rows:
        model.fast_grad = fast
        r = run(model, target, replace(ours_config(model, "w+", steps), **changes), tuple(c for c in cps if c <= steps))
        cells = [f"{r['psnr'][c]:.2f}" if c in r["psnr"] else "-" for c in cps]
        print(f"| {name} | {steps} | " + " | ".join(cells) + f" | {r['final']:.2f} | {r['s_per_step']:.3f} |", flush=True)
    gens, times = {}, {"fp32": [], "bf16": []}
    for name in times:
        gens[name] = project(model, target, replace(ours_config(model, "w+", 1000), init="mean", preview_every=0))
    for _ in range(timing_steps + 1):
        for name, gen in gens.items():
            model.fast_grad = name == "bf16"
            t0 = time.perf_counter()
            next(gen)
            times[name].append(time.perf_counter() - t0)
    fp32, fast = (statistics.median(times[k][1:]) for k in ("fp32", "bf16"))
    print(f"\nalternating single steps ({timing_steps} each): fp32 {fp32:.3f} s/step, bf16 {fast:.3f} s/step "
          f"(ratio {fp32 / fast:.2f}x)", flush=True)
    model.fast_grad = True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 and 1 targets, 2 %% of the steps")
    p.add_argument("--only", choices=["64", "256"], help="one generator only")
    p.add_argument("--seeds", type=int, default=8, help="targets for the 64 px generator")
    p.add_argument("--seeds-256", type=int, default=2, help="targets for the FFHQ-256-sized one (8 take hours on 2 cores)")
    p.add_argument("--full-256", action="store_true", help="also the ablation and the 1000-step run of ours on FFHQ-256 (+~2x time)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", action="store_true", help="FFHQ-256-sized only: old default vs new, PSNR vs steps")
    p.add_argument("--old-steps", type=int, default=100)
    p.add_argument("--new-steps", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compare:
        start = time.perf_counter()
        compare_defaults(list(range(args.seeds_256)), args.old_steps, args.new_steps, 2 if args.quick else 5)
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
        return 0
    scale = 0.02 if args.quick else 1.0
    timing_steps = 2 if args.quick else 10
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PSNR in dB of the current latent after N steps")
    if args.only in (None, "64"):
        title, G = generator_64()
        bench_generator(title, G, list(range(2 if args.quick else args.seeds)), scale, timing_steps)
    if args.only in (None, "256"):
        title, G = generator_256()
        bench_generator(title, G, list(range(1 if args.quick else args.seeds_256)), scale, timing_steps, args.full_256 or args.quick)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
