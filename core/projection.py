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

One file (~530 lines) on purpose: the config, the loop's three stages (``_set_up`` / ``_step`` /
``_finish``, sharing the private ``_Run`` state), the initialisations and the loss terms (pixel weights,
on-manifold penalty) belong together.

Nothing here changes the model: noise maps are our own tensors passed to
``decode(..., noise=[...])``, so concurrent projections on one shared model
are safe.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch

from core import losses
from core.images import psnr
from core.model import LatentModel

if TYPE_CHECKING:
    from core.executor import Executor

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
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or float(steps) != int(steps):
            raise ValueError(f"The number of steps must be a whole number; got {steps}.")
        self.steps = int(steps)


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


def noise_regularizer(noises: list[torch.Tensor], per_image: bool = False) -> torch.Tensor:
    """Penalise spatial autocorrelation of noise maps at every scale down to 8 px.

    Maps are (H, W) or (N, 1, H, W); with ``per_image`` the result has one value per image, else their sum.
    """
    reg = torch.zeros(())
    for n in noises:
        n = n[None, None] if n.ndim == 2 else n
        reg = reg.to(n.device)
        while True:
            reg = reg + (n * torch.roll(n, 1, dims=3)).mean(dim=(1, 2, 3)) ** 2 + (n * torch.roll(n, 1, dims=2)).mean(dim=(1, 2, 3)) ** 2
            if n.shape[2] <= 8:
                break
            n = torch.nn.functional.avg_pool2d(n, 2)
    return reg if per_image else reg.sum()


def latent_stats(model: LatentModel, space: str, n: int, seed: int, chunk: int = 1000) -> tuple[torch.Tensor, float]:
    """Mean (1, *shape) and spread sqrt(E||x - mean||²) of ``n`` sampled latents, in chunks (W+ samples are large).

    Chunks hold at most ``SAMPLE_BUDGET`` numbers, and a large latent (``LatentSpace.large``) uses no more
    samples than ``sample_budget`` allows: memory stays bounded for a 196,608-d noise latent.
    """
    from core.model import sample_budget

    if n < 2:
        raise ValueError("Latent statistics need at least 2 samples.")
    sp = model.spaces[space]
    if sp.large:
        n = max(2, min(n, sample_budget(sp)))
    chunk = max(1, min(chunk, sample_budget(sp, chunk)))
    total = total_sq = 0.0
    with torch.no_grad():
        for i in range(0, n, chunk):
            s = model.sample(min(chunk, n - i), seed=seed * 100003 + i, space=space).double()
            total, total_sq = total + s.sum(0), total_sq + s.square().sum(0)
        mean = total / n
        spread = float((total_sq / n - mean.square()).sum().clamp_min(0).sqrt())
    return mean.float().unsqueeze(0), spread


def layer_spread(latent: torch.Tensor) -> torch.Tensor:
    """Per image, mean over layers of ||x_i - mean_i x||² for per-layer latents (N, L, D): 0 for a broadcast W latent.

    W+ lets every layer take its own w, which fits anything, including what the model never
    generates; such latents reconstruct well but interpolate and edit badly. Penalising this
    spread (in units of the W distribution's spread) keeps layers together unless the image
    needs them apart; for a target that a single w reproduces, the optimum is unchanged.
    """
    return (latent - latent.mean(dim=1, keepdim=True)).square().sum(dim=2).mean(dim=1)


def initial_latent(
    model: LatentModel, target: torch.Tensor, space: str, cfg: ProjectionConfig,
    stats: Callable[[], tuple[torch.Tensor, float]] | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, str]:
    """Starting latents (N, *shape) for N targets, and which init was used.

    ``stats`` returns the (mean, spread) of :func:`latent_stats` for ``init="samples"``; ``project``
    passes its own so the samples are drawn once for the start and the noise / penalty scales.
    """
    init = cfg.init
    if init not in INITS:
        raise ValueError(f"Unknown initialisation '{init}'; use one of {', '.join(INITS)}.")
    if init == "auto":
        init = "encoder" if model.has_encoder else cfg.auto_init
        if init not in INITS or init == "auto":
            raise ValueError(f"Unknown initialisation '{init}' (auto_init); use one of {', '.join(INITS[1:])}.")
        if init == "encoder" and not model.has_encoder:
            init = "mean"
    n = target.shape[0]
    shape = model.spaces[space].shape
    with torch.no_grad():
        if init == "encoder":
            return model.encode(target, space), init
        if init == "mean":
            return model.mean_latent(space).to(model.device).expand(n, *shape).clone(), init
        if init == "samples":
            mean, _ = stats() if stats is not None else latent_stats(model, space, cfg.stats_samples, cfg.seed)
            return mean.to(model.device).expand(n, *shape).clone(), init
        bank = model.sample(cfg.bank_size, seed=cfg.seed, space=space)
        loss_fn = losses.get_loss(cfg.loss, model.device)
        decode_kw = {"noise_mode": cfg.noise_mode} if cfg.noise_mode else {}
        scores = torch.empty(n, len(bank))
        # One target object per image, broadcast by the loss: a perceptual loss computes (and caches) its features once.
        w = [None if weights is None else weights[min(j, len(weights) - 1)][None] for j in range(n)]
        targets = [target[j : j + 1] if w[j] is None else w[j] * target[j : j + 1] for j in range(n)]
        for i in range(0, len(bank), cfg.bank_chunk):
            images = model.generate(bank[i : i + cfg.bank_chunk], space, batch_size=cfg.bank_chunk, **decode_kw).to(model.device)
            for j in range(n):
                scores[j, i : i + len(images)] = loss_fn(images if w[j] is None else w[j] * images, targets[j]).cpu()
        return bank[scores.argmin(1).to(bank.device)].clone(), init


