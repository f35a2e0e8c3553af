"""Where a StyleGAN projection starts: near the target, found in a bank of the generator's own drawings.

Starting at ``w_avg`` leaves Adam most of its steps to walk towards the target. A bank of ``N`` latents
``w = mapping(z)`` and small thumbnails of what they draw (``FEATURE_SIZE`` px, average-pooled) is made once per
model (in memory, and for downloaded models in the user cache, keyed by a fingerprint of the weights; it holds only
the model's own samples, never a photo). A target is thumbnailed the same way and the start is the average of
its ``K`` nearest bank latents, weighted by closeness: a blend of several neighbours lies nearer to the target's
latent than any one of them. Looking up costs one pooling and one distance matrix.

The bank is made in bfloat16 where the CPU computes it natively (``fast_grad_dtype``), in batches; the ranking
only needs thumbnails, not exact pixels.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

FEATURE_SIZE = 16  # thumbnail side used to compare drawings with the target
NEIGHBOURS = 8  # bank latents blended into a start
SHARPNESS = 4.0  # weight of a neighbour: softmax(-SHARPNESS * distance / nearest distance)
BATCH = 16  # bank images drawn at once
_LOCK = threading.Lock()  # one bank build at a time (a second caller waits, then finds it made)


def fast_grad_dtype(device: torch.device | str) -> torch.dtype | None:
    """bfloat16 where the CPU has native bf16 arithmetic (AVX512-BF16 / AMX, Arm BF16), else None (float32).

    PyTorch's own check also says yes on CPUs that only emulate bf16, where it is slower than float32, so the
    CPU's flags are read instead.
    """
    if torch.device(device).type != "cpu":
        return None
    return torch.bfloat16 if _cpu_has_bf16() else None


_BF16: bool | None = None


def _cpu_has_bf16() -> bool:
    global _BF16
    if _BF16 is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="ignore")
        except OSError:
            text = ""
        flags = set()
        for line in text.splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[-1].split())
        _BF16 = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return _BF16


def thumbnails(images: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C*s*s) features of images (N, C, H, W): average-pooled to ``FEATURE_SIZE``, optionally masked first."""
    images = images.float()
    if weights is not None:
        images = images * weights.to(images)
    return F.adaptive_avg_pool2d(images, FEATURE_SIZE).flatten(1)


@dataclass
class LatentBank:
    """``w`` (N, w_dim) latents and ``features`` (N, C*s*s) thumbnails of their drawings."""

    w: torch.Tensor
    features: torch.Tensor

    def nearest(self, target: torch.Tensor, weights: torch.Tensor | None = None, k: int = NEIGHBOURS) -> torch.Tensor:
        """(N, w_dim) starts for targets (N, C, H, W): the closeness-weighted mean of each one's ``k`` nearest latents.

        ``weights`` (N or 1, 1, H, W): pixels that count (a face mask); the comparison is made inside them.
        """
        n = len(target)
        if weights is None:
            d = torch.cdist(thumbnails(target), self.features)
        else:
            w = weights.float().expand(n, *weights.shape[1:])
            mask = F.adaptive_avg_pool2d(w, FEATURE_SIZE).expand(-1, target.shape[1], -1, -1).flatten(1)  # (N, F)
            feats = thumbnails(target, w) / mask.clamp_min(1e-6)
            diff = (feats[:, None] - self.features[None]) * mask[:, None]
            d = diff.square().sum(-1).sqrt()
        k = max(1, min(k, len(self.w)))
        dist, idx = d.topk(k, dim=1, largest=False)
        share = torch.softmax(-SHARPNESS * dist / dist[:, :1].clamp_min(1e-8), dim=1)
        return (self.w[idx] * share[..., None]).sum(1)


def build_bank(model, size: int, seed: int = 0, noise_mode: str | None = None) -> LatentBank:
    """``size`` latents of ``model`` (a StyleGANModel) drawn with ``seed``, and thumbnails of their drawings."""
    if size < 1:
        raise ValueError("A latent bank needs at least one sample.")
    G = model.G
    w = model.sample(size, seed=seed, space="w").detach()
    dtype = fast_grad_dtype(model.device)
    feats = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        for i in range(0, size, BATCH):
            ws = w[i : i + BATCH, None].expand(-1, G.num_ws, -1)
            feats.append(thumbnails(G.synthesis(ws, noise_mode=noise_mode or model.noise_mode, force_fp32=True)))
    return LatentBank(w.float().cpu(), torch.cat(feats).float().cpu())


def fingerprint(model) -> str:
    """A short hash of the generator's configuration and a few of its tensors: the same weights give the same name."""
    h = hashlib.sha256(repr(sorted(getattr(model.G, "config", {}).items())).encode())
    h.update(repr((model.truncation_psi, model.truncation_cutoff, model.class_index)).encode())
    state = model.G.state_dict()
    for name in sorted(state)[:: max(1, len(state) // 16)]:
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes()[:65536])
    return h.hexdigest()[:24]


def bank_for(model, size: int, seed: int = 0, noise_mode: str | None = None) -> LatentBank:
    """The model's bank (made once; from ``model.bank_dir`` on disk when set and present, saved there when made)."""
    key = (int(size), int(seed), noise_mode or model.noise_mode)
    banks = model.__dict__.setdefault("_banks", {})
    if key in banks:
        return banks[key]
    with _LOCK:
        if key in banks:
            return banks[key]
        path = None
        if getattr(model, "bank_dir", None) is not None:
            path = Path(model.bank_dir) / f"{fingerprint(model)}-{key[0]}-{key[1]}-{key[2]}.pt"
        bank = None
        if path is not None and path.is_file():
            try:
                data = torch.load(path, weights_only=True)
                bank = LatentBank(data["w"], data["features"])
                if len(bank.w) != key[0] or bank.w.shape[1] != model.G.w_dim:
                    bank = None
            except (OSError, RuntimeError, KeyError, ValueError, TypeError):
                bank = None
        if bank is None:
            bank = build_bank(model, *key)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
                    torch.save({"w": bank.w, "features": bank.features}, tmp)
                    tmp.replace(path)
                except OSError:
                    pass  # a cache only: the bank is still used from memory
        banks[key] = bank
        return bank


def warm_bank(model, size: int, seed: int = 0) -> threading.Thread:
    """Make the model's default bank in a background thread (after loading), so the first projection finds it ready."""
    t = threading.Thread(target=bank_for, args=(model, size, seed), name="stylegan-bank", daemon=True)
    t.start()
    return t
