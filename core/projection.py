"""Projection by optimisation: find the latent whose decoding matches a target image.

Works for any :class:`~core.model.LatentModel` (its ``decode`` is
differentiable). The loop is a generator that yields a
:class:`ProjectionEvent` after every step, so a UI can stream previews and
cancel between steps (stop iterating, or pass ``should_stop``).

The defaults follow the StyleGAN2 projector (Karras et al. 2020, appendix D):
Adam with a learning rate that ramps up over the first steps and down with a
cosine over the last ones, optional Gaussian noise added to the latent that
decays to zero (to escape poor local minima early), and, for models with
per-layer noise inputs, optional noise maps kept white by a multi-scale
autocorrelation penalty. Backends tune these through
``LatentModel.projection_defaults(space)``.

Several targets (N, C, H, W) are independent projections run as one batch:
the loss is a sum over images, Adam works per coordinate, every target has
its own noise maps and regulariser, and the best latent is kept per image.
Only the random draws differ from running them one by one.

This module is the loop's three stages (``_set_up`` / ``_step`` / ``_final_event``, sharing the private ``_Run``
state); its settings and events are in ``core.projection_config``, the starts and penalty terms in
``core.projection_priors`` (both re-exported here, where callers have always found them).

Nothing here changes the model: noise maps are our own tensors passed to
``decode(..., noise=[...])``, so concurrent projections on one shared model
are safe.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from core import losses
from core.images import psnr
from core.model import LatentModel
from core.projection_config import INITS, ProjectionConfig, ProjectionEvent, ProjectionResult, learning_rate
from core.projection_priors import (
    initial_latent,
    latent_gaussian,
    latent_stats,
    layer_spread,
    noise_regularizer,
    on_manifold_penalty,
    pixel_weights,
)

if TYPE_CHECKING:  # to_latent only calls the executor it is given; core.executor imports this module
    from core.executor import Executor

__all__ = ["INITS", "ProjectionConfig", "ProjectionEvent", "ProjectionResult", "initial_latent", "latent_gaussian",
           "latent_stats", "layer_spread", "learning_rate", "noise_regularizer", "on_manifold_penalty", "project",
           "run_projection", "to_latent"]


@dataclass
class _Run:
    """The state of one projection between steps (see :func:`project`)."""

    model: LatentModel
    target: torch.Tensor
    cfg: ProjectionConfig
    space: str
    loss_fn: Callable
    gen: torch.Generator
    init: str
    start: torch.Tensor
    latent: torch.Tensor
    noises: list[torch.Tensor]
    opt: torch.optim.Optimizer
    spread: float  # latent-noise scale (0: none)
    spread_weight: float  # W+ layer-spread penalty weight (0: none)
    setup_seconds: float
    decode_kw: dict
    pixel_w: torch.Tensor | None = None  # (N or 1, 1, H, W) weights of the pixels that count (None: all)
    manifold: Callable[[torch.Tensor], torch.Tensor] | None = None  # per-image on-manifold penalty (None: off)
    best_loss: torch.Tensor = field(init=False)
    best_latent: torch.Tensor = field(init=False)
    best_noise: list[torch.Tensor] = field(init=False)
    history: list[tuple[int, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.best_loss = torch.full((self.target.shape[0],), math.inf)
        self.best_latent = self.start.detach().clone()
        self.best_noise = [n.detach().clone() for n in self.noises]


def _checked_target(model: LatentModel, target: torch.Tensor) -> torch.Tensor:
    expected = (model.channels, *model.image_shape)
    if target.ndim == 3:
        target = target[None]
    if tuple(target.shape[1:]) != expected:
        raise ValueError(f"The target must have shape {expected} for {model.card.title}; got {tuple(target.shape[1:])}.")
    if not torch.isfinite(target).all():
        raise ValueError("The target image contains NaN or infinite values.")
    return target.to(model.device, torch.float32)


def _set_up(model: LatentModel, target: torch.Tensor, cfg: ProjectionConfig, weights: torch.Tensor | None = None) -> _Run:
    """Checks, the start latent, the optimiser, noise maps and the scales of noise and penalties."""
    if cfg.steps < 1:
        raise ValueError("Projection needs at least 1 step.")
    space = model.check_space(cfg.space)
    target = _checked_target(model, target)
    pixel_w = pixel_weights(weights, target)
    raw_loss = losses.get_loss(cfg.loss, model.device)
    # Both images blended onto one fixed grey (0) where w = 0, not onto the target: a perceptual loss's windows that
    # straddle the face's edge never see the photo's background, and the decoder's pixels there get no gradient.
    scored_target = target if pixel_w is None else pixel_w * target
    loss_fn = raw_loss if pixel_w is None else (lambda x, _t: raw_loss(pixel_w * x, scored_target))
    gen = torch.Generator().manual_seed(cfg.seed)
    t_setup = time.perf_counter()
    # One set of samples gives the start (init="samples"), the latent-noise scale and the W+ penalty scale,
    # as NVIDIA's projector takes w_avg and w_std from the same 10,000 samples; drawn only if something needs it.
    stats = functools.cache(lambda: latent_stats(model, space, cfg.stats_samples, cfg.seed))
    start, init_used = initial_latent(model, target, space, cfg, stats, weights=pixel_w)
    latent = start.detach().clone().requires_grad_(True)
    noises: list[torch.Tensor] = []
    if cfg.optimize_noise:
        shapes = [tuple(s) for s in model.noise_shapes()]
        noises = [torch.randn(len(target), 1, *s, generator=gen).to(model.device).requires_grad_(True) for s in shapes]
    opt = torch.optim.Adam([latent, *noises], lr=cfg.lr, betas=cfg.betas)
    spread = stats()[1] if cfg.latent_noise > 0 else 0.0
    spread_weight = 0.0
    layers = model.spaces[space].num_layers
    if cfg.layer_spread_penalty > 0 and layers > 0:
        _, w_spread = stats()
        spread_weight = cfg.layer_spread_penalty / max(w_spread**2 / layers, 1e-12)  # w_spread² / L: one w's spread²
    manifold = on_manifold_penalty(model, target, space, cfg, stats, start if init_used == "encoder" else None)
    decode_kw: dict = {"noise": noises} if noises else ({"noise_mode": cfg.noise_mode} if cfg.noise_mode else {})
    return _Run(model, target, cfg, space, loss_fn, gen, init_used, start, latent, noises, opt, spread, spread_weight,
                time.perf_counter() - t_setup, decode_kw, pixel_w, manifold)


def _step(run: _Run, step: int) -> ProjectionEvent:
    """One Adam step; the event carries the loss of the latent before this step's update."""
    cfg, latent, noises = run.cfg, run.latent, run.noises
    t = step / cfg.steps
    for group in run.opt.param_groups:
        group["lr"] = learning_rate(cfg, t)
    z, exploring = latent, False
    if run.spread > 0:
        scale = run.spread * cfg.latent_noise * max(0.0, 1.0 - t / cfg.latent_noise_ramp) ** 2
        exploring = scale > 0
        if exploring:
            z = latent + torch.randn(latent.shape, generator=run.gen).to(latent.device) * scale
    recon = run.model.decode(z, run.space, **run.decode_kw)
    per_image = run.loss_fn(recon, run.target)
    loss = per_image.sum()
    penalty = run.manifold(latent) if run.manifold is not None else None
    if penalty is not None:
        loss = loss + penalty.sum()
    if noises:
        loss = loss + cfg.noise_regularize * noise_regularizer(noises)
    if run.spread_weight > 0:
        loss = loss + run.spread_weight * layer_spread(latent).sum()
    values = per_image.detach().cpu()
    objective = values if penalty is None else values + penalty.detach().cpu()
    if not exploring:  # the loss belongs to the latent before this step's update
        better = objective < run.best_loss
        if better.any():
            run.best_loss = torch.where(better, objective, run.best_loss)
            idx = better.nonzero().flatten().to(latent.device)
            run.best_latent[idx] = latent.detach()[idx]
            for b, n in zip(run.best_noise, noises, strict=True):
                b[idx] = n.detach()[idx]
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    if noises:
        with torch.no_grad():
            for n in noises:
                n -= n.mean(dim=(1, 2, 3), keepdim=True)
                n *= n.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
    value = float(values.mean())
    quality = float(psnr(recon.detach(), run.target, run.pixel_w).mean())
    run.history.append((step + 1, value, quality))
    show = cfg.preview_every > 0 and ((step + 1) % cfg.preview_every == 0 or step == 0)
    return ProjectionEvent(
        step + 1, cfg.steps, value, quality, latent.detach().cpu(), run.space,
        recon.detach().cpu() if show else None, loss_name=cfg.loss, init=run.init,
        setup_seconds=run.setup_seconds if step == 0 else 0.0,
        noise=[n.detach().cpu() for n in noises] if (show and noises) else None,
    )  # fmt: skip


