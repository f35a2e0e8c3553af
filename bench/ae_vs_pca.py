"""Held-out reconstruction of the built-in autoencoders vs PCA with the same latent size.

    python -m bench.ae_vs_pca [--weights plugins/small_ae/weights] [--shared ../shared]

PCA is fitted on exactly the training split the autoencoder saw (digits: a fixed
80 %; faces: 87 people, both photos) and scored on the held-out split (faces:
15 other people). A second PCA row is also fitted on the training images plus
their mirror images (the flips the face model trained with), a stronger and
fairer linear baseline (digits are not flipped: n/a). Target: AE MSE <= 0.7 x PCA MSE. The faces rows need
the London set from the shared data and are skipped without it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from core.images import psnr
from plugins.small_ae import CARDS
from plugins.small_ae.data import load_digits_dataset, load_london, london_root
from plugins.small_ae.model import SmallAEModel, load_latents

TARGET = 0.7


def pca_reconstruct(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, svd_solver="full").fit(train)
    return pca.inverse_transform(pca.transform(test))


def evaluate(model: SmallAEModel, train: torch.Tensor, test: torch.Tensor, flipped_too: bool) -> dict[str, float]:
    k = model.spaces["latent"].shape[0]
    t0 = time.perf_counter()
    with torch.no_grad():
        rec = model.generate(model.encode_batched(test))
    ms = (time.perf_counter() - t0) / len(test) * 1000
    x_tr, x_te = train.flatten(1).numpy(), test.flatten(1).numpy()
    out = {"k": k, "n_train": len(train), "n_test": len(test), "ms": ms, "pca_flip": float("nan")}
    out["ae"] = float((rec - test).pow(2).mean())
    out["ae_psnr"] = float(psnr(rec, test).mean())
    fits = [("pca", x_tr)]
    if flipped_too:
        fits.append(("pca_flip", np.concatenate([x_tr, train.flip(-1).flatten(1).numpy()])))
    for name, fit in fits:
        r = torch.from_numpy(pca_reconstruct(fit, x_te, k)).view_as(test).float()
        out[name] = float((r - test).pow(2).mean())
        out[f"{name}_psnr"] = float(psnr(r.clamp(-1, 1), test).mean())
    return out


def check_split(folder: Path, heldout: np.ndarray) -> None:
    """The stored latents record the split used in training; refuse to compare on a different one."""
    tensors, _ = load_latents(folder)
    stored = tensors["split"].numpy().astype(bool)
    if len(stored) != len(heldout) or not np.array_equal(stored, heldout):
        raise SystemExit(f"The held-out split differs from the one stored in {folder} (retrain or check the data).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(Path(__file__).resolve().parents[1] / "plugins" / "small_ae" / "weights"))
    p.add_argument("--shared", help="the shared data folder (default: ../shared beside the project)")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    rows = []

    folder = Path(a.weights) / "digits"
    ds = load_digits_dataset()
    check_split(folder, ds.heldout)
    model = SmallAEModel.from_pretrained(folder, CARDS["digits"]).to("cpu")
    rows.append(("digits 8x8", evaluate(model, ds.train_images, ds.heldout_images, flipped_too=False)))

    root = london_root(a.shared)
    if (root / "london_info.csv").is_file():
        folder = Path(a.weights) / "faces"
        model = SmallAEModel.from_pretrained(folder, CARDS["faces"]).to("cpu")
        ds = load_london(model.image_size, root, progress=False)
        check_split(folder, ds.heldout)
        rows.append(("London faces 64x64", evaluate(model, ds.train_images, ds.heldout_images, flipped_too=True)))
    else:
        print(f"faces skipped: the London set is not at {root} (only developers and CI have ../shared)\n")

    head = "| data | latent | train / held-out | AE MSE | PCA MSE | AE / PCA | PCA+flips MSE | AE / PCA+flips | PSNR AE / PCA (dB) | AE ms/img |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    ok = True
    for name, r in rows:
        ratio = r["ae"] / r["pca"]
        ok &= ratio <= TARGET
        flip = "n/a | n/a" if np.isnan(r["pca_flip"]) else f"{r['pca_flip']:.4f} | {r['ae'] / r['pca_flip']:.3f}"
        print(
            f"| {name} | {r['k']} | {r['n_train']} / {r['n_test']} | {r['ae']:.4f} | {r['pca']:.4f} | **{ratio:.3f}** | {flip} | "
            f"{r['ae_psnr']:.2f} / {r['pca_psnr']:.2f} | {r['ms']:.2f} |"
        )
    print(f"\ntarget AE / PCA <= {TARGET}: {'met' if ok else 'MISSED'} on {len(rows)} dataset(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
