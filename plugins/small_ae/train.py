"""Train a small autoencoder and write exactly the files the app loads.

    python -m plugins.small_ae.train digits --out plugins/small_ae/weights/digits --seed 0
    python -m plugins.small_ae.train london --out plugins/small_ae/weights/faces --seed 0
    python -m plugins.small_ae.train folder PATH --size 64 --out DIR [--align-faces] [--labels CSV]

The same seed gives byte-identical weights on the same machine: torch runs with
deterministic algorithms and a fixed thread count, and every random draw
(initialisation, shuffling, augmentation) comes from the seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from plugins.small_ae.data import Dataset, load_digits_dataset, load_folder, load_london
from plugins.small_ae.model import LATENTS_NAME, AEConfig, ConvAutoencoder


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    flip: bool = False  # random horizontal flips (faces)
    shift: int = 0  # random shifts of up to this many pixels (reflect-padded)
    rotate: float = 0.0  # random rotations of up to this many degrees ...
    scale: float = 0.0  # ... and zooms by up to this fraction (bilinear, on half of each batch)
    jitter: float = 0.0  # random per-image gain/offset of up to this fraction (lighting)
    latent_noise: float = 0.0  # std of noise added to codes in training, relative to their running std: a smoother decoder
    seed: int = 0
    threads: int = 2


# The two built-in models: architecture and training recipe.
PRESETS: dict[str, tuple[AEConfig, TrainConfig]] = {
    "digits": (
        AEConfig(image_size=8, channels=1, latent_dim=8, widths=(32, 64), blocks_per_level=0, gmm_components=10),
        TrainConfig(epochs=150, batch_size=64, lr=2e-3),
    ),
    "faces": (
        AEConfig(image_size=64, channels=3, latent_dim=64, widths=(16, 32, 64, 128), blocks_per_level=0, gmm_components=1),
        TrainConfig(epochs=600, batch_size=16, lr=2e-3, flip=True, shift=6, rotate=8, scale=0.08, jitter=0.1),
    ),
}


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def augment(x: torch.Tensor, tc: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """Random flips and shifts, drawn from ``g`` (so they are part of the seeded run)."""
    n = len(x)
    if tc.flip:
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if tc.shift:
        s, size = tc.shift, x.shape[-1]
        padded = torch.nn.functional.pad(x, (s, s, s, s), mode="reflect")
        off = torch.randint(0, 2 * s + 1, (n, 2), generator=g).tolist()
        x = torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(off)])
    if tc.rotate or tc.scale:
        angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(tc.rotate)
        zoom = 1 + (torch.rand(n, generator=g) * 2 - 1) * tc.scale
        on = torch.rand(n, generator=g) < 0.5
        angle, zoom = torch.where(on, angle, 0.0), torch.where(on, zoom, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if tc.jitter:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * tc.jitter
        offset = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * tc.jitter
        x = (x * gain + offset).clamp(-1, 1)
    return x


def train_autoencoder(
    images: torch.Tensor, config: AEConfig, tc: TrainConfig, progress: bool = True, device: str = "cpu"
) -> ConvAutoencoder:
    """Fit an autoencoder to ``images`` (N, C, H, W) in [-1, 1] with MSE; returns it on the CPU in eval mode (prior not
    fitted yet). Runs are reproducible on the CPU; a GPU is faster but not bit-for-bit repeatable across machines."""
    from tqdm import tqdm

    set_determinism(tc.seed, tc.threads)
    # channels_last: about twice as fast for these convolutions on CPU (oneDNN).
    net = ConvAutoencoder(config).to(device, memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(tc.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(images) / tc.batch_size)
    total = tc.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / total)))
    net.train()
    bar = tqdm(range(tc.epochs), desc="training", disable=not progress, file=sys.stderr)
    for _ in bar:
        perm = torch.randperm(len(images), generator=g)
        running = 0.0
        for i in range(0, len(images), tc.batch_size):
            x = augment(images[perm[i : i + tc.batch_size]], tc, g).to(device, memory_format=torch.channels_last)
            z = net.encode(x)
            if tc.latent_noise:
                z = z + tc.latent_noise * z.detach().std(0, keepdim=True) * torch.randn(z.shape, generator=g).to(device)
            loss = torch.nn.functional.mse_loss(net.decode(z), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(x)
        bar.set_postfix(mse=f"{running / len(images):.4f}")
    return net.cpu().to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def encode_all(net: ConvAutoencoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([net.encode(images[i : i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def reconstruction_mse(net: ConvAutoencoder, images: torch.Tensor) -> float:
    rec = torch.cat([net(images[i : i + 256]) for i in range(0, len(images), 256)])
    return float((rec - images).pow(2).mean())


def save_latents(folder: Path, latents: torch.Tensor, ds: Dataset) -> None:
    """``latents.safetensors``: codes of every item, its split (0 train, 1 held-out) and labels.

    The label names go into one JSON metadata entry: safetensors writes several entries in
    no fixed order, which would make the file's bytes differ between identical runs.
    """
    from safetensors.torch import save_file

    tensors = {"latents": latents.float().contiguous(), "split": torch.from_numpy(ds.heldout.astype(np.uint8))}
    for k, v in ds.labels.items():
        tensors[k] = torch.from_numpy(np.ascontiguousarray(v))
    info = {"dataset": ds.name, "split": ["train", "held-out"], "labels": {k: ds.label_maps[k] for k in sorted(ds.label_maps)}}
    save_file(tensors, str(folder / LATENTS_NAME), metadata={"info": json.dumps(info, sort_keys=True)})


def write_directions(folder: Path, latents: np.ndarray, ds: Dataset) -> list[str]:
    """Fit attribute directions on the encoded data and save them beside the weights.

    Two-valued labels (gender, expression) get a logistic-regression direction and
    numbers (age) a ridge one; held-out accuracy is measured on people never
    seen in fitting (folds grouped by ``face_id`` when there is one). Digit
    classes and ids are not attributes and are skipped.
    """
    from core.direction import save_directions
    from core.direction_fit import fit_binary_direction, fit_numeric_direction
    from plugins.small_ae.model import DIRECTIONS_NAME

    groups = ds.labels.get("face_id")
    found = []
    for name, values in sorted(ds.labels.items()):
        if name in ("face_id", "digit", "index"):
            continue
        values = np.asarray(values)
        source = f"{len(latents)} encoded photos of {ds.name}"
        if name in ds.label_maps and len(ds.label_maps[name]) == 2:
            named = np.array(ds.label_maps[name])[values.astype(int)]
            found.append(fit_binary_direction(latents, named, name, groups=groups, positive=ds.label_maps[name][1], source=source))
        elif np.issubdtype(values.dtype, np.number):
            ok = np.isfinite(values)
            found.append(fit_numeric_direction(latents[ok], values[ok], name, groups=None if groups is None else groups[ok],
                                               unit="years" if name == "age" else name, source=source))
    if found:
        save_directions(folder / DIRECTIONS_NAME, found)
    return [d.describe() for d in found]


def run(ds: Dataset, config: AEConfig, tc: TrainConfig, out: str | Path, progress: bool = True) -> dict:
    """Train on the training split, fit the prior, write weights + latents into ``out``; returns facts for the log."""
    out = Path(out)
    t0 = time.perf_counter()
    net = train_autoencoder(ds.train_images, config, tc, progress)
    seconds = time.perf_counter() - t0
    latents = encode_all(net, ds.images)
    net.fit_prior(latents[torch.from_numpy(~ds.heldout)], seed=tc.seed)
    training = {
        "dataset": ds.name,
        "n_train": int((~ds.heldout).sum()),
        "n_heldout": int(ds.heldout.sum()),
        **{k: v for k, v in tc.__dict__.items() if k != "threads"},
    }
    net.save_pretrained(out, training=training)
    save_latents(out, latents, ds)
    facts: dict = {
        "train_seconds": round(seconds, 1),
        "train_mse": reconstruction_mse(net, ds.train_images),
        "heldout_mse": reconstruction_mse(net, ds.heldout_images) if ds.heldout.any() else float("nan"),
        "params": sum(p.numel() for p in net.parameters()),
        "directions": write_directions(out, latents.numpy(), ds),
    }
    return facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m plugins.small_ae.train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="data", required=True)
    sub.add_parser("digits", help="scikit-learn's 8x8 digits")
    lon = sub.add_parser("london", help="the Face Research Lab London set from the shared data, aligned, 64x64")
    lon.add_argument("--root", help="the london folder (default: ../shared/data/faces/london)")
    fol = sub.add_parser("folder", help="any folder of images")
    fol.add_argument("path")
    fol.add_argument("--size", type=int, default=64)
    fol.add_argument("--align-faces", action="store_true", help="FFHQ-align each photo's face (photos without one are skipped)")
    fol.add_argument("--labels", help="CSV whose first column matches file stems (or their part before '_')")
    fol.add_argument("--heldout-fraction", type=float, default=0.15)
    for s in sub.choices.values():
        s.add_argument("--out", required=True, help="folder to write model.safetensors, config.json, latents.safetensors")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--epochs", type=int, help="override the preset's number of epochs")
        s.add_argument("--latent-dim", type=int, help="override the preset's latent size")
        s.add_argument("--threads", type=int, default=2, help="torch threads (part of what makes a run reproducible)")
        s.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    if a.data == "digits":
        config, tc = PRESETS["digits"]
        ds = load_digits_dataset()
    elif a.data == "london":
        config, tc = PRESETS["faces"]
        ds = load_london(config.image_size, a.root, progress=not a.quiet)
    else:
        config, tc = PRESETS["faces"]
        config = replace(config, image_size=a.size)
        ds = load_folder(a.path, a.size, a.align_faces, a.labels, heldout_fraction=a.heldout_fraction, progress=not a.quiet)
        config = replace(config, channels=ds.images.shape[1])
    for line in ds.skipped:
        print(f"skipped {line}", file=sys.stderr)
    if a.latent_dim:
        config = replace(config, latent_dim=a.latent_dim)
    tc = replace(tc, seed=a.seed, threads=a.threads, epochs=a.epochs or tc.epochs)
    facts = run(ds, config, tc, a.out, progress=not a.quiet)
    print(json.dumps({"out": str(a.out), "images": len(ds.images), **facts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
