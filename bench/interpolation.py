"""Time to make 32 interpolation frames (latents + decode) on each built-in model.

Target: < 0.5 s for 32 frames on each small autoencoder. The baseline column
decodes the frames one by one (what a naive loop does); ours decodes in one
batch.

    python -m bench.interpolation
"""

from __future__ import annotations

import statistics
import time

import torch

from core.interpolate import path
from plugins.registry import Registry


def timed(fn, reps: int = 5) -> float:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    reg = Registry().discover(None, use_entry_points=False)
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| model | method | 32 frames, batched (ours) | one by one (baseline) | speed-up | target |")
    print("|---|---|---|---|---|---|")
    for name in [n for n in reg.names() if n.startswith("small_ae/")]:
        m = reg.get(name)
        space = m.default_space
        a, b = m.sample(1, 1, space), m.sample(1, 2, space)
        for method in ("lerp", "slerp"):
            ours = timed(lambda: m.generate(path(a, b, 32, method), space, batch_size=32))  # noqa: B023
            base = timed(lambda: [m.generate(z[None], space) for z in path(a, b, 32, method)])  # noqa: B023
            ok = "yes" if ours < 0.5 else "NO"
            print(f"| {name} | {method} | {ours * 1000:.1f} ms | {base * 1000:.1f} ms | {base / ours:.1f}x | < 500 ms: {ok} |")


if __name__ == "__main__":
    main()
