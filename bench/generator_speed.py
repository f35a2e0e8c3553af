"""Generator speed: our fast path vs our reference (literal) path, StyleGAN2 FFHQ-256 and StyleGAN3-T/R 256.

Random weights of the released architectures (plugins.stylegan.random_init presets). Each
(case, path) runs in a fresh subprocess so peak memory is its own; both paths use the same
saved weights and latents, and the script prints the max abs difference between their images.

    python bench/generator_speed.py                 # CPU, all cases
    python bench/generator_speed.py --quick         # CPU, 1 rep, no reference run for SG3 (slow)
    python bench/generator_speed.py --device cuda   # GPU: fp32 and fp16 (the file's use_fp16 layers)

Official numbers (NVIDIA code, fp32, CPU, 2 threads, measured on this kind of machine) are
printed for context; compare ratios within one run, since timings on shared CPUs are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [("sg2-ffhq256", 1), ("sg2-ffhq256", 8), ("sg3-t-256", 1), ("sg3-r-256", 1)]
OFFICIAL_CPU_S = {("sg2-ffhq256", 1): 0.26, ("sg2-ffhq256", 8): 3.8, ("sg3-t-256", 1): 13.6, ("sg3-r-256", 1): 22.3}
TARGET_SPEEDUP = {("sg2-ffhq256", 1): 1.0, ("sg2-ffhq256", 8): 1.5, ("sg3-t-256", 1): 3.0, ("sg3-r-256", 1): 3.0}


class _RssSampler:
    """Peak resident memory above the level at start, sampled every millisecond (Linux /proc; else ru_maxrss)."""

    def __init__(self) -> None:
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return 0

    def _loop(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        if self.start == 0:  # no /proc: the process-wide high-water mark is the best we have
            return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.ru0) / 1024
        return (self.peak - self.start) / 2**20


def _child(args: argparse.Namespace) -> None:
    import torch

    from plugins.stylegan.weights import load_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)
    G = load_generator(args.folder).to(dev).set_impl(args.impl)
    ws = torch.load(args.ws, weights_only=True)[: args.batch].to(dev)
    force_fp32 = args.precision == "fp32"
    cuda = dev.type == "cuda"

    def run():
        with torch.no_grad():
            out = G.synthesis(ws, noise_mode="const", force_fp32=force_fp32)
        if cuda:
            torch.cuda.synchronize()
        return out

    sampler = _RssSampler() if not cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(args.reps + (1 if args.warmup else 0)):
        t0 = time.perf_counter()
        img = run()
        times.append(time.perf_counter() - t0)
    if args.warmup:
        times = times[1:]
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else sampler.stop()
    torch.save(img.float().cpu(), args.out)
    print(json.dumps({"best_s": min(times), "mean_s": sum(times) / len(times), "peak_mib": peak}))


def _run_child(folder, ws, case, impl, precision, a, tmp) -> dict:
    out = Path(tmp) / f"{case[0]}-{case[1]}-{impl}-{precision}.pt"
    cmd = [
        sys.executable, __file__, "--child", "--folder", str(folder), "--ws", str(ws), "--batch", str(case[1]),
        "--impl", impl, "--precision", precision, "--device", a.device, "--out", str(out),
        "--reps", str(1 if (impl == "reference" and case[0].startswith("sg3")) else a.reps), "--threads", str(a.threads),
    ] + (["--warmup"] if a.warmup else [])  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        raise RuntimeError(f"{case} {impl} failed:\n{res.stderr[-3000:]}")
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "out": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="1 rep; skip the (slow) SG3 reference path on CPU")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--cases", default="", help="comma list like sg2-ffhq256:1,sg3-t-256:1 (default: all)")
    ap.add_argument("--warmup", action="store_true", help="one untimed run first (default on for CUDA)")
    # child-only arguments
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for k in ("folder", "ws", "impl", "precision", "out"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return _child(a)
    import torch

    from plugins.stylegan.random_init import build_preset
    from plugins.stylegan.weights import save_generator

    cuda = a.device.startswith("cuda")
    a.warmup = a.warmup or cuda
    if a.quick:
        a.reps = 1
    cases = CASES
    if a.cases:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in a.cases.split(",")]
    print(f"device {a.device}; torch {torch.__version__}; threads {a.threads or torch.get_num_threads()}; reps {a.reps}")
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    hdr = f"{'case':<16}{'batch':>5} {'prec':>5} {'path':>10} {'best s':>9} {'img/s':>8} {'peak MiB':>9} {'vs ref':>7} {'vs official':>12} {'maxabs fast-ref':>16}"
    print(hdr)
    print("-" * len(hdr))
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for case in cases:
            name, batch = case
            if name not in built:
                G = build_preset(name, seed=0)
                folder = Path(tmp) / name
                save_generator(G, folder)
                z = torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    ws = G.mapping(z, None, truncation_psi=0.7)
                torch.save(ws, Path(tmp) / f"{name}-ws.pt")
                built[name] = folder
                del G
            folder, ws = built[name], Path(tmp) / f"{name}-ws.pt"
            for precision in ("fp32", "fp16") if cuda else ("fp32",):
                res = {}
                for impl in ("fast", "reference"):
                    if impl == "reference" and a.quick and not cuda and name.startswith("sg3"):
                        continue
                    res[impl] = _run_child(folder, ws, case, impl, precision, a, tmp)
                diff = ""
                if "reference" in res:
                    f, r = torch.load(res["fast"]["out"]), torch.load(res["reference"]["out"])
                    diff = f"{(f - r).abs().max().item():.2e}"
                for impl, r in res.items():
                    speed = ""
                    if impl == "fast" and "reference" in res:
                        speed = f"{res['reference']['best_s'] / r['best_s']:.2f}x"
                    off = ""
                    if not cuda and case in OFFICIAL_CPU_S:
                        off = f"{OFFICIAL_CPU_S[case] / r['best_s']:.2f}x"
                        if impl == "fast":
                            off += f" (>={TARGET_SPEEDUP[case]}x)"
                    print(
                        f"{name:<16}{batch:>5} {precision:>5} {impl:>10} {r['best_s']:>9.3f} {batch / r['best_s']:>8.2f} "
                        f"{r['peak_mib']:>9.0f} {speed:>7} {off:>12} {diff if impl == 'fast' else '':>16}",
                        flush=True,
                    )
    if not cuda:
        print(
            "\nofficial (NVIDIA code, fp32, CPU, 2 threads): "
            + ", ".join(f"{n} b{b}: {s} s" for (n, b), s in OFFICIAL_CPU_S.items())
        )
        print("'vs official' = official seconds / our seconds on this run's machine (same machine type as the official numbers).")


if __name__ == "__main__":
    main()