@torch.no_grad()
def _final_event(run: _Run, stopped: bool = False) -> ProjectionEvent:
    """Per image, the better of the best latent seen and the last update (never scored yet)."""
    model, latent, noises, space = run.model, run.latent, run.noises, run.space
    last = model.decode(latent, space, **run.decode_kw)
    last_loss = run.loss_fn(last, run.target).cpu()
    last_obj = last_loss if run.manifold is None else last_loss + run.manifold(latent).cpu()
    final_latent, recon, final_loss = latent.detach().clone(), last, last_loss
    final_noise = [n.detach().clone() for n in noises]
    if torch.isfinite(run.best_loss).any():
        best_kw = {"noise": run.best_noise} if noises else run.decode_kw
        best = model.decode(run.best_latent, space, **best_kw)
        best_scored = run.loss_fn(best, run.target).cpu()
        best_obj = best_scored if run.manifold is None else best_scored + run.manifold(run.best_latent).cpu()
        use_best = best_obj < last_obj
        if use_best.any():
            sel = use_best.to(latent.device)
            final_latent = torch.where(sel.reshape(-1, *[1] * (latent.ndim - 1)), run.best_latent, final_latent)
            recon = torch.where(sel.reshape(-1, 1, 1, 1), best, last)
            final_loss = torch.where(use_best, best_scored, last_loss)
            final_noise = [torch.where(sel.reshape(-1, 1, 1, 1), b, n) for b, n in zip(run.best_noise, final_noise, strict=True)]
    quality = float(psnr(recon, run.target, run.pixel_w).mean())
    return ProjectionEvent(len(run.history), run.cfg.steps, float(final_loss.mean()), quality, final_latent.cpu(), space, recon.cpu(),
                           done=True, loss_name=run.cfg.loss, init=run.init,
                           setup_seconds=run.setup_seconds if not run.history else 0.0,
                           noise=[n.cpu() for n in final_noise] if noises else None, stopped=stopped)


