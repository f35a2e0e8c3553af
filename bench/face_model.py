"""How well a built-in face autoencoder keeps a person: identity distance, face-region PSNR, Family children.

    python -m bench.face_model [MODEL_FOLDER ...] [--steps 200] [--sheet /tmp/sheet.png]

Sets: a fixed 40-person 3DSK subset (20 women, 20 men; never trained on), the held-out London people
(the training split's own held-out faces) and every face of at least 30 px between the eyes in
``../shared/data/faces/photos`` (in the wild). For each model: photo -> reconstruction identity distance
(dlib descriptor of the 256 px aligned photo against the 64 px reconstruction; median and share below 0.6)
with (a) the encoder alone and (b) the encoder followed by the app's default 200-step projection; PSNR
inside the face mask; London held-out PSNR over the whole crop; for 10 Family pairs (a 3DSK woman and man)
the gene-0.5 child's distance to each parent photo against the parents' own distance; seconds per
projection step for two photos. Aligned crops are cached in a temporary file (it holds 3DSK-derived
pixels: delete it when done).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "faces"
CACHE = Path("/tmp/latent_lab_face_model_eval.npz")
BIG, SMALL, MIN_EYES = 256, 64, 30.0


def _crops(pil: Image.Image, face) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from core.faces import align_ffhq, ffhq_quad, to_aligned, transform_size_for
    from core.faces.mask import face_mask

    big = align_ffhq(pil, face.points, output_size=BIG, transform_size=transform_size_for(BIG))
    small = big.resize((SMALL, SMALL), Image.LANCZOS)
    quad = ffhq_quad(face.points)[0]
    mask = face_mask(to_aligned(face.landmarks, quad, SMALL), SMALL)
    return np.asarray(big), np.asarray(small), mask


def prepare() -> dict[str, np.ndarray]:
    """Aligned crops (256 and 64 px), 64 px face masks and set names of every evaluation face (cached)."""
    if CACHE.is_file():
        return dict(np.load(CACHE))
    from core.faces import default_detector
    from core.image_input import load_image
    from plugins.small_ae.data import holdout_by_key

    det = default_detector()
    items: list[tuple[str, Path]] = []
    for sex in ("female", "male"):
        items += [("3dsk", p) for p in sorted((SHARED / "3dsk" / sex).glob("*.jpg"))[:20]]
    london = sorted((SHARED / "london").glob("*/*.jpg"))
    held = holdout_by_key([p.stem.split("_")[0] for p in london], 0.15)
    items += [("london", p) for p, h in zip(london, held, strict=True) if h]
    items += [("photos", p) for p in sorted((SHARED / "photos").iterdir())]
    big, small, masks, sets, names = [], [], [], [], []
    for name, path in items:
        pil = load_image(path.read_bytes())
        faces = det.detect(pil)
        if name != "photos":
            faces = faces[:1]
        for k, face in enumerate(faces):
            if face.points.inter_ocular < MIN_EYES:
                continue
            b, s, m = _crops(pil, face)
            big.append(b), small.append(s), masks.append(m), sets.append(name), names.append(f"{path.stem}#{k}")
    data = {"big": np.stack(big), "small": np.stack(small), "mask": np.stack(masks), "set": np.array(sets), "name": np.array(names)}
    np.savez(CACHE, **data)
    return data


def masked_psnr(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> np.ndarray:
    """PSNR over the face mask (weights m), images in [-1, 1]."""
    err = ((x - y) ** 2 * m[:, None]).sum((1, 2, 3)) / (m.sum((1, 2)) * x.shape[1]).clamp_min(1e-8)
    return (10 * torch.log10(4.0 / err.clamp_min(1e-10))).numpy()


def to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    return list(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


def evaluate(folder: Path, data: dict, steps: int, sheet: Path | None) -> dict:
    from core.faces.identity import default_identity
    from core.family import ChildSettings, make_children
    from core.projection import ProjectionConfig, project
    from plugins.small_ae import CARDS
    from plugins.small_ae.model import SmallAEModel

    model = SmallAEModel.from_pretrained(folder, CARDS["faces"])
    ident = default_identity()
    x = torch.from_numpy(data["small"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = torch.from_numpy(data["mask"]).float()
    photo_d = ident.descriptors(list(data["big"]))
    with torch.no_grad():
        enc = model.encode(x)
        rec_enc = model.decode(enc)
    out: dict = {"model": str(folder)}
    proj_lat, rec_proj = enc, rec_enc  # --steps 0: a quick look at the encoder alone
    if steps:
        cfg = ProjectionConfig.for_model(model, model.default_space, steps=steps)
        t0 = time.perf_counter()
        *_, last = project(model, x, cfg)
        proj_lat, rec_proj = last.latent, last.preview
        out["proj_s_per_step_batch"] = (time.perf_counter() - t0) / steps
    for tag, rec in (("enc", rec_enc), ("proj", rec_proj)) if steps else (("enc", rec_enc),):
        d = np.linalg.norm(ident.descriptors(to_uint8(rec)) - photo_d, axis=1)
        p = masked_psnr(rec, x, m)
        for s in ("3dsk", "london", "photos"):
            sel = data["set"] == s
            out[f"{s}/{tag}/id_median"] = float(np.median(d[sel]))
            out[f"{s}/{tag}/id_below_0.6"] = float((d[sel] < 0.6).mean())
            out[f"{s}/{tag}/face_psnr"] = float(np.mean(p[sel]))
        lon = torch.from_numpy(data["set"] == "london")
        out[f"london/{tag}/full_psnr"] = float((10 * torch.log10(4.0 / ((rec[lon] - x[lon]) ** 2).mean((1, 2, 3)))).mean())
    # Family: 3DSK woman i with man i.
    idx3 = np.flatnonzero(data["set"] == "3dsk")
    pairs = [(idx3[i], idx3[20 + i]) for i in range(10)]
    wins, rows, kids = 0, [], {}
    for a, b in pairs:  # with --steps 0 the parents are the encoder's codes
        lat = make_children(model, proj_lat[a : a + 1], proj_lat[b : b + 1], model.default_space, ChildSettings(gene_weight=0.5, children=1))
        with torch.no_grad():
            child = model.decode(lat)
        kids[a] = kids[b] = child
        cd = ident.descriptors(to_uint8(child))[0]
        da, db = np.linalg.norm(cd - photo_d[a]), np.linalg.norm(cd - photo_d[b])
        dp = np.linalg.norm(photo_d[a] - photo_d[b])
        wins += int(da < dp and db < dp)
        rows.append((da, db, dp))
    r = np.array(rows)
    out["family/closer_share"] = wins / len(pairs)
    out["family/child_to_parent_median"] = float(np.median(r[:, :2]))
    out["family/parents_median"] = float(np.median(r[:, 2]))
    if steps:  # two photos: the Family tab's projection cost (CPU seconds of this process, per step)
        t0, c0 = time.perf_counter(), time.process_time()
        *_, _ = project(model, x[:2], cfg)
        out["proj_s_per_step_2"] = (time.perf_counter() - t0) / steps
        out["proj_cpu_s_per_step_2"] = (time.process_time() - c0) / steps
    if sheet is not None:
        rows_img = []
        for i in list(idx3[:4]) + list(idx3[20:24]):
            cells = [data["small"][i], to_uint8(rec_enc[i : i + 1])[0], to_uint8(rec_proj[i : i + 1])[0], to_uint8(kids[i])[0]]
            rows_img.append(np.concatenate(cells, 1))
        Image.fromarray(np.concatenate(rows_img, 0)).resize((4 * 128, 8 * 128), Image.NEAREST).save(sheet)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="*", default=[str(ROOT / "plugins/small_ae/weights/faces")])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--sheet", type=Path)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = prepare()
    print({s: int((data["set"] == s).sum()) for s in ("3dsk", "london", "photos")})
    for f in a.folders:
        res = evaluate(Path(f), data, a.steps, a.sheet)
        for k, v in res.items():
            print(f"{k:32s} {v if isinstance(v, str) else round(v, 3)}")


if __name__ == "__main__":
    main()
