"""Does a reconstruction still look like the person? Identity distance and face PSNR per projection setting.

For every ready face model and projection setting: photo -> reconstruction dlib identity distance (median,
share below 0.6 = "same person"), PSNR inside the face mask, on held-out London people, 3DSK, the selfies
and the in-the-wild photos; then Family pairs (3DSK male x female, London held-out pairs): how far the
gene-0.5 children are from each parent against the parents' distance to each other, and the seconds from
two photos to 4 children. The photo side of every distance is the 256 px aligned crop; the model's side is
its own output (colour-matched settings: with the photo's colours put back, an affine map per channel),
never pasted into the photo. Aligned crops are cached in the user cache (these are shared data, not uploads).

    python -m bench.identity                               # everything (several minutes on 2 cores)
    python -m bench.identity --n 20 --pairs 10 --steps 100 # a quick look
    python -m bench.identity --sheet sheet.png             # also a contact sheet: photo | reconstruction | composite | child
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.children import VARIATION
from core.faces import NoFaceError, align_face, align_ffhq, transform_size_for
from core.faces.colour import ColourMatch, match_to_model
from core.faces.identity import SAME_PERSON, default_identity
from core.faces.mask import as_weights, composite
from core.family import PROJECTION_STEPS, ChildSettings, make_children
from core.image_input import load_image, model_input
from core.images import from_pil, psnr, to_pil
from core.photo_to_latent import default_tuning
from core.projection import ProjectionConfig, run_projection

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
DESCRIBE_SIDE = 256  # the photo side of every identity distance
SETTINGS = ("encoder", "default", "masked", "masked+colour", "masked+prior", "masked+anchor", "masked+tuned")  # the default list
PARTS = ("masked", "colour", "prior", "anchor", "tuned")  # any "+" combination of these is a setting too
_CACHE_VERSION = "1"


@dataclass
class Face:
    name: str
    photo: Image.Image  # aligned at DESCRIBE_SIDE
    target: Image.Image  # aligned at the model's size, as the app aligns it
    mask: np.ndarray  # (size, size) face weights of ``target``
    big_mask: np.ndarray  # (DESCRIBE_SIDE, DESCRIBE_SIDE), for the composite


# ----- data ------------------------------------------------------------------------------
def _aligned(path: Path, size: int) -> Face | None:
    """Aligned crops (256 px and model size) and masks of the largest face, cached by file content; None: no face."""
    from core.paths import cache_dir

    raw = path.read_bytes()
    import core.faces

    code = b"".join(p.read_bytes() for p in sorted(Path(core.faces.__file__).parent.glob("*.py")))
    key = hashlib.sha1(raw + code + f"{size}v{_CACHE_VERSION}".encode()).hexdigest()
    cache = cache_dir("bench", "identity") / key
    if (cache.with_suffix(".none")).is_file():
        return None
    files = [cache.with_suffix(s) for s in (".photo.png", ".target.png", ".npz")]
    if not all(f.is_file() for f in files):
        img = load_image(raw)
        try:
            aligned = align_face(img, DESCRIBE_SIDE)
        except NoFaceError:
            cache.with_suffix(".none").touch()
            return None
        target = align_ffhq(img, aligned.face.points, output_size=size, transform_size=transform_size_for(size))
        aligned.image.save(files[0])
        target.save(files[1])
        np.savez(files[2], mask=aligned.mask(size), big=aligned.mask(DESCRIBE_SIDE))
    z = np.load(files[2])
    return Face(path.stem, Image.open(files[0]).convert("RGB"), Image.open(files[1]).convert("RGB"), z["mask"], z["big"])


def london_heldout() -> list[Path]:
    """Neutral and smiling photos of the people the small AE training holds out (plugins/small_ae/data.py's split)."""
    from core.labels import list_images, read_labels, row_key
    from plugins.small_ae.data import holdout_by_key

    root = FACES / "london"
    _, rows = read_labels(root / "london_info.csv")
    files = [(p, row_key(p, rows)) for p in list_images(root)]
    files = [(p, k) for p, k in files if k]
    out = holdout_by_key([k for _, k in files], 0.15)
    return [p for (p, _), o in zip(files, out, strict=True) if o]


def load_sets(size: int, n: int | None, wanted: list[str]) -> dict[str, list[Face]]:
    sources = {
        "london": lambda: london_heldout(),
        "3dsk": lambda: sorted((FACES / "3dsk").glob("*/*.jpg")),
        "selfies": lambda: sorted((FACES / "selfies").glob("*.jpg")),
        "photos": lambda: sorted(p for p in (FACES / "photos").iterdir() if p.suffix in (".jpg", ".png")),
    }
    sets = {}
    for name in wanted:
        paths = sources[name]()
        if name == "3dsk" and n:  # alternate male/female so a subset keeps both
            by = {g: sorted((FACES / "3dsk" / g).glob("*.jpg")) for g in ("male", "female")}
            paths = [p for pair in zip(by["male"], by["female"], strict=False) for p in pair][:n]
        elif n and name == "london":
            paths = paths[:n]
        faces = []
        for path in paths:
            face = _aligned(path, size)
            if face is not None:
                face.name = f"{path.parent.name}/{path.stem}" if name == "3dsk" else path.stem
                faces.append(face)
        sets[name] = faces
    return sets


# ----- projection settings -----------------------------------------------------------------
@dataclass
class Fit:
    recon: torch.Tensor  # the model's own output (N, C, H, W)
    shown: torch.Tensor  # what the user sees (colour-matched settings: photo colours put back)
    latent: torch.Tensor
    colour: ColourMatch | None


def fit(model, targets: torch.Tensor, masks: torch.Tensor, setting: str, steps: int, prior: float, anchor: float) -> Fit:
    """Project ``targets`` with one bench setting."""
    if setting == "encoder":
        with torch.no_grad():
            z = model.encode(targets)
            recon = model.decode(z).cpu()
        return Fit(recon, recon, z.cpu(), None)
    masked = setting != "default"  # every other setting weighs the face mask
    colour = match_to_model(model, targets, masks) if "colour" in setting else None
    goal = colour.apply(targets) if colour else targets
    overrides = {"prior_weight": prior if "prior" in setting else 0.0, "encoder_anchor": anchor if "anchor" in setting else 0.0}
    cfg = ProjectionConfig.for_model(model, steps=steps, preview_every=0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    if "tuned" in setting:  # the Projection tab's path: each photo projected, then the decoder tuned to it alone
        recon, latent = _tuned_fits(model, goal, masks if masked else None, cfg)
    else:
        res = run_projection(model, goal, cfg, weights=masks if masked else None)
        recon, latent = res.reconstruction, res.latent
    return Fit(recon, colour.undo(recon) if colour else recon, latent, colour)


def _tuned_fits(model, goal: torch.Tensor, masks: torch.Tensor | None, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """core.photo_to_latent.project_and_tune per photo (the model's pivotal_tuning_steps): each drawn by its own tuned copy."""
    from core.photo_to_latent import project_and_tune

    recons, latents = [], []
    for i in range(len(goal)):
        events = list(project_and_tune(model, goal[i : i + 1], cfg, weights=None if masks is None else masks[i : i + 1]))
        projected = next(e for e in events if e.stage == "projecting" and e.done)
        decoder = events[-1].model if events[-1].stage == "tuning" else model
        recons.append(decoder.generate(projected.latent))
        latents.append(projected.latent)
    return torch.cat(recons), torch.cat(latents)


def descriptors(images: list[Image.Image]) -> np.ndarray:
    return default_identity().descriptors(images)


def psnr_face(shown: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    return psnr(shown, targets, masks).numpy()


# ----- tables ------------------------------------------------------------------------------
def _fmt_dist(d: np.ndarray) -> str:
    return f"{np.median(d):.3f} | {np.mean(d < SAME_PERSON) * 100:.0f} % ({int(np.sum(d < SAME_PERSON))}/{len(d)})"


def reconstruction_table(model, sets: dict[str, list[Face]], settings, steps, prior, anchor, cache) -> None:
    print(f"\n### {model.card.name}: photo -> reconstruction ({steps} steps)\n")
    print("| set | setting | identity median | share < 0.6 | PSNR in face (dB) | s/photo |")
    print("|---|---|---|---|---|---|")
    pooled: dict[str, list[np.ndarray]] = {}
    for name, faces in sets.items():
        if not faces:
            continue
        photo_d = descriptors([f.photo for f in faces])
        targets = torch.cat([from_pil(f.target, model.channels) for f in faces])
        masks = as_weights(np.stack([f.mask for f in faces]))
        own = descriptors(to_pil(targets))  # the 64 px photo itself: the ceiling of any 64 px model
        d = np.linalg.norm(own - photo_d, axis=1)
        print(f"| {name} ({len(faces)}) | photo at {model.image_size} px (ceiling) | {_fmt_dist(d)} | - | - |")
        for setting in settings:
            t = time.perf_counter()
            res = fit(model, targets, masks, setting, steps, prior, anchor)
            sec = (time.perf_counter() - t) / len(faces)
            cache[(name, setting)] = (res, photo_d)
            d = np.linalg.norm(descriptors(to_pil(res.shown)) - photo_d, axis=1)
            extra = ""
            if res.colour is not None:  # also the model's raw output, before the photo's colours go back
                d_raw = np.linalg.norm(descriptors(to_pil(res.recon)) - photo_d, axis=1)
                extra = f" (raw colours: {np.median(d_raw):.3f}, {np.mean(d_raw < SAME_PERSON) * 100:.0f} %)"
            p = psnr_face(res.shown, targets, masks)
            pooled.setdefault(setting, []).append(d)
            print(f"| {name} ({len(faces)}) | {setting} | {_fmt_dist(d)}{extra} | {np.median(p):.1f} | {sec:.2f} |", flush=True)
    for setting, ds in pooled.items():
        if len(ds) > 1:
            print(f"| all sets ({sum(map(len, ds))}) | {setting} | {_fmt_dist(np.concatenate(ds))} | - | - |")


def pairs_of(sets: dict[str, list[Face]], n_pairs: int) -> dict[str, list[tuple[int, int]]]:
    """3DSK: i-th male with i-th female; London held-out: one photo per person, consecutive people."""
    out = {}
    if sets.get("3dsk"):
        names = [f.name for f in sets["3dsk"]]
        males = [i for i, n in enumerate(names) if n.startswith("male/")]
        females = [i for i, n in enumerate(names) if n.startswith("female/")]
        out["3dsk"] = list(zip(males, females, strict=False))[:n_pairs]
    if sets.get("london"):
        first: dict[str, int] = {}
        for i, f in enumerate(sets["london"]):
            first.setdefault(f.name.split("_")[0], i)
        idx = list(first.values())
        out["london"] = list(zip(idx[0::2], idx[1::2], strict=False))[:n_pairs]
    return out


def family_table(model, sets, settings, cache, n_pairs: int, variation: float) -> dict:
    print(f"\n### {model.card.name}: Family, gene 0.5, 4 children (variation {variation})\n")
    print("| pairs | setting | parents' distance (median) | child -> parent (median) | child closer to each parent than the parents are | child within 0.6 of both |")
    print("|---|---|---|---|---|---|")
    children_out = {}
    for name, pairs in pairs_of(sets, n_pairs).items():
        for setting in settings:
            if (name, setting) not in cache:
                continue
            res, photo_d = cache[(name, setting)]
            parent_d, child_d, closer, both = [], [], 0, 0
            for fi, mi in pairs:
                kids = make_children(model, res.latent[fi : fi + 1], res.latent[mi : mi + 1], model.default_space,
                                     ChildSettings(gene_weight=0.5, variation=variation, children=4))
                imgs = model.generate(kids)
                if res.colour is not None:
                    pair = ColourMatch(res.colour.mean[[fi, mi]], res.colour.std[[fi, mi]], res.colour.ref_mean, res.colour.ref_std)
                    imgs = pair.between(0.5).undo(imgs)
                children_out[(name, setting, fi)] = imgs[:1]
                kd = descriptors(to_pil(imgs))
                to_f = np.linalg.norm(kd - photo_d[fi], axis=1).mean()
                to_m = np.linalg.norm(kd - photo_d[mi], axis=1).mean()
                pd = float(np.linalg.norm(photo_d[fi] - photo_d[mi]))
                parent_d.append(pd)
                child_d += [to_f, to_m]
                closer += int(to_f < pd and to_m < pd)
                both += int(to_f < SAME_PERSON and to_m < SAME_PERSON)
            k = len(pairs)
            print(f"| {name} ({k}) | {setting} | {np.median(parent_d):.3f} | {np.median(child_d):.3f} | "
                  f"{closer / k * 100:.0f} % ({closer}/{k}) | {both / k * 100:.0f} % |", flush=True)
    return children_out


def family_seconds(model, paths: list[Path], settings, steps, prior, anchor) -> None:
    """Two photos (files, uncached) -> aligned + masked -> projected -> 4 children, per setting."""
    print(f"\n### {model.card.name}: two photos -> 4 children, seconds (torch threads {torch.get_num_threads()})\n")
    print("| setting | align 2 | project 2 | 4 children | total |\n|---|---|---|---|---|")
    for setting in settings:
        t0 = time.perf_counter()
        inputs = [model_input(load_image(p), model.image_size, model.channels, align_face=True) for p in paths]
        t1 = time.perf_counter()
        targets = torch.cat([from_pil(i.image, model.channels) for i in inputs])
        masks = as_weights(np.stack([i.mask for i in inputs]))
        res = fit(model, targets, masks, setting, steps, prior, anchor)
        t2 = time.perf_counter()
        model.generate(make_children(model, res.latent[:1], res.latent[1:], model.default_space, ChildSettings(children=4)))
        t3 = time.perf_counter()
        print(f"| {setting} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.3f} | {t3 - t0:.2f} |", flush=True)


def contact_sheet(path: Path, model, sets, cache, children, setting: str, rows: int) -> None:
    """Per face: photo crop | reconstruction | composite into the crop | a child with the next face (256 px each)."""
    tiles = []
    side = DESCRIBE_SIDE
    for name, faces in sets.items():
        if (name, setting) not in cache:
            continue
        res, _ = cache[(name, setting)]
        for i, f in enumerate(faces[:rows]):
            crop = from_pil(f.photo)
            recon = res.shown[i : i + 1]
            comp = composite(recon, crop, f.big_mask)
            up = torch.nn.functional.interpolate(recon, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)
            child = children.get((name, setting, i))
            if child is None:
                j = (i + 1) % len(faces)
                kid = make_children(model, res.latent[i : i + 1], res.latent[j : j + 1], model.default_space, ChildSettings(children=1))
                child = model.generate(kid)
                if res.colour is not None:
                    pair = ColourMatch(res.colour.mean[[i, j]], res.colour.std[[i, j]], res.colour.ref_mean, res.colour.ref_std)
                    child = pair.between(0.5).undo(child)
            child = torch.nn.functional.interpolate(child, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)
            tiles.append(torch.cat([crop, up, comp, child], dim=3))
    if not tiles:
        return
    sheet = to_pil(torch.cat(tiles, dim=2))[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"\ncontact sheet ({setting}): {path} — columns: photo crop | reconstruction | composite | child with the next row's face")


def flow_pairs(n_pairs: int) -> dict[str, list[tuple[Path, Path]]]:
    """Photo pairs for the Family flow: 3DSK i-th man x i-th woman; London held-out, one neutral photo per person,
    consecutive people; in the wild, the shared photos and selfies paired in order (the no-face photo is refused by
    alignment and reported)."""
    by = {g: sorted((FACES / "3dsk" / g).glob("*.jpg")) for g in ("male", "female")}
    london = [p for p in london_heldout() if p.parent.name == "neutral"]
    wild = [p for p in sorted((FACES / "photos").iterdir()) if p.suffix in (".jpg", ".png") and "zebra" not in p.name]
    wild += sorted((FACES / "selfies").glob("lisa*.jpg"))[:1]
    return {"3dsk": list(zip(by["male"], by["female"], strict=False))[:n_pairs],
            "london": list(zip(london[0::2], london[1::2], strict=False))[:n_pairs],
            "in the wild": list(zip(wild[0::2], wild[1::2], strict=False))[:n_pairs]}


def texture(images: list[Image.Image], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean |Laplacian| of each image's grey levels outside and inside the face mask: ghost hairlines, blotches and
    patchy skin are edges a clean face does not have, so a child's texture over its parents' (reconstructions, same
    frame, same model) measures artefacts without a reference picture."""
    grey = np.stack([np.asarray(im.convert("L"), dtype=np.float32) / 255 for im in images])
    lap = np.abs(4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
    w = np.clip(mask[1:-1, 1:-1], 0, 1)
    inside = (lap * w).sum((1, 2)) / max(w.sum(), 1e-6)
    outside = (lap * (1 - w)).sum((1, 2)) / max((1 - w).sum(), 1e-6)
    return outside, inside


def faces_found(images: list[Image.Image]) -> np.ndarray:
    """1 where dlib's detector finds exactly one face in an image (upscaled to DESCRIBE_SIDE), else 0."""
    from core.faces import default_detector

    detector = default_detector()
    return np.array([len(detector.detect(im.convert("RGB").resize((DESCRIBE_SIDE, DESCRIBE_SIDE), Image.LANCZOS))) == 1
                     for im in images], dtype=float)


def family_flow_table(name: str, n_pairs: int, steps: int, tune_steps: list[int | None], sheet_dir: Path | None = None,
                      variation: float = VARIATION) -> None:
    """What a user gets: core.family.Family with the tab's defaults (masked projection, then decoder tuning), per pair.

    Identity is photo (256 px aligned crop) -> what the session draws; children at gene 0.5, 4 each. Balance: median
    |d(child, father) - d(child, mother)|; siblings: median distance between two children of a family; closer: share
    of *each* child closer to each parent than the parents are to each other; artefacts: the children's texture
    (mean |Laplacian|) outside / inside the face over their parents' reconstructions' (1 = as clean as the parents), and
    the share of children in which dlib finds one face. Seconds are two photos -> 4 children including alignment,
    after the model and dlib are loaded (first pair excluded). ``sheet_dir``: one contact sheet per set (father's
    photo, reconstruction, 4 children, mother's reconstruction, photo).
    """
    from core.faces.identity import distances
    from core.family import ChildSettings, Family
    from plugins.registry import Registry

    reg = Registry().discover()
    model = reg.get(name)
    for tune in tune_steps:
        label = f"tune {default_tuning(model, 2, 'mse').steps if tune is None else tune}"
        print(f"\n### {name}: the Family flow ({steps} projection steps, {label} decoder steps, variation {variation})\n")
        print("| pairs | parents' identity (median) | parents' distance | balance | siblings | each child closer to each "
              "parent than the parents are | texture outside / inside face (child ÷ parents) | one face found | "
              "s per family |")
        print("|---|---|---|---|---|---|---|---|---|")
        for set_name, pairs in flow_pairs(n_pairs).items():
            m = {k: [] for k in ("ident", "parents_d", "balance", "sib", "closer", "out", "in", "found", "s")}
            rows = []
            for k, (fp, mp) in enumerate(pairs):
                t = time.perf_counter()
                fam = Family(model, name, reg.entry(name).tags)
                ps = [fam.set_parent("father", fp), fam.set_parent("mother", mp)]
                if any(p.error for p in ps):
                    print(f"(skipped {fp.name} x {mp.name}: {'; '.join(p.error for p in ps if p.error)})")
                    continue
                for _ in fam.project(steps, tune_steps=tune):
                    pass
                kids = fam.children(ChildSettings(gene_weight=0.5, variation=variation, children=4))
                if k:
                    m["s"].append(time.perf_counter() - t)
                d = np.array(kids.identity)
                desc = descriptors(kids.images)
                m["ident"] += [p.identity for p in fam.parents.values()]
                m["parents_d"].append(kids.parents_distance)
                m["balance"] += list(np.abs(d[:, 0] - d[:, 1]))
                m["sib"] += list(distances(desc, desc)[np.triu_indices(len(desc), 1)])
                m["closer"] += list((d < kids.parents_distance).all(1))
                mask = np.mean([p.mask for p in fam.parents.values()], 0)
                parents_tex = texture([p.reconstruction for p in fam.parents.values()], mask)
                kid_tex = texture(kids.images, mask)
                m["out"] += list(kid_tex[0] / parents_tex[0].mean())
                m["in"] += list(kid_tex[1] / parents_tex[1].mean())
                m["found"] += list(faces_found(kids.images))
                rows.append([fam.parents["father"].crop, fam.parents["father"].reconstruction, *kids.images,
                             fam.parents["mother"].reconstruction, fam.parents["mother"].crop])
            if not rows:
                continue
            med = {k: float(np.median(v)) if len(v) else float("nan") for k, v in m.items()}
            print(f"| {set_name} ({len(rows)}) | {med['ident']:.3f} | {med['parents_d']:.3f} | {med['balance']:.3f} | "
                  f"{med['sib']:.3f} | {np.mean(m['closer']) * 100:.0f} % | {med['out']:.2f} / {med['in']:.2f} | "
                  f"{np.mean(m['found']) * 100:.0f} % | {med['s']:.1f} |", flush=True)
            if sheet_dir is not None:
                _save_sheet(sheet_dir / f"family_{name.replace('/', '_')}_{set_name.replace(' ', '_')}.png", rows)


def _save_sheet(path: Path, rows: list[list[Image.Image]], side: int = 128) -> None:
    sheet = Image.new("RGB", (side * max(len(r) for r in rows), side * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im.convert("RGB").resize((side, side), Image.LANCZOS), (c * side, r * side))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"contact sheet: {path}")


def face_models(only: str | None) -> list:
    from plugins.registry import Registry

    reg = Registry().discover()
    names = [only] if only else [n for n in reg.names("faces") if reg.status(n) == "ready"]
    return [reg.get(n) for n in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="london,3dsk,selfies,photos", help="comma-separated: london, 3dsk, selfies, photos")
    p.add_argument("--n", type=int, default=0, help="at most this many 3DSK / London photos (0: all)")
    p.add_argument("--pairs", type=int, default=20, help="Family pairs per set (0: no Family table)")
    p.add_argument("--steps", type=int, default=None, help="projection steps (default: 200; the Family flow: the tab's)")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated from {', '.join(SETTINGS)}, or '+' combinations of {', '.join(PARTS)}")
    p.add_argument("--prior", type=float, default=0.02, help="prior_weight of the masked+prior setting")
    p.add_argument("--anchor", type=float, default=0.05, help="encoder_anchor of the masked+anchor setting")
    p.add_argument("--variation", type=float, default=VARIATION, help="children's variation (the Family tab's default)")
    p.add_argument("--model", default=None, help="one model (default: every ready model tagged 'faces')")
    p.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG here")
    p.add_argument("--sheet-setting", default="masked+colour")
    p.add_argument("--sheet-rows", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flow", type=int, default=0, metavar="PAIRS",
                   help="only the app's Family flow (per pair: masked projection + decoder tuning) on this many pairs per set")
    p.add_argument("--sheet-dir", type=Path, default=None, help="with --flow: write one Family contact sheet per set here")
    p.add_argument("--flow-tune", default="default,0", help="decoder-tuning steps to compare in the flow ('default' = the model's)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.flow:
        tunes = [None if t == "default" else int(t) for t in a.flow_tune.split(",") if t]
        for model in face_models(a.model):
            family_flow_table(model.card.name, a.flow, a.steps or PROJECTION_STEPS, tunes, a.sheet_dir, a.variation)
        return
    if not FACES.is_dir():
        print(f"The shared face data is not at {FACES}: nothing to measure.")
        return
    settings = [s for s in a.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS and not set(s.split("+")) <= set(PARTS)]
    if unknown:
        raise SystemExit(f"Unknown settings {unknown}; use {', '.join(SETTINGS)} or '+' combinations of {', '.join(PARTS)}.")
    for model in face_models(a.model):
        t = time.perf_counter()
        sets = load_sets(model.image_size, a.n or None, [s for s in a.sets.split(",") if s])
        if "photos" in sets:  # the no-face photo is skipped by alignment (None), so say what was used
            print(f"in-the-wild photos used: {', '.join(f.name for f in sets['photos'])}")
        print(f"aligned {sum(len(v) for v in sets.values())} photos in {time.perf_counter() - t:.1f} s")
        cache: dict = {}
        reconstruction_table(model, sets, settings, a.steps or 200, a.prior, a.anchor, cache)
        children = family_table(model, sets, settings, cache, a.pairs, a.variation) if a.pairs > 0 else {}
        males = sorted((FACES / "3dsk" / "male").glob("*.jpg"))[:1] + sorted((FACES / "3dsk" / "female").glob("*.jpg"))[:1]
        if len(males) == 2:
            family_seconds(model, males, settings, a.steps or 200, a.prior, a.anchor)
        if a.sheet:
            contact_sheet(a.sheet, model, sets, cache, children, a.sheet_setting, a.sheet_rows)


if __name__ == "__main__":
    main()
