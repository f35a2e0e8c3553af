"""Deterministic DDIM sampling and DDIM inversion with diffusers' own schedulers: the one implementation that the
app's ``DiffusionModel`` and the trainer (``plugins.diffusion.train``) both use.

Inversion runs ``DDIMInverseScheduler`` (ascending timesteps) from a clean image to the noise ``x_T``, each step
followed by ``refine`` fixed-point corrections that make it the exact inverse of the sampler's step; sampling runs
``DDIMScheduler`` (descending) from ``x_T`` back to an image. Both are built from one scheduler config (a DDPM one
works: the betas are what matter) with ``eta = 0``. Clipping the predicted x0 is an option of sampling only: it keeps
fresh samples clean, but it is not invertible, so decoding an inverted ``x_T`` must not clip.

:func:`sampling` and :func:`inversion` are streams of ``(step, steps, x)`` (previews, Stop buttons between yields);
:func:`ddim_sample` and :func:`ddim_invert` drive them with a ``progress(i, n)`` callback and a ``cancel()``
predicate checked between UNet calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from core.model import Cancelled

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Eps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> predicted noise
Stream = Iterator[tuple[int, int, torch.Tensor]]

__all__ = ["Cancelled", "ddim_config", "ddim_invert", "ddim_inverse_scheduler", "ddim_sample", "ddim_scheduler",
           "check_steps", "drive", "inversion", "noise_predictor", "sampling"]


def _config_for(cls: type, config: Mapping[str, Any], clip: bool = False) -> dict:
    """The keys of ``config`` that ``cls`` takes (a DDPM config has a few DDIM does not: no warnings for them),
    with thresholding off and clipping only when asked: both make a step non-invertible."""
    accepted = set(inspect.signature(cls.__init__).parameters)
    cfg = {k: v for k, v in dict(config).items() if k in accepted and not k.startswith("_")}
    cfg.update({k: False for k in ("clip_sample", "thresholding") if k in accepted})
    if clip:
        cfg["clip_sample"] = True
    # The inverse scheduler knows only these spacings; both sides must use the same timesteps.
    if cfg.get("timestep_spacing", "leading") not in ("leading", "trailing"):
        cfg["timestep_spacing"] = "leading"
    # Sampling ends at alphas_cumprod[0] and inversion starts there, so the two walks are mirror images.
    cfg["set_alpha_to_one"] = False
    return cfg


def ddim_config(config: Mapping[str, Any], clip: bool = False) -> dict:
    """``DDIMScheduler`` keyword arguments from any diffusers scheduler config (what this module samples with;
    e.g. for diffusers' own ``DDIMPipeline`` in the benchmark)."""
    from diffusers import DDIMScheduler

    return _config_for(DDIMScheduler, config, clip)


def check_steps(steps: float, config: Mapping[str, Any]) -> int:
    """``steps`` as an int, or a plain-sentence ValueError (1 to the config's training timesteps)."""
    total = int(config.get("num_train_timesteps", 1000))
    whole = isinstance(steps, int | float) and not isinstance(steps, bool) and float(steps) == int(steps)
    if not whole or not 1 <= int(steps) <= total:
        raise ValueError(f"The number of DDIM steps must be a whole number from 1 to {total}, not {steps!r}.")
    return int(steps)


def ddim_scheduler(config: Mapping[str, Any], steps: int, clip: bool = False, device: torch.device | str | None = None):
    """A ``DDIMScheduler`` for ``steps`` sampling steps, built from any diffusers scheduler config; ``clip`` clamps each
    predicted x0 to the config's ``clip_sample_range`` (for fresh samples only: it is not invertible)."""
    from diffusers import DDIMScheduler

    steps = check_steps(steps, config)
    sched = DDIMScheduler(**_config_for(DDIMScheduler, config, clip))
    sched.set_timesteps(steps, device=device)
    return sched


def ddim_inverse_scheduler(config: Mapping[str, Any], steps: int, device: torch.device | str | None = None):
    """A ``DDIMInverseScheduler`` whose timesteps are exactly the sampler's, in ascending order."""
    from diffusers import DDIMInverseScheduler

    steps = check_steps(steps, config)
    sched = DDIMInverseScheduler(**_config_for(DDIMInverseScheduler, config))
    sched.set_timesteps(steps, device=device)
    return sched


def noise_predictor(unet: torch.nn.Module) -> Eps:
    """``eps(x_t, t)`` of a ``UNet2DModel``; a learned-variance UNet predicts (eps, variance): the eps half."""
    channels = int(unet.config.in_channels)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x, t).sample[:, :channels]

    return eps