def latent_gaussian(model: LatentModel, space: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (1, D) and whitening matrix (D, D) of a Gaussian fitted to ``n`` samples (flattened latents).

    ``||(z - mean) @ whiten||²`` is the squared Mahalanobis distance: about D for a typical sample, large for a
    latent the model never produces. A small ridge keeps it defined when n is below D.
    """
    with torch.no_grad():
        s = model.sample(max(n, 2), seed=seed, space=space).flatten(1).double().cpu()
        mean = s.mean(0, keepdim=True)
        cov = torch.cov(s.T).reshape(s.shape[1], s.shape[1])
        cov = cov + 1e-4 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(cov.shape[0], dtype=cov.dtype)
        whiten = torch.linalg.inv(torch.linalg.cholesky(cov)).T  # (z - m) @ L^-T: whitened coordinates
    return mean.float().to(model.device), whiten.float().to(model.device)


def on_manifold_penalty(
    model: LatentModel, target: torch.Tensor, space: str, cfg: ProjectionConfig,
    stats: Callable[[], tuple[torch.Tensor, float]], encoded: torch.Tensor | None = None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Per-image penalty (N,) on latents that leave the model's data, or None when ``cfg`` asks for none.

    A small model fits an unusual photo (studio light, a busy background) with a latent far from its
    training codes, which decodes to blotches. ``prior_weight`` charges the squared Mahalanobis distance per
    dimension under a Gaussian fitted to the model's samples (~1 for a typical code); ``encoder_anchor``
    charges the squared distance from the encoder's answer for the target, in units of the codes' spread².
    """
    terms: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if cfg.prior_weight > 0:
        mean, whiten = latent_gaussian(model, space, cfg.stats_samples, cfg.seed)
        per_dim = cfg.prior_weight / mean.shape[1]
        terms.append(lambda z: per_dim * ((z.flatten(1) - mean) @ whiten).square().sum(1))
    if cfg.encoder_anchor > 0:
        if not model.has_encoder:
            raise ValueError(f"{model.card.title} has no encoder, so the projection cannot be anchored to its answer.")
        with torch.no_grad():
            anchor = (encoded if encoded is not None else model.encode(target, space)).detach()
        _, spread = stats()
        scale = cfg.encoder_anchor / max(spread**2, 1e-12)
        terms.append(lambda z: scale * (z - anchor).flatten(1).square().sum(1))
    if not terms:
        return None
    return lambda z: sum(term(z) for term in terms)


def _pixel_weights(weights: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor | None:
    """Check per-target pixel weights (H, W) or (N or 1, 1, H, W) against the target; None means every pixel counts."""
    if weights is None:
        return None
    w = torch.as_tensor(weights).float()
    w = w[None, None] if w.ndim == 2 else w
    n = target.shape[0]
    if w.ndim != 4 or w.shape[1] != 1 or w.shape[0] not in (1, n) or tuple(w.shape[2:]) != tuple(target.shape[2:]):
        raise ValueError(f"Pixel weights must be (H, W) or (N or 1, 1, H, W) matching the target {tuple(target.shape)}; "
                         f"got {tuple(w.shape)}.")
    if not torch.isfinite(w).all() or (w < 0).any() or (w > 1).any():
        raise ValueError("Pixel weights must be numbers between 0 and 1.")
    if (w.flatten(1).sum(1) <= 0).any():
        raise ValueError("The pixel weights are zero everywhere for a target, so there is nothing to fit.")
    return w.to(target.device)


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
    pixel_w = _pixel_weights(weights, target)
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
def _finish(run: _Run, stopped: bool = False) -> ProjectionEvent:
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
            yield _finish(run, stopped=True)
            return
        yield _step(run, step)
    yield _finish(run)


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
