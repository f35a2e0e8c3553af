"""What a projection is asked to do and what it reports: its settings, its per-step events and its result.

Kept apart from the loop (``core.projection``) so a backend's own inversion (``LatentModel.inversion_events``) and the
start and penalty terms (``core.projection_priors``) can name these types without importing the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from core.checks import whole_number

if TYPE_CHECKING:  # for_model reads the model's defaults; the model's module names these types back
    from core.model import LatentModel

MAX_STEPS = 10**7  # a bound for the whole-number check, far above anything a person asks for

INITS = ("auto", "encoder", "mean", "samples", "bank")


@dataclass
class ProjectionConfig:
    space: str | None = None  # None: the model's default space
    steps: int = 200
    lr: float = 0.05
    init: str = "auto"  # encoder if the model has one, else ``auto_init``
    bank_size: int = 64  # samples tried by init="bank"
    loss: str = "mse"
    lr_rampup: float = 0.05  # fraction of steps
    lr_rampdown: float = 0.25  # fraction of steps (1.0: a cosine decay over the whole run)
    latent_noise: float = 0.0  # initial latent noise, as a fraction of the latents' spread
    latent_noise_ramp: float = 0.75  # fraction of steps over which it decays to 0
    optimize_noise: bool = False  # models with noise inputs (noise_shapes()) only
    noise_regularize: float = 1e5
    betas: tuple[float, float] = (0.9, 0.999)
    preview_every: int = 10
    seed: int = 0
    auto_init: str = "mean"  # what init="auto" means for a model without an encoder
    stats_samples: int = 1000  # samples behind init="samples" (their mean), the latent-noise and W+ penalty scales (NVIDIA: 10,000)
    noise_mode: str | None = None  # decode(noise_mode=...) while noise maps are not optimised; None: the model's own
    bank_chunk: int = 64  # images decoded at once while scoring a bank
    layer_spread_penalty: float = 0.0  # per-layer spaces (W+): weight of the layers' spread around their mean (see below)
    # On-manifold terms (see on_manifold_penalty): keep the latent where the model has seen data.
    prior_weight: float = 0.0  # weight of the squared Mahalanobis distance under a Gaussian fitted to the model's samples, per dimension
    encoder_anchor: float = 0.0  # models with an encoder: weight of ||z - encode(target)||², in units of the latents' spread²

    @classmethod
    def for_model(cls, model: LatentModel, space: str | None = None, **overrides) -> ProjectionConfig:
        """The model's ``projection_defaults(space)`` with ``overrides``; an override of None keeps the default.

        ``loss="auto"`` (the UI's and CLI's default) also keeps the model's choice (StyleGAN: LPIPS when its
        weights are present, else MS-SSIM + L1).
        """
        space = space or model.default_space
        defaults = model.projection_defaults(space)
        known = {f.name for f in fields(cls)}
        for what, keys in ((f"{model.card.title}'s projection_defaults", defaults), ("the projection settings", overrides)):
            unknown = sorted(set(keys) - known)
            if unknown:
                raise ValueError(f"Unknown projection setting(s) in {what}: {', '.join(unknown)}; "
                                 f"ProjectionConfig has {', '.join(sorted(known))}.")
        chosen = {k: v for k, v in overrides.items() if v is not None and not (k == "loss" and v in ("", "auto"))}
        return cls(**{**defaults, "space": space, **chosen})

    def __post_init__(self) -> None:
        self.steps = whole_number(self.steps, "number of steps", 0, MAX_STEPS)


@dataclass
class ProjectionEvent:
    step: int
    steps: int
    loss: float
    psnr: float
    latent: torch.Tensor  # detached, on the CPU, in ``space``
    space: str
    preview: torch.Tensor | None = None  # (N, C, H, W) in [-1, 1], on the CPU
    done: bool = False
    loss_name: str = "mse"
    init: str = ""
    setup_seconds: float = 0.0  # one-time cost before the first step (statistics, bank), on the first event
    noise: list[torch.Tensor] | None = None  # optimised noise maps (N, 1, H, W), on the CPU, with each preview
    stopped: bool = False  # the final event of a projection stopped before its last step
    stage: str = "projecting"  # what a progress bar says (core.pivotal's events say "tuning")


@dataclass
class ProjectionResult:
    latent: torch.Tensor
    space: str
    reconstruction: torch.Tensor
    psnr: float
    loss: float
    steps: int
    history: list[tuple[int, float, float]]
    loss_name: str
    init: str


def learning_rate(cfg: ProjectionConfig, t: float) -> float:
    """Learning rate at progress t in [0, 1]: linear ramp-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown) if cfg.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / cfg.lr_rampup) if cfg.lr_rampup > 0 else 1.0
    return cfg.lr * ramp

