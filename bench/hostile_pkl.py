"""What refusing a hostile StyleGAN pickle costs: file size, peak RSS growth during the refusal, seconds to refuse.

Each hostile file is a shared fixture re-saved with constructor arguments that claim a far larger network than
its weights (the cases of ``tests/test_hostile_pkl.py``); each is loaded in a fresh process, as the upload check
loads it. The last row loads the clean fixture, for scale. Target: growth <= 50 MB for every refusal.

    python -m bench.hostile_pkl
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 50


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.test_hostile_pkl import FIXTURES, HOSTILE, make_hostile, measure_refusal

    if not (FIXTURES / "ada_r32.pkl").exists():
        print(f"The shared fixtures are missing ({FIXTURES}).")
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(name, make_hostile(name, Path(tmp))) for name in HOSTILE]
        cases.append(("clean ada_r32 (loads)", FIXTURES / "ada_r32.pkl"))
        for name, path in cases:
            r = measure_refusal(path)
            rows.append((name, path.stat().st_size / 1e6, r["growth_mb"], r["seconds"], r["message"]))
    print(f"{'file':<24} {'size MB':>8} {'RSS growth MB':>14} {'seconds':>8}  outcome")
    missed = 0
    for name, size, growth, seconds, message in rows:
        refused = message is not None
        flag = "" if not refused or growth <= TARGET_MB else f"  (over the {TARGET_MB} MB target)"
        missed += bool(flag)
        outcome = ("refused: " + message.split(": ", 1)[-1][:90]) if refused else "loaded"
        print(f"{name:<24} {size:>8.2f} {growth:>14.1f} {seconds:>8.2f}  {outcome}{flag}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