# On a generator, torch's decorator sets and restores grad mode around each step, so a paused stream leaves a worker
# thread's grad mode alone (`with torch.no_grad(): ... yield` would leave it off in whichever thread ran the step).
@torch.no_grad()
def sampling(eps: Eps, config: Mapping[str, Any], noise: torch.Tensor, steps: int, clip: bool = False) -> Stream:
    """DDIM sampling (eta = 0) as a stream of ``(step, steps, x_t)``; the last ``x`` is the image (not clamped).

    ``noise`` is x_T (N, C, H, W), or one noise per stage (N, S, C, H, W): the steps are split into S equal runs
    (coarse to fine) and at each run's first step its own noise replaces the previous one in x_t's noise part.
    ``clip``: clamp each predicted x0 (fresh samples); off to decode an inverted x_T (the mirror of :func:`inversion`).
    """
    sched = ddim_scheduler(config, steps, clip, noise.device)
    z = noise if noise.ndim == 5 else noise[:, None]
    n, stages = len(sched.timesteps), z.shape[1]
    bounds = [round(n * k / stages) for k in range(1, stages)]
    acp = sched.alphas_cumprod.to(noise.device)
    x, stage = z[:, 0], 0
    for i, t in enumerate(sched.timesteps):
        if i in bounds:  # a new stage: its own noise replaces the previous one's in x_t's noise part
            stage += 1
            x = x + (1 - acp[t]).sqrt() * (z[:, stage] - z[:, stage - 1])
        x = sched.step(eps(x, t), t, x, eta=0.0).prev_sample
        yield i + 1, n, x


@torch.no_grad()  # generator-aware, as for sampling
def inversion(eps: Eps, config: Mapping[str, Any], x0: torch.Tensor, steps: int, refine: int = 1) -> Stream:
    """DDIM inversion of clean images ``x0`` (N, C, H, W, the UNet's range) as a stream of ``(step, steps, x_t)``;
    the last ``x`` is the x_T that :func:`sampling` (same ``steps``, no clip) maps back to about ``x0``.

    ``DDIMInverseScheduler`` evaluates the noise at the less noisy x; the sampler will evaluate it at the noisier one.
    Each of ``refine`` corrections re-evaluates eps at the current guess of x_t and solves the sampler's step for x_t
    (a fixed point: the exact inverse when it converges), one UNet call each; this is what lifts the round trip's
    PSNR. ``refine = 0``: the plain ``DDIMInverseScheduler``.
    """
    inv = ddim_inverse_scheduler(config, steps, x0.device)
    n = len(inv.timesteps)
    acp = inv.alphas_cumprod.to(x0.device)
    stride = inv.config.num_train_timesteps // n
    x = x0
    for i, t in enumerate(inv.timesteps):
        x_lo = x
        x = inv.step(eps(x_lo, t), t, x_lo).prev_sample
        lo = int(t) - stride
        a_hi = acp[int(t)]
        a_lo = acp[lo] if lo >= 0 else torch.tensor(float(inv.initial_alpha_cumprod), device=x.device)
        for _ in range(refine):
            e = eps(x, t)
            x = a_hi.sqrt() * (x_lo - (1 - a_lo).sqrt() * e) / a_lo.sqrt() + (1 - a_hi).sqrt() * e
        yield i + 1, n, x


def drive(stream: Stream, steps: int, what: str, progress: Progress | None = None, cancel: Cancel | None = None) -> torch.Tensor:
    """Run a stream to its end: ``progress(i, n)`` after every step; ``cancel()`` asked before every step (True:
    :class:`Cancelled`, naming the step reached)."""
    x, done = None, 0
    while done < steps:
        if cancel is not None and cancel():
            stream.close()
            raise Cancelled(f"DDIM {what} stopped at step {done} of {steps}.")
        done, n, x = next(stream)
        if progress is not None:
            progress(done, n)
    stream.close()
    return x


def ddim_invert(unet: torch.nn.Module, scheduler_config: Mapping[str, Any], x0: torch.Tensor, steps: int,
                progress: Progress | None = None, cancel: Cancel | None = None, refine: int = 1) -> torch.Tensor:
    """Noise ``x_T`` that :func:`ddim_sample` with the same ``steps`` maps back to (about) ``x0`` (see :func:`inversion`)."""
    steps = check_steps(steps, scheduler_config)
    x0 = x0.to(next(unet.parameters()).dtype)
    return drive(inversion(noise_predictor(unet), scheduler_config, x0, steps, refine), steps, "inversion", progress, cancel)


def ddim_sample(unet: torch.nn.Module, scheduler_config: Mapping[str, Any], xT: torch.Tensor, steps: int,
                progress: Progress | None = None, cancel: Cancel | None = None, clip: bool = False) -> torch.Tensor:
    """Deterministic DDIM sampling from ``xT`` (see :func:`sampling`); the result is not clamped.

    Decode an inverted x_T with ``clip=False`` (the default: the exact mirror of :func:`ddim_invert`); sample fresh
    noise with ``clip=True``: on the built-in digits model the unclipped sampler leaves several samples in 64 as
    speckle, the clipped one none."""
    steps = check_steps(steps, scheduler_config)
    xT = xT.to(next(unet.parameters()).dtype)
    return drive(sampling(noise_predictor(unet), scheduler_config, xT, steps, clip), steps, "sampling", progress, cancel)
