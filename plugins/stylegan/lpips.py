"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") with VGG16.

The weights are NVIDIA's ``vgg16.pt`` (the StyleGAN2-ADA projector's perceptual loss: VGG16 plus the
LPIPS linear weights, as a TorchScript archive). We never ``torch.jit.load`` it: its tensors are read
by :mod:`plugins.stylegan.torchscript_reader` and put into our own :class:`VGG16LPIPS`.

Names we read (as published by projects that load this file with ``torch.jit.load`` and list its
``state_dict()``): ``layers.conv1`` ... ``layers.conv13`` (``weight`` [out, in, 3, 3], ``bias`` [out];
each conv is followed by a ReLU, a 2x2 max-pool after conv 2, 4, 7, 10) and ``lpips0`` ... ``lpips4``
(the non-negative per-channel weights of the five compared layers, conv 2, 4, 7, 10, 13). The fully
connected ``layers.fc*`` are not needed. Input normalisation follows LPIPS (ImageNet mean/std on
[0, 1] images), and LPIPS distance is
``sum_l mean_hw sum_c w_lc (f̂0 - f̂1)²`` with ``f̂`` the features scaled to unit norm over channels.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.paths import cache_dir
from plugins.stylegan.torchscript_reader import TorchScriptArchiveError, named_tensors, read_archive

URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER = (2, 4, 7, 10)  # 1-based conv indices followed by a max-pool
LPIPS_AT = (2, 4, 7, 10, 13)  # the conv outputs LPIPS compares
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SIDE = 256  # larger images are area-downsampled first, as in the StyleGAN2-ADA projector
MIN_SIDE = 32


def weights_path() -> Path:
    """Where ``vgg16.pt`` lives (``$LATENT_LAB_CACHE/metrics/vgg16.pt``); put it there by hand when offline."""
    return cache_dir("metrics") / "vgg16.pt"


def is_available() -> bool:
    return weights_path().is_file()


