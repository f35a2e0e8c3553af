"""Seconds from `python app.py` to the first HTTP 200, cold and warm.

Cold: the first start after deleting the project's bytecode caches and, when
allowed (root on Linux), dropping the OS page cache. Warm: the median of the
next starts. Target: <= 6 s warm on a 2-core machine.

    python -m bench.startup [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_start(timeout: float = 120.0) -> float:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("no HTTP 200 within the timeout")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_cold() -> str:
    for cache in ROOT.rglob("__pycache__"):
        if ".venv" not in cache.parts:
            shutil.rmtree(cache, ignore_errors=True)
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "bytecode caches deleted, OS page cache dropped"
    except OSError:
        return "bytecode caches deleted (OS page cache could not be dropped here, so libraries may still be in memory)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="warm starts to time")
    args = p.parse_args()
    how = make_cold()
    cold = time_start()
    warm = [time_start() for _ in range(args.runs)]
    print("| start | seconds to first HTTP 200 | target |\n|---|---|---|")
    print(f"| cold ({how}) | {cold:.2f} | — |")
    print(f"| warm (median of {args.runs}: {', '.join(f'{w:.2f}' for w in warm)}) | {statistics.median(warm):.2f} | <= 6.0 |")


if __name__ == "__main__":
    main()
