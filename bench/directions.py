"""Teach "smile" from London photos through the teach function the tab calls, then edit held-out faces with it.

1. Teach: 20 smiling + 20 neutral photos of the same 20 London people (``core.teach.teach_from_images`` with the
   built-in faces model's encoder; folds keep each person on one side), timed on 2 threads.
2. Held-out accuracy on other London people: each photo on its own (its score's sign), and in pairs (the smiling
   photo of a person scores above their neutral one).
3. Edit held-out neutral faces by +2 std of "smile" (``core.edit.edit``) and measure the DRAWN pictures: smile =
   mouth width over eye distance from dlib's 68 landmarks; identity distance edited vs unedited reconstruction;
   a gender classifier (logistic regression on dlib descriptors of real London photos of other people) scored on
   both pictures, with and without "keep gender fixed" (the model's built-in gender direction).
4. The same mechanics on a random-weight StyleGAN fixture (no semantics): taught from projected images and from W+
   latents, edited on coarse layers, conditional edit, strip, exact replay.

    python -m bench.directions                      # about 2-3 minutes on 2 cores
    python -m bench.directions --n-test 20 --n-edit 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
LONDON = ROOT.parent / "shared" / "data" / "faces" / "london"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "stylegan" / "ada_r32.pkl"


def _people() -> list[tuple[str, str]]:
    rows = (LONDON / "london_info.csv").read_text().splitlines()
    head = rows[0].split(",")
    gi = head.index("face_gender")
    return [(r.split(",")[0], r.split(",")[gi]) for r in rows[1:]]


def _photo(pid: str, smiling: bool) -> Path:
    return LONDON / ("smiling" if smiling else "neutral") / f"{pid}_{'08' if smiling else '03'}.jpg"


class Smile:
    """Mouth width over the distance between the eye centres, from dlib's 68 landmarks fitted inside the box where an
    aligned face lies (as core.faces.identity fits them: blurry 64 px faces are not reliably detected)."""

    def __init__(self) -> None:
        import dlib

        from core.faces.detect import predictor_path
        from core.faces.identity import ALIGNED_BOX, SIDE

        self.dlib, self.side, self.box = dlib, SIDE, ALIGNED_BOX
        self.predictor = dlib.shape_predictor(str(predictor_path()))

    def __call__(self, img) -> float:
        from PIL import Image

        rgb = np.asarray(img.convert("RGB").resize((self.side, self.side), Image.BICUBIC))
        left, top, right, bottom = (int(round(f * self.side)) for f in self.box)
        s = self.predictor(rgb, self.dlib.rectangle(left, top, right, bottom))
        p = np.array([(s.part(i).x, s.part(i).y) for i in range(68)], dtype=float)
        eyes = np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0))
        return float(np.linalg.norm(p[48] - p[54]) / eyes)


def london(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from core.edit import edit
    from core.faces.identity import default_identity
    from core.image_input import load_image, model_input
    from core.images import from_pil
    from core.teach import SessionDirections, encoder_latents, teach_from_images
    from plugins.small_ae import load_model

    model = load_model("faces")
    people = _people()
    teach_ids = [p for p, _ in people[: args.n_teach]]
    test = people[args.n_teach : args.n_teach + args.n_test]
    to_latent = encoder_latents(model)
    to_latent(load_image(_photo(teach_ids[0], False)))  # warm-up (dlib, torch): not part of the timing

    t0 = time.perf_counter()
    taught = teach_from_images([_photo(p, True) for p in teach_ids], [_photo(p, False) for p in teach_ids], "smile",
                               to_latent, space="latent", groups_with=teach_ids, groups_without=teach_ids)
    seconds = time.perf_counter() - t0

    ident = default_identity()
    lat, crops = {}, {}
    for pid, _ in test:
        for smiling in (False, True):
            inp = model_input(load_image(_photo(pid, smiling)), model.image_size, model.channels, True)
            with torch.no_grad():
                lat[pid, smiling] = model.encode(from_pil(inp.image, model.channels), "latent").cpu()
            crops[pid, smiling] = inp.reference
    s_smile = np.array([taught.score(lat[p, True])[0] for p, _ in test])
    s_neutral = np.array([taught.score(lat[p, False])[0] for p, _ in test])
    per_photo = (np.mean(s_smile > 0) + np.mean(s_neutral < 0)) / 2
    paired = float(np.mean(s_smile > s_neutral))

    print(f"\n## Teach 'smile' (small_ae/faces encoder, {len(teach_ids)} + {len(teach_ids)} London photos, "
          f"{torch.get_num_threads()} threads)\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| held-out accuracy inside teaching (5 folds by person) | {taught.accuracy:.1%} (chance {taught.chance:.0%}) | — |")
    print(f"| verdict | {taught.verdict} | — |")
    print(f"| accuracy on {len(test)} other people, each photo alone ({2 * len(test)} photos) | {per_photo:.1%} | ≥ 90 % |")
    print(f"| accuracy on {len(test)} other people, pairs (smiling scores above neutral) | {paired:.1%} | — |")
    print(f"| seconds, 40 photos → direction (align + encode + fit) | {seconds:.1f} | ≤ 20 |")

    # gender classifier on real photos' descriptors of people outside the edited set
    edit_people = test[: args.n_edit]
    fit_people = [(p, g) for p, g in people if p not in {q for q, _ in edit_people}][: args.n_gender]
    fit_crops = [crops.get((p, False)) for p, _ in fit_people]
    missing = [i for i, c in enumerate(fit_crops) if c is None]
    for i in missing:
        fit_crops[i] = model_input(load_image(_photo(fit_people[i][0], False)), model.image_size, 3, True).reference
    X = ident.descriptors(fit_crops)
    y = np.array([g == "female" for _, g in fit_people], dtype=int)
    gender_clf = LogisticRegression(C=1.0, max_iter=2000)
    gender_cv = float(cross_val_score(gender_clf, X, y, cv=5).mean())
    gender_clf.fit(X, y)

    store = SessionDirections()
    builtins = model.directions()
    store.add("small_ae/faces", taught, [d.name for d in builtins])
    dirs = store.merged("small_ae/faces", builtins)
    smile = Smile()
    rows = {"free": [], "kept": []}
    for pid, _ in edit_people:
        for mode in rows:
            r = edit(model, "latent", lat[pid, False], dirs, {"smile": 2.0}, identity=ident, watch=["gender"],
                     keep_fixed=["gender"] if mode == "kept" else [], model_name="small_ae/faces")
            d_img, d_rec = ident.descriptors([r.image, r.reconstruction])
            p_img, p_rec = gender_clf.predict_proba(np.stack([d_img, d_rec]))[:, 1]
            rows[mode].append((smile(r.image) - smile(r.reconstruction), r.identity_to_reconstruction,
                               abs(p_img - p_rec), abs(r.effects["gender"][1] - r.effects["gender"][0])))
    print(f"\n## Edit {len(edit_people)} held-out neutral faces by +2 std of 'smile' (measured on the drawn 64 px pictures)\n")
    print(f"gender classifier: logistic regression on dlib descriptors of {len(fit_people)} real London photos, "
          f"5-fold accuracy {gender_cv:.1%}\n")
    print("| measure | smile alone | smile, gender kept fixed | target |\n|---|---|---|---|")
    f, k = np.array(rows["free"]), np.array(rows["kept"])
    print(f"| share of faces whose smile measure rises | {np.mean(f[:, 0] > 0):.0%} | {np.mean(k[:, 0] > 0):.0%} | ≥ 90 % |")
    print(f"| median smile measure change (mouth / eye distance) | {np.median(f[:, 0]):+.3f} | {np.median(k[:, 0]):+.3f} | — |")
    print(f"| median identity distance, edited vs unedited reconstruction | {np.median(f[:, 1]):.3f} | {np.median(k[:, 1]):.3f} | ≤ 0.45 |")
    print(f"| mean \\|change\\| of the gender classifier's P(female) on the pictures | {f[:, 2].mean():.3f} | {k[:, 2].mean():.3f} | kept < alone |")
    print(f"| mean \\|change\\| of the latent gender score (std along 'gender') | {f[:, 3].mean():.3f} | {k[:, 3].mean():.4f} | kept ≈ 0 |")
    cos = np.dot(store.directions("small_ae/faces")[0].vector, {d.name: d for d in builtins}["gender"].vector)
    print(f"\ncosine(taught smile, built-in gender) = {cos:+.3f}")


def stylegan(args) -> None:
    from core.card import ModelCard
    from core.edit import edit, replay_edit, strip
    from core.images import to_pil
    from core.teach import encoder_latents, teach_from_images, teach_from_latents
    from plugins.stylegan.model import StyleGANModel

    card = ModelCard(name="stylegan/fixture", title="Random StyleGAN (ada_r32 fixture)", description="random weights",
                     trained_on="nothing", resolution=32, licence="none", source="fixture")
    with tempfile.TemporaryDirectory() as tmp:
        m = StyleGANModel.from_pickle(FIXTURE, card, cache_root=tmp)
    w = m.sample(400, seed=0, space="w").cpu().numpy()
    pc = np.linalg.svd(w - w.mean(0), full_matrices=False)[2][0]
    order = np.argsort(w @ pc)
    n = args.sg_n
    hi, lo = order[-n:], order[:n]
    groups = m.layer_groups("w+")
    layers = groups["coarse"] + groups["middle"]
    wp = m.convert(torch.as_tensor(w), "w", "w+").cpu().numpy()
    t0 = time.perf_counter()
    from_latents = teach_from_latents(wp[hi], wp[lo], "pc1-side", space="w", per_layer=True, layers=layers)
    s_lat = time.perf_counter() - t0
    imgs = to_pil(m.generate(torch.as_tensor(w), "w"))
    k = args.sg_images
    t0 = time.perf_counter()
    from_images = teach_from_images([imgs[i] for i in hi[-k:]], [imgs[i] for i in lo[:k]], "pc1-side (images)",
                                    encoder_latents(m, "w+", align_faces=False, steps=args.sg_steps),
                                    space="w", per_layer=True, layers=layers)
    s_img = time.perf_counter() - t0
    other = teach_from_latents(wp[order[-n:]][:, :, ::-1].copy(), wp[order[:n]][:, :, ::-1].copy(), "other",
                               space="w", per_layer=True)  # a second, correlated direction to keep fixed
    d, b = from_latents.direction, other.direction
    start = torch.as_tensor(wp[order[200]])[None]
    t0 = time.perf_counter()
    free = edit(m, "w+", start, [d, b], {d.name: 2.0}, layers="coarse", watch=[b.name], draw_unedited=False)
    s_edit = time.perf_counter() - t0
    kept = edit(m, "w+", start, [d, b], {d.name: 2.0}, layers="coarse", keep_fixed=[b.name], draw_unedited=False)
    moved = (free.latent - free.original).abs().sum(-1)[0].numpy()
    outside = [i for i in range(len(moved)) if i not in groups["coarse"]]
    st = strip(m, "w+", start, [d], d.name)
    comp = lambda r: float((r.latent - r.original)[0, groups["coarse"][0]].numpy() @ b.vector)  # noqa: E731
    print(f"\n## StyleGAN fixture ada_r32 (random weights: mechanics only), W+ with {len(moved)} layers\n")
    print("| measure | value |\n|---|---|")
    print(f"| taught from {n}+{n} W+ latents: held-out accuracy / seconds | {from_latents.accuracy:.1%} / {s_lat:.2f} |")
    print(f"| taught from {k}+{k} images, {args.sg_steps}-step W+ projection: held-out accuracy / seconds | "
          f"{from_images.accuracy:.1%} / {s_img:.1f} |")
    print(f"| edit +2 std on coarse layers {groups['coarse']}: change outside them | {moved[outside].sum():.1e} |")
    print(f"| component along the kept direction per coarse layer: alone / kept fixed | {comp(free):+.3f} / {comp(kept):+.1e} |")
    print(f"| kept direction's score change: alone / kept fixed | "
          f"{free.effects[b.name][1] - free.effects[b.name][0]:+.3f} / {kept.effects[b.name][1] - kept.effects[b.name][0]:+.1e} |")
    print(f"| replay from the .npz content equals the edit bit for bit | {torch.equal(replay_edit(free.npz_content()), free.latent)} |")
    print(f"| strip picture size (5 frames) | {st.image.size[0]}×{st.image.size[1]} |")
    print(f"| seconds per edit (decode included) | {s_edit:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-teach", type=int, default=20, help="people taught from (one smiling + one neutral photo each)")
    ap.add_argument("--n-test", type=int, default=40, help="other people the accuracy is measured on")
    ap.add_argument("--n-edit", type=int, default=20, help="held-out people whose neutral face is edited")
    ap.add_argument("--n-gender", type=int, default=40, help="people the gender classifier is fitted on")
    ap.add_argument("--sg-n", type=int, default=20)
    ap.add_argument("--sg-images", type=int, default=5, help="images a side taught through projection (slow on CPU)")
    ap.add_argument("--sg-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-stylegan", action="store_true")
    ap.add_argument("--skip-london", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.skip_london:
        pass
    elif not LONDON.is_dir():
        print(f"London set not found at {LONDON}: skipping the faces part.")
    else:
        london(args)
    if not args.skip_stylegan and FIXTURE.is_file():
        stylegan(args)


if __name__ == "__main__":
    main()
