"""Face detection + landmark accuracy and alignment speed, against hand-placed landmarks.

Ground truth: the London set (102 frontal photos, 1350 px, 189 points: 0/1 =
pupils, 87/93 = mouth corners) and the phone selfies (pupils only: points 0/1
in the 106-point files; in the 83-point "NNcm" files the pupils are 63 and 81,
checked by eye on the images). Error = distance to the true point as % of the
true inter-pupil distance. Needs the developers' ../shared data.

    python -m bench.alignment              # all tables (the slowest way)
    python -m bench.alignment --limit 20   # first 20 London photos only

Tables: detector settings (found, errors, time per photo), eye-centre
estimates, turned selfies, and the alignment transform size.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from core.faces import FaceDetector, FivePoints, align_ffhq
from core.faces import geometry as g
from core.faces.align import ffhq_quad
from core.images import from_pil, psnr

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("LATENT_LAB_SHARED", ROOT.parent / "shared")) / "data" / "faces"


def read_tem(path: Path) -> np.ndarray:
    """Psychomorph template: first line = point count, then one ``x<TAB>y`` line per point."""
    lines = path.read_text().splitlines()
    n = int(lines[0])
    return np.array([[float(v) for v in line.split()[:2]] for line in lines[1 : n + 1]])


def ground_truth() -> list[tuple[str, Path, np.ndarray, np.ndarray | None]]:
    """(name, photo, pupils (2, 2) image-left first, mouth corners (2, 2) or None)."""
    items = []
    for tem in sorted((FACES / "london" / "neutral").glob("*.tem")):
        p = read_tem(tem)
        items.append((f"london/{tem.stem}", tem.with_suffix(".jpg"), p[[0, 1]], p[[87, 93]]))
    for tem in sorted((FACES / "selfies").glob("*.tem")):
        p = read_tem(tem)
        pupils = p[[63, 81]] if len(p) == 83 else p[[0, 1]]
        items.append((f"selfies/{tem.stem}", tem.with_suffix(".jpg"), pupils, None))
    return items


def _pair(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Distances between two point pairs, matched in the order that fits best."""
    d1 = np.hypot(*(pred - true).T)
    d2 = np.hypot(*(pred[::-1] - true).T)
    return d1 if d1.sum() <= d2.sum() else d2


