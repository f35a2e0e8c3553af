"""Train a small autoencoder and write exactly the files the app loads.

    python -m plugins.small_ae.train digits --out plugins/small_ae/weights/digits --seed 0
    python -m plugins.small_ae.train faces --out plugins/small_ae/weights/faces --seed 0
    python -m plugins.small_ae.train london --out DIR --seed 0   (the earlier London-only recipe)
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

from plugins.small_ae.data import Dataset, FaceMix, load_backgrounds, load_digits_dataset, load_face_mix, load_folder, load_london
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
    colour: float = 0.0  # random per-channel gain of up to this fraction (white balance)
    background: float = 0.0  # share of images whose backdrop (outside the face mask) is swapped for a background photo
    loss: str = "mse"  # "mse", or "face": MS-SSIM + L1 + MSE weighted to the face mask (needs masks)
    outside_weight: float = 0.1  # "face" loss: weight of pixels outside the face mask
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
    # London + selfies + Olivetti; the loss weighs the face and backdrops are swapped, so photos taken anywhere
    # encode to the person rather than to their background (see docs/training.md).
    "faces-mix": (
        AEConfig(image_size=64, channels=3, latent_dim=256, widths=(16, 32, 64, 128, 256), blocks_per_level=0, gmm_components=1),
        TrainConfig(epochs=130, batch_size=16, lr=1e-3, flip=True, shift=4, rotate=8, scale=0.08, jitter=0.15, colour=0.1,
                    background=0.6, loss="face", outside_weight=0.5, latent_noise=0.05),
    ),
}


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def augment(
    x: torch.Tensor, tc: TrainConfig, g: torch.Generator, mask: torch.Tensor | None = None, backgrounds: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random flips, shifts, rotations, zooms and lighting, drawn from ``g`` (so they are part of the seeded run).

    With a face ``mask`` (N, H, W) it moves with the image, and the result is (input, target, mask): the input has
    its backdrop replaced by a window of a random background photo for a share of images, the target keeps the
    original, so the encoder learns to ignore what lies behind the face.
    """
    if mask is not None:
        both = augment(torch.cat([x, mask[:, None] * 2 - 1], 1), replace(tc, jitter=0.0, colour=0.0), g)
        x, mask = both[:, :-1], (both[:, -1] + 1) / 2
        x = _lighting(x, tc, g)
        inp = x
        if tc.background and backgrounds is not None:
            n, size = len(x), x.shape[-1]
            pick = torch.randint(0, len(backgrounds), (n,), generator=g).tolist()
            off = torch.randint(0, backgrounds.shape[-1] - size + 1, (n, 2), generator=g).tolist()
            bg = torch.stack([backgrounds[b, :, dy : dy + size, dx : dx + size] for b, (dy, dx) in zip(pick, off, strict=True)])
            on = (torch.rand(n, generator=g) < tc.background)[:, None, None, None]
            m = mask[:, None]
            inp = torch.where(on, m * x + (1 - m) * bg, x)
        return inp, x, mask
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
    return _lighting(x, tc, g)


