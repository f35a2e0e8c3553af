"""Time to make 32 interpolation frames (latents + decode) on each built-in model.

Target: < 0.5 s for 32 frames on each small autoencoder. The baseline column
decodes the frames one by one (what a naive loop does); ours decodes in one
batch.

    python -m bench.interpolation
    python -m bench.interpolation --faces 3   # two face photos: largest frame-to-frame jump over the median step

With ``--faces N``: N pairs of face photos (3DSK man x woman, the in-the-wild photos in pairs) go through the tab's
path (aligned, colours matched, projected and tuned as one pair); for 16 frames it prints the largest step between
consecutive frames over the median step (target <= 2), for the straight line in latent space (the old walk) and for
the evenly spaced walk (``core.interpolate.render_walk``), and writes both strips next to each other with ``--sheet``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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


def face_pairs(n: int):
    faces = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
    men, women = sorted((faces / "3dsk" / "male").glob("*.jpg")), sorted((faces / "3dsk" / "female").glob("*.jpg"))
    wild = [p for p in sorted((faces / "photos").iterdir()) if p.suffix in (".jpg", ".png") and "zebra" not in p.name]
    return list(zip(men, women, strict=False))[:n] + list(zip(wild[0::2], wild[1::2], strict=False))[:n]


def faces(n: int, sheet: Path | None, frames: int = 16) -> None:
    from core.image_input import model_input, stacked_weights
    from core.images import from_pil, to_pil
    from core.interpolate import image_endpoints, path, plan_interpolation, render_walk

    reg = Registry().discover(None, use_entry_points=False)
    model = reg.get("small_ae/faces")
    jumps = lambda imgs: (imgs[1:] - imgs[:-1]).abs().flatten(1).mean(1)  # noqa: E731
    print("| pair | straight line: largest step ÷ median | evenly spaced walk | target |")
    print("|---|---|---|---|")
    strips = []
    for a_path, b_path in face_pairs(n):
        from core.image_input import load_image

        inputs = [model_input(load_image(p, channels=3), model.image_size, 3, align_face=True) for p in (a_path, b_path)]
        targets = torch.cat([from_pil(i.image, 3) for i in inputs])
        plan = plan_interpolation(model, frames, None, "auto", [], True)
        ends = image_endpoints(model, plan, targets, 200, weights=stacked_weights(inputs))
        line = ends.decoder.generate(path(ends.a, ends.b, frames))
        line = ends.colour.between(torch.linspace(0, 1, frames)).undo(line) if ends.colour is not None else line
        _, even = render_walk(ends.decoder, plan, ends.a, ends.b, colour=ends.colour)
        r_line, r_even = (float(j.max() / j.median()) for j in (jumps(line), jumps(even)))
        print(f"| {a_path.name} x {b_path.name} | {r_line:.2f} | {r_even:.2f} | ≤ 2 |", flush=True)
        strips += [torch.cat(list(line), dim=2), torch.cat(list(even), dim=2)]
    if sheet is not None and strips:
        sheet.parent.mkdir(parents=True, exist_ok=True)
        to_pil(torch.cat(strips, dim=1)[None])[0].save(sheet)
        print(f"strips (straight line above the evenly spaced walk, per pair): {sheet}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", type=int, default=0, metavar="PAIRS", help="measure frame jumps between two face photos")
    p.add_argument("--sheet", type=Path, default=None)
    a = p.parse_args()
    if a.faces:
        faces(a.faces, a.sheet)
        return
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