EYE_ESTIMATES = {
    "mean of 6 eye points (FFHQ)": lambda lm: (lm[36:42].mean(0), lm[42:48].mean(0)),
    "mid of eye corners 36/39, 42/45": lambda lm: ((lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2),
    "mean of 4 lid points": lambda lm: (lm[[37, 38, 40, 41]].mean(0), lm[[43, 44, 46, 47]].mean(0)),
}


def errors(lm: np.ndarray, pupils: np.ndarray, mouth: np.ndarray | None, eye_fn=EYE_ESTIMATES["mean of 6 eye points (FFHQ)"]):
    ipd = float(np.hypot(*(pupils[1] - pupils[0])))
    eyes = _pair(np.array(eye_fn(lm)), pupils) / ipd * 100
    mth = _pair(lm[[48, 54]], mouth) / ipd * 100 if mouth is not None else np.array([])
    return eyes, mth


def run_config(det: FaceDetector, items, photos: dict[str, Image.Image]) -> dict:
    eye, mouth, times, found, lms = [], [], [], 0, {}
    for name, _, pupils, mth in items:
        t = time.perf_counter()
        faces = det.detect(photos[name])
        times.append(time.perf_counter() - t)
        if not faces:
            continue
        found += 1
        lms[name] = faces[0].landmarks
        e, m = errors(faces[0].landmarks, pupils, mth)
        eye += list(e)
        mouth += list(m)
    return dict(found=found, n=len(items), eye=np.array(eye), mouth=np.array(mouth), t=np.array(times), lms=lms)


def _row(label: str, r: dict) -> str:
    e, m = r["eye"], r["mouth"]
    ms = f"{m.mean():5.2f} / {m.max():5.2f}" if len(m) else "    - /     -"
    return f"| {label:<34} | {r['found']:>3}/{r['n']:<3} | {e.mean():5.2f} / {e.max():5.2f}   | {ms}    | {r['t'].mean():7.3f} |"


HEADER = (
    "| {:<34} | found   | eyes mean/max % | mouth mean/max % | s/photo | faces C/L/A/Z |\n"
    "|{}|---------|-----------------|------------------|---------|---------------|"
)
EDGE_PHOTOS = ["singnet_classroom_in_tanzania.jpg", "singnet_laos.jpg", "skimage_astronaut.png", "singnet_zebra_stripes.jpg"]


# The detector as it was: first hit, no orientation search, no second landmark fit, no score filter.
BEFORE = dict(turns=(), tilts=(), sure_score=-np.inf, relative_score=np.inf, roll_refit=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="use only the first N London photos")
    args = ap.parse_args()
    if not FACES.is_dir():
        raise SystemExit(f"Shared data not found at {FACES}; this benchmark needs the developers' ../shared.")
    items = ground_truth()
    if args.limit:
        london = [i for i in items if i[0].startswith("london")][: args.limit]
        items = london + [i for i in items if i[0].startswith("selfies")]
    photos = {name: Image.open(path).convert("RGB") for name, path, *_ in items}
    print(f"{len(items)} photos with hand-placed landmarks\n")

    configs = {
        "before: ~1024², upsample 1, upright only": dict(detect_side=1024, upsample=1, max_upscale=1.0, **BEFORE),
        "512², upsample 0": dict(detect_side=512),
        "640², upsample 0": dict(detect_side=640),
        "800², upsample 0 (chosen)": dict(detect_side=800),
        "1024², upsample 0": dict(detect_side=1024),
        "640², upsample 1": dict(detect_side=640, upsample=1),
    }
    print("## Detector settings (London + selfies; landmarks always on full resolution)\n")
    print("HOG searches a copy of about N² pixels. Last column: faces counted in the test photos")
    print("classroom (~14 visible, dim) / laos (2) / astronaut (1; HOG also fires weakly on a badge) / zebra (0).\n")
    print(HEADER.format("setting", "-" * 36))
    results = {}
    extra = {n: Image.open(FACES / "photos" / n).convert("RGB") for n in EDGE_PHOTOS}
    for label, kw in configs.items():
        det = FaceDetector(**kw)
        det.detect(photos[items[0][0]])  # warm-up
        results[label] = r = run_config(det, items, photos)
        counts = "/".join(str(len(det.detect(extra[n]))) for n in EDGE_PHOTOS)
        print(_row(label, r) + f" {counts:>9} |", flush=True)

    chosen = results["800², upsample 0 (chosen)"]
    print("\n## Eye-centre estimate vs hand-placed pupils (chosen detector)\n")
    print("| estimate | London mean / max % | selfies mean / max % |\n|---|---|---|")
    for label, fn in EYE_ESTIMATES.items():
        parts = []
        for prefix in ("london", "selfies"):
            errs = np.concatenate([errors(chosen["lms"][n], p, None, fn)[0] for n, _, p, _ in items if n.startswith(prefix) and n in chosen["lms"]])
            parts.append(f"{errs.mean():5.2f} / {errs.max():5.2f}")
        print(f"| {label} | {parts[0]} | {parts[1]} |")

    print("\n## Turned selfies (800²: search strategies)\n")
    strategies = {
        "upright only (before)": dict(BEFORE),
        "first face found, upright first": dict(sure_score=-1e9, roll_refit=0.0),
        "clearest orientation": dict(roll_refit=0.0),
        "clearest orientation + level refit (chosen)": {},
    }
    print("| strategy | turn | found | pupils mean / max % | turns used | s/photo |\n|---|---|---|---|---|---|")
    selfies = [i for i in items if i[0].startswith("selfies")]
    for label, kw in strategies.items():
        det = FaceDetector(detect_side=800, **kw)
        for turn in (0, 90, 180, 270, 35, -35):
            errs, found, times, used = [], 0, [], set()
            for name, _, pupils, _ in selfies:
                rot, size = g.rotation(turn, photos[name].size)
                img = g.warp(photos[name], rot, size) if turn else photos[name]
                true = g.to_index(g.apply(rot, g.from_index(pupils)))
                t = time.perf_counter()
                faces = det.detect(img)
                times.append(time.perf_counter() - t)
                if faces:
                    found += 1
                    used.add(int(faces[0].angle))
                    errs += list(errors(faces[0].landmarks, true, None)[0])
            e = np.array(errs) if errs else np.array([np.nan])
            print(f"| {label} | {turn:+d} | {found}/{len(selfies)} | {e.mean():5.2f} / {e.max():6.2f} | {sorted(used)} | {np.mean(times):.3f} |",
                  flush=True)

    print("\n## Alignment transform size (London, first 10 faces; PSNR vs FFHQ's 4096 supersampling)\n")
    print("| output | transform size | PSNR dB (min) | s/face |\n|---|---|---|---|")
    names = [i[0] for i in items if i[0].startswith("london") and i[0] in chosen["lms"]][:10]
    for out in (64, 256, 1024):
        ref, cand = {}, {}
        for ts in sorted({4096, min(4096, max(4 * out, 1024)), 2 * out if 2 * out >= 256 else 256}, reverse=True):
            ps, times = [], []
            for n in names:
                pts = FivePoints.from_68(chosen["lms"][n])
                t = time.perf_counter()
                img = align_ffhq(photos[n], pts, output_size=out, transform_size=ts)
                times.append(time.perf_counter() - t)
                if ts == 4096:
                    ref[n] = from_pil(img)
                else:
                    ps.append(float(psnr(from_pil(img), ref[n])))
                cand[n] = img
            p = f"{np.mean(ps):.1f} ({np.min(ps):.1f})" if ps else "reference"
            print(f"| {out} | {ts} | {p} | {np.mean(times):.3f} |", flush=True)
        # StyleGAN datasets at 256 are FFHQ-1024 shrunk; compare with aligning at `out` directly.
        if out < 1024:
            ps = []
            for n in names:
                pts = FivePoints.from_68(chosen["lms"][n])
                big = align_ffhq(photos[n], pts, output_size=1024, transform_size=4096).resize((out, out), Image.LANCZOS)
                ps.append(float(psnr(from_pil(big), ref[n])))
            print(f"| {out} | 1024 crop shrunk to {out} | {np.mean(ps):.1f} ({np.min(ps):.1f}) | - |")
    q = ffhq_quad(FivePoints.from_68(chosen["lms"][names[0]]))[1]
    print(f"\n(first face: FFHQ square side {q:.0f} px in a {photos[names[0]].width} px photo)")


if __name__ == "__main__":
    main()