@torch.enable_grad()  # generator-aware: each step runs with grad on, whatever the calling thread last left
def project(
    model: LatentModel,
    target: torch.Tensor,
    config: ProjectionConfig | None = None,
    should_stop: Callable[[], bool] | None = None,
    weights: torch.Tensor | None = None,
) -> Iterator[ProjectionEvent]:
    """Optimise latents so ``model.decode`` matches ``target`` (N, C, H, W) in [-1, 1].

    Yields one event per step (with a preview every ``preview_every`` steps)
    and a final event with ``done=True`` holding the best latent found per image;
    when ``should_stop`` says so it ends early, and the final event has ``stopped=True``
    and the best latent found so far. A model with ``iterative_inversion`` (DDIM) streams
    its own inversion steps instead, as the same events (pixel weights do not apply there).

    ``weights`` (H, W) or (N or 1, 1, H, W) in [0, 1], e.g. ``AlignedFace.mask(size)``, say which pixels
    count: the loss compares ``w * recon`` with ``w * target`` (both on the same grey where w = 0), so every
    registered loss (MSE, MS-SSIM + L1, LPIPS) sees only the weighted region, the target's background has no
    effect on the loss or its gradient, and the PSNR reported is the one inside the region.
    """
    if model.iterative_inversion:  # e.g. DDIM inversion: the backend's own steps, streamed the same way
        cfg = config or ProjectionConfig()
        if cfg.steps < 1:
            raise ValueError("Inversion needs at least 1 step.")
        yield from model.inversion_events(_checked_target(model, target), cfg, should_stop)
        return
    run = _set_up(model, target, config or ProjectionConfig(), weights)
    for step in range(run.cfg.steps):
        if should_stop is not None and should_stop():
            yield _final_event(run, stopped=True)
            return
        yield _step(run, step)
    yield _final_event(run)


def to_latent(model: LatentModel, target: torch.Tensor, space: str | None = None,
              on_event: Callable[[ProjectionEvent], None] | None = None, executor: Executor | None = None,
              **overrides) -> torch.Tensor:
    """Latents (N, *shape) of target images: the encoder's answer when the model has one, else a projection.

    ``overrides`` are ProjectionConfig fields (steps, loss...) for models without an encoder; ``on_event``
    sees every projection step (progress bars); ``executor`` runs the work (``core.executor``; default: here).
    """
    space = model.check_space(space)
    if model.has_encoder:
        if executor is not None:
            return executor.encode(model, target, space)
        with torch.no_grad():
            return model.encode(target.to(model.device), space).detach().cpu()
    cfg = ProjectionConfig.for_model(model, space, **{"preview_every": 0, **overrides})
    final = None
    events = project(model, target, cfg) if executor is None else executor.project(model, target, cfg)
    for ev in events:
        if on_event is not None:
            on_event(ev)
        final = ev
    return final.latent


def run_projection(model: LatentModel, target: torch.Tensor, config: ProjectionConfig | None = None,
                   callback: Callable[[ProjectionEvent], None] | None = None,
                   weights: torch.Tensor | None = None) -> ProjectionResult:
    """Run :func:`project` to the end (scripts, CLI, tests)."""
    history = []
    last = None
    for ev in project(model, target, config, weights=weights):
        if callback:
            callback(ev)
        if not ev.done:
            history.append((ev.step, ev.loss, ev.psnr))
        last = ev
    assert last is not None and last.preview is not None
    return ProjectionResult(last.latent, last.space, last.preview, last.psnr, last.loss, last.step, history, last.loss_name, last.init)