class VGG16LPIPS(nn.Module):
    """VGG16 conv layers + LPIPS weights; ``forward(x, y)`` -> LPIPS distance per image (images in [-1, 1])."""

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS) -> None:
        super().__init__()
        if len(widths) != 13:
            raise ValueError("VGG16 has 13 conv layers.")
        self.widths = tuple(int(c) for c in widths)
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in zip((3, *widths[:-1]), widths, strict=True))
        for i, at in enumerate(LPIPS_AT):
            self.register_buffer(f"lpips{i}", torch.ones(widths[at - 1]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """LPIPS features of images in [-1, 1]: unit-normalised over channels, times sqrt(weight / (H W)).

        The squared L2 distance between two images' feature lists is their LPIPS distance.
        """
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS takes images of shape [N, 1 or 3, H, W], got {list(x.shape)}.")
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if max(x.shape[2:]) > MAX_SIDE:
            x = F.interpolate(x, size=(MAX_SIDE, MAX_SIDE), mode="area")
        if min(x.shape[2:]) < MIN_SIDE:  # four 2x poolings need at least 16 px; upsample tiny images (e.g. 8 px digits)
            x = F.interpolate(x, size=(MIN_SIDE, MIN_SIDE), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, conv in enumerate(self.convs, start=1):
            x = F.relu(conv(x))
            if i in LPIPS_AT:
                w = getattr(self, f"lpips{LPIPS_AT.index(i)}")
                f = x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10)
                out.append(f * (w.reshape(1, -1, 1, 1) / (f.shape[2] * f.shape[3])).sqrt())
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return out

    @staticmethod
    def distance(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        return sum((a - b).square().flatten(1).sum(1) for a, b in zip(fa, fb, strict=True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


def load_state(path: str | Path) -> tuple[tuple[int, ...], dict[str, torch.Tensor]]:
    """Read and check the tensors of a vgg16.pt-style archive: (conv widths, our state dict). Runs no code from it."""
    path = Path(path)
    tensors = named_tensors(read_archive(path))
    state: dict[str, torch.Tensor] = OrderedDict()
    widths, cin = [], 3
    for i in range(1, 14):
        w, b = tensors.get(f"layers.conv{i}.weight"), tensors.get(f"layers.conv{i}.bias")
        if w is None or b is None:
            raise TorchScriptArchiveError(f"'{path.name}' has no layers.conv{i}.weight/bias: not NVIDIA's VGG16 archive.")
        if w.ndim != 4 or tuple(w.shape[1:]) != (cin, 3, 3) or tuple(b.shape) != (w.shape[0],):
            raise TorchScriptArchiveError(f"'{path.name}': layers.conv{i} has shapes {list(w.shape)}, {list(b.shape)}; expected [*, {cin}, 3, 3].")
        state[f"convs.{i - 1}.weight"], state[f"convs.{i - 1}.bias"] = w.float(), b.float()
        cin = int(w.shape[0])
        widths.append(cin)
    for k, at in enumerate(LPIPS_AT):
        t = tensors.get(f"lpips{k}")
        if t is None or t.numel() != widths[at - 1] or t.shape[0] != widths[at - 1]:
            raise TorchScriptArchiveError(f"'{path.name}': lpips{k} is missing or does not have {widths[at - 1]} channels.")
        if not torch.isfinite(t).all() or (t < 0).any():
            raise TorchScriptArchiveError(f"'{path.name}': lpips{k} holds negative or non-finite weights.")
        state[f"lpips{k}"] = t.float().reshape(-1)
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise TorchScriptArchiveError(f"'{path.name}' holds non-finite weights.")
    return tuple(widths), state


def load_lpips(path: str | Path | None = None, device: str | torch.device = "cpu", require_vgg16: bool = True) -> VGG16LPIPS:
    """Our LPIPS module with the weights of ``path`` (default: :func:`weights_path`)."""
    path = Path(path) if path is not None else weights_path()
    widths, state = load_state(path)
    if require_vgg16 and widths != VGG16_WIDTHS:
        raise TorchScriptArchiveError(f"'{path.name}' has conv widths {widths}, not VGG16's {VGG16_WIDTHS}.")
    model = VGG16LPIPS(widths)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"mean", "std"}, (missing, unexpected)  # mean/std are ours, not in the file
    return model.to(device)


def verify_download(path: Path) -> None:
    """``download.fetch`` verify callback: the file must parse (safely) into VGG16 + LPIPS weights."""
    load_lpips(path)


def download(progress=None) -> Path:
    """Fetch vgg16.pt into the cache (resumable; checked by loading it safely); a no-op when present."""
    from plugins.stylegan.download import fetch

    return fetch(URL, weights_path(), progress=progress, verify=verify_download)


class LPIPSLoss:
    """Projection loss ``(recon, target) -> LPIPS per image``; caches the target's features (targets are fixed).

    Thread-safe: the cache is keyed by the target tensor object and its version, under a lock.
    """

    def __init__(self, model: VGG16LPIPS, cache_size: int = 8) -> None:
        self.model, self.cache_size = model, cache_size
        self._cache: OrderedDict[int, tuple[torch.Tensor, int, list[torch.Tensor]]] = OrderedDict()
        self._lock = threading.Lock()

    def _target_features(self, target: torch.Tensor) -> list[torch.Tensor]:
        key = id(target)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] is target and hit[1] == target._version:
                self._cache.move_to_end(key)
                return hit[2]
        with torch.no_grad():
            feats = self.model.features(target)
        with self._lock:
            self._cache[key] = (target, target._version, feats)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return feats

    def __call__(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ft = self._target_features(target)
        fr = self.model.features(recon)
        if len(ft[0]) != len(fr[0]):
            ft = [f.expand(len(fr[0]), *f.shape[1:]) for f in ft]
        return VGG16LPIPS.distance(fr, ft)


def build_loss(device: torch.device) -> LPIPSLoss:
    return LPIPSLoss(load_lpips(device=device))


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Download NVIDIA's VGG16 LPIPS weights (vgg16.pt) for the 'lpips' projection loss.")
    p.add_argument("--download", action="store_true", help=f"fetch {URL} into {weights_path()}")
    args = p.parse_args(argv)
    if args.download:
        from plugins.stylegan.download import TqdmProgress

        with TqdmProgress("vgg16.pt") as bar:
            print(download(progress=bar))
        return 0
    print(f"{weights_path()}: {'present' if is_available() else 'missing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
