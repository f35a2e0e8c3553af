"""Overhead of running heavy work on Ray Serve replicas (``--ray``) instead of in-process.

Per request: one decode (``generate`` of one latent), a 32-frame decode, a 20-step projection (per step too),
each the median of a few repetitions after a warm-up, on a local Ray with 2 replicas of the small built-in
models. Then ``--clients`` threads decoding at once (what ``@serve.batch`` groups). On one machine Ray only
adds cost (serialisation, scheduling, a hop between processes); the point of ``--ray`` is replicas on other
machines (GPUs), which a 2-core box cannot show.

    python -m bench.ray_executor [--replicas 2] [--reps 5] [--clients 8]

``measure(executor, model)`` returns the same figures for any executor (the load bench may call it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from core.executor import LOCAL, Executor
from core.model import LatentModel
from core.projection import ProjectionConfig


def _median(fn, reps: int) -> float:
    fn()  # warm-up (first call loads the model on a replica)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def measure(executor: Executor, model: LatentModel, reps: int = 5, clients: int = 8, steps: int = 20) -> dict[str, float]:
    """Seconds per request for each kind of work (medians), and the wall time of ``clients`` concurrent decodes."""
    one, many = model.sample(1, 0), model.sample(32, 1)
    target = model.generate(model.sample(1, 2))
    cfg = ProjectionConfig.for_model(model, None, steps=steps, preview_every=0, init="mean")
    out = {
        "decode 1": _median(lambda: executor.generate(model, one), reps),
        "decode 32": _median(lambda: executor.generate(model, many), reps),
        f"project {steps} steps": _median(lambda: list(executor.project(model, target, cfg)), reps),
    }
    latents = [model.sample(1, s) for s in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        out[f"{clients} concurrent decode 1"] = _median(lambda: list(pool.map(lambda z: executor.generate(model, z), latents)), reps)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--cpus-per-replica", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(1)

    import ray

    from demos.ray_executor import ROOT, RayExecutor
    from plugins.registry import Registry

    reg = Registry().discover(None, use_entry_points=False)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    remote = RayExecutor(replicas=args.replicas, num_cpus=args.cpus_per_replica)
    start = time.perf_counter() - t0
    try:
        print(f"Ray start + {args.replicas} replicas ready: {start:.1f} s; torch threads here: 1; "
              f"{args.cpus_per_replica} CPU per replica\n")
        print("| model | work | in-process | Ray | overhead per request |")
        print("|---|---|---|---|---|")
        for name in ("small_ae/digits", "small_ae/faces"):
            m = reg.get(name)
            local, ray_ = measure(LOCAL, m, args.reps, args.clients), measure(remote, m, args.reps, args.clients)
            for work in local:
                print(f"| {name} | {work} | {local[work] * 1000:.1f} ms | {ray_[work] * 1000:.1f} ms | "
                      f"{(ray_[work] - local[work]) * 1000:+.1f} ms |")
        seen = [remote.handle.stats.remote().result() for _ in range(4 * args.replicas)]  # requests go to either replica
        print(f"\nlargest decode batch grouped by @serve.batch on a replica: {max(s['largest_batch'] for s in seen)} "
              f"(of {args.clients} concurrent requests); replica device: {seen[0]['device']}")
    finally:
        remote.close()
        ray.shutdown()


if __name__ == "__main__":
    main()