def _lighting(x: torch.Tensor, tc: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """Random brightness/contrast (``jitter``) and per-channel white balance (``colour``)."""
    n = len(x)
    if tc.jitter:
        gain = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * tc.jitter
        offset = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * tc.jitter
        x = (x * gain + offset).clamp(-1, 1)
    if tc.colour:
        tint = 1 + (torch.rand(n, x.shape[1], 1, 1, generator=g) * 2 - 1) * tc.colour
        x = ((x + 1) * tint - 1).clamp(-1, 1)
    return x


def face_loss(rec: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, outside: float) -> torch.Tensor:
    """0.84 (1 - MS-SSIM) + 0.16 L1 (Zhao et al. 2017) + MSE, all weighted to the face: pixels outside the mask count
    ``outside`` as much, and MS-SSIM sees the target there (so only the face's structure is compared)."""
    from core.losses import MIX_ALPHA, ms_ssim

    w = (mask + outside * (1 - mask))[:, None]
    norm = w.sum() * rec.shape[1]
    l1 = ((rec - target).abs() * w).sum() / norm / 2
    mse = ((rec - target) ** 2 * w).sum() / norm
    structure = 1 - ms_ssim(w * rec + (1 - w) * target, target).mean()
    return MIX_ALPHA * structure + (1 - MIX_ALPHA) * l1 + mse


def train_autoencoder(
    images: torch.Tensor,
    config: AEConfig,
    tc: TrainConfig,
    progress: bool = True,
    device: str = "cpu",
    masks: torch.Tensor | None = None,
    backgrounds: torch.Tensor | None = None,
) -> ConvAutoencoder:
    """Fit an autoencoder to ``images`` (N, C, H, W) in [-1, 1] (face ``masks`` (N, H, W) for the "face" loss and
    background swaps); returns it on the CPU in eval mode (prior not fitted yet). Runs are reproducible on the CPU;
    a GPU is faster but not bit-for-bit repeatable across machines."""
    from tqdm import tqdm

    set_determinism(tc.seed, tc.threads)
    # channels_last: about twice as fast for these convolutions on CPU (oneDNN).
    net = ConvAutoencoder(config).to(device, memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(tc.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(images) / tc.batch_size)
    total = tc.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / total)))
    if tc.loss == "face" and masks is None:
        raise ValueError("The 'face' loss needs face masks (use the faces-mix data).")
    net.train()
    bar = tqdm(range(tc.epochs), desc="training", disable=not progress, file=sys.stderr)
    for _ in bar:
        perm = torch.randperm(len(images), generator=g)
        running = 0.0
        for i in range(0, len(images), tc.batch_size):
            idx = perm[i : i + tc.batch_size]
            if masks is not None:
                x, target, m = (t.to(device) for t in augment(images[idx], tc, g, masks[idx], backgrounds))
                x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = target = augment(images[idx], tc, g).to(device, memory_format=torch.channels_last)
            z = net.encode(x)
            if tc.latent_noise:
                z = z + tc.latent_noise * z.detach().std(0, keepdim=True) * torch.randn(z.shape, generator=g).to(device)
            rec = net.decode(z)
            loss = face_loss(rec, target, m, tc.outside_weight) if tc.loss == "face" else torch.nn.functional.mse_loss(rec, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(x)
        bar.set_postfix(loss=f"{running / len(images):.4f}")
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


def run(
    ds: Dataset, config: AEConfig, tc: TrainConfig, out: str | Path, progress: bool = True, mix: FaceMix | None = None
) -> dict:
    """Train on the training split (with ``mix``: plus its extra faces, masks and background swaps), fit the prior,
    write weights + latents into ``out``; returns facts for the log. Latents, prior and directions come from ``ds``."""
    out = Path(out)
    t0, c0 = time.perf_counter(), time.process_time()
    if mix is not None:
        backgrounds = load_backgrounds(config.image_size, mix.shared) if tc.background else None
        net = train_autoencoder(mix.train_images, config, tc, progress, masks=mix.train_masks, backgrounds=backgrounds)
    else:
        net = train_autoencoder(ds.train_images, config, tc, progress)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    latents = encode_all(net, ds.images)
    net.fit_prior(latents[torch.from_numpy(~ds.heldout)], seed=tc.seed)
    training = {
        "dataset": ds.name,
        "n_train": int((~ds.heldout).sum()),
        "n_heldout": int(ds.heldout.sum()),
        **({"extra_train": mix.extra_sources} if mix is not None else {}),
        **{k: v for k, v in tc.__dict__.items() if k != "threads"},
    }
    net.save_pretrained(out, training=training)
    save_latents(out, latents, ds)
    facts: dict = {
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),  # summed over threads: on a busy machine, wall time says little
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
    mixp = sub.add_parser("faces", help="London + selfies + Olivetti from the shared data, face-weighted loss, background swaps")
    mixp.add_argument("--shared", help="the shared folder holding data/faces and data/backgrounds (default: ../shared)")
    mixp.add_argument("--olivetti", action="store_true", help="also train on the Olivetti faces (greyscale; off: see docs/benchmarks.md)")
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

    mix = None
    if a.data == "digits":
        config, tc = PRESETS["digits"]
        ds = load_digits_dataset()
    elif a.data == "london":
        config, tc = PRESETS["faces"]
        ds = load_london(config.image_size, a.root, progress=not a.quiet)
    elif a.data == "faces":
        config, tc = PRESETS["faces-mix"]
        mix = load_face_mix(config.image_size, a.shared, olivetti=a.olivetti, progress=not a.quiet)
        ds = mix.london
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
    facts = run(ds, config, tc, a.out, progress=not a.quiet, mix=mix)
    print(json.dumps({"out": str(a.out), "images": len(ds.images), **facts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
