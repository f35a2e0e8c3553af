"""Deterministic DDIM sampling and DDIM inversion with diffusers' own schedulers.

Inversion runs ``DDIMInverseScheduler`` (ascending timesteps) from a clean image to the noise
``x_T``; sampling runs ``DDIMScheduler`` (descending) from ``x_T`` back to an image. Both are built
from one scheduler config (a DDPM one works: the betas are what matter) with ``eta = 0`` and no
clipping, because clipping ``x0`` is not invertible and would break the round trip. Both take an
optional ``progress(i, n)`` callback and a ``cancel()`` predicate, checked between UNet calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class Cancelled(Exception):
    """Raised between UNet calls when ``cancel()`` returned True."""


def _config_for(cls: type, config: Mapping[str, Any], clip: bool = False) -> dict:
    """The keys of ``config`` that ``cls`` takes (a DDPM config has a few DDIM does not: no warnings for them),
    with clipping and thresholding off: both make a step non-invertible."""
    accepted = set(inspect.signature(cls.__init__).parameters)
    cfg = {k: v for k, v in dict(config).items() if k in accepted}
    cfg.update({k: False for k in ("clip_sample", "thresholding") if k in accepted})
    if clip:
        cfg["clip_sample"] = True
    # The inverse scheduler knows only these spacings; both sides must use the same timesteps.
    if cfg.get("timestep_spacing", "leading") not in ("leading", "trailing"):
        cfg["timestep_spacing"] = "leading"
    # Sampling ends at alphas_cumprod[0] and inversion starts there, so the two walks are mirror images.
    cfg["set_alpha_to_one"] = False
    return cfg


def ddim_scheduler(config: Mapping[str, Any], steps: int, clip: bool = False):
    """A ``DDIMScheduler`` for ``steps`` sampling steps, built from any diffusers scheduler config; ``clip`` clamps each
    predicted x0 to the config's ``clip_sample_range`` (for fresh samples only: it is not invertible)."""
    from diffusers import DDIMScheduler

    _check_steps(steps, config)
    sched = DDIMScheduler(**_config_for(DDIMScheduler, config, clip))
    sched.set_timesteps(steps)
    return sched


def ddim_inverse_scheduler(config: Mapping[str, Any], steps: int):
    """A ``DDIMInverseScheduler`` whose timesteps are exactly the sampler's, in ascending order."""
    from diffusers import DDIMInverseScheduler

    _check_steps(steps, config)
    sched = DDIMInverseScheduler(**_config_for(DDIMInverseScheduler, config))
    sched.set_timesteps(steps)
    return sched


def _check_steps(steps: int, config: Mapping[str, Any]) -> None:
    total = int(config.get("num_train_timesteps", 1000))
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
        raise ValueError(f"The number of DDIM steps must be a whole number from 1 to {total}, not {steps!r}.")


def _eps(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return unet(x, t).sample


@torch.no_grad()
def ddim_invert(
    unet: torch.nn.Module,
    scheduler_config: Mapping[str, Any],
    x0: torch.Tensor,
    steps: int,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> torch.Tensor:
    """Noise ``x_T`` that :func:`ddim_sample` with the same ``steps`` maps back to (about) ``x0``.

    ``x0`` is (N, C, H, W) in the UNet's range ([-1, 1] for diffusers' pixel models)."""
    sched = ddim_inverse_scheduler(scheduler_config, steps)
    x = x0.to(next(unet.parameters()).dtype)
    n = len(sched.timesteps)
    for i, t in enumerate(sched.timesteps):
        if cancel is not None and cancel():
            raise Cancelled(f"DDIM inversion stopped at step {i} of {n}.")
        x = sched.step(_eps(unet, x, t), t, x).prev_sample
        if progress is not None:
            progress(i + 1, n)
    return x


@torch.no_grad()
def ddim_sample(
    unet: torch.nn.Module,
    scheduler_config: Mapping[str, Any],
    xT: torch.Tensor,
    steps: int,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    clip: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM sampling (eta = 0) from the noise ``xT``; the result is not clamped.

    Decode an inverted x_T with ``clip=False`` (the default: the exact mirror of :func:`ddim_invert`); sample fresh
    noise with ``clip=True``: on the built-in digits model the unclipped sampler leaves several samples in 64 as
    speckle, the clipped one none."""
    sched = ddim_scheduler(scheduler_config, steps, clip)
    x = xT.to(next(unet.parameters()).dtype)
    n = len(sched.timesteps)
    for i, t in enumerate(sched.timesteps):
        if cancel is not None and cancel():
            raise Cancelled(f"DDIM sampling stopped at step {i} of {n}.")
        x = sched.step(_eps(unet, x, t), t, x, eta=0.0).prev_sample
        if progress is not None:
            progress(i + 1, n)
    return x
