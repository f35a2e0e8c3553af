"""Projection by optimisation: find the latent whose decoding matches a target image.

Works for any :class:`~core.model.LatentModel` (its ``decode`` is
differentiable). The loop is a generator that yields a
:class:`ProjectionEvent` after every step, so a UI can stream previews and
cancel between steps (stop iterating, or pass ``should_stop``).

The schedule follows the StyleGAN2 projector (Karras et al. 2020, appendix D):
Adam with a learning rate that ramps up over the first steps and down with a
cosine over the last ones, Gaussian noise added to the latent that decays to
zero (to escape poor local minima early), and, for models with per-layer noise
inputs, optimised noise maps kept white by a multi-scale autocorrelation
penalty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from core import losses
from core.images import psnr
from core.model import LatentModel

INITS = ("auto", "encoder", "mean", "bank")


@dataclass
class ProjectionConfig:
    space: str | None = None  # None: the model's default space
    steps: int = 200
    lr: float = 0.05
    init: str = "auto"  # encoder if the model has one, else mean
    bank_size: int = 64  # samples tried by init="bank"
    loss: str = "mse"
    lr_rampup: float = 0.05  # fraction of steps
    lr_rampdown: float = 0.25
    latent_noise: float = 0.0  # initial latent noise, as a fraction of the latents' spread
    latent_noise_ramp: float = 0.75  # fraction of steps over which it decays to 0
    optimize_noise: bool = False  # models with noise_buffers() only
    noise_regularize: float = 1e5
    betas: tuple[float, float] = (0.9, 0.999)
    preview_every: int = 10
    seed: int = 0
    extra: dict = field(default_factory=dict)


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


def noise_regularizer(noises: list[torch.Tensor]) -> torch.Tensor:
    """Penalise spatial autocorrelation of noise maps at every scale down to 8 px."""
    reg = torch.zeros(())
    for n in noises:
        n = n[None, None] if n.ndim == 2 else n
        reg = reg.to(n.device)
        while True:
            reg = reg + (n * torch.roll(n, 1, dims=3)).mean() ** 2 + (n * torch.roll(n, 1, dims=2)).mean() ** 2
            if n.shape[2] <= 8:
                break
            n = torch.nn.functional.avg_pool2d(n, 2)
    return reg


def initial_latent(model: LatentModel, target: torch.Tensor, space: str, cfg: ProjectionConfig) -> tuple[torch.Tensor, str]:
    """Starting latents (N, *shape) for N targets, and which init was used."""
    init = cfg.init
    if init not in INITS:
        raise ValueError(f"Unknown initialisation '{init}'; use one of {', '.join(INITS)}.")
    if init == "auto":
        init = "encoder" if model.has_encoder else "mean"
    n = target.shape[0]
    with torch.no_grad():
        if init == "encoder":
            return model.encode(target, space), init
        if init == "mean":
            return model.mean_latent(space).to(model.device).expand(n, *model.spaces[space].shape).clone(), init
        bank = model.sample(cfg.bank_size, seed=cfg.seed, space=space)
        loss_fn = losses.get_loss(cfg.loss, model.device)
        images = model.generate(bank, space).to(model.device)
        picks = [int(loss_fn(images, target[i : i + 1].expand_as(images)).argmin()) for i in range(n)]
        return bank[picks].clone(), init


def project(
    model: LatentModel,
    target: torch.Tensor,
    config: ProjectionConfig | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[ProjectionEvent]:
    """Optimise latents so ``model.decode`` matches ``target`` (N, C, H, W) in [-1, 1].

    Yields one event per step (with a preview every ``preview_every`` steps)
    and a final event with ``done=True`` holding the best latent found.
    """
    cfg = config or ProjectionConfig()
    if cfg.steps < 1:
        raise ValueError("Projection needs at least 1 step.")
    space = model.check_space(cfg.space)
    expected = (model.channels, model.image_size, model.image_size)
    if target.ndim == 3:
        target = target[None]
    if tuple(target.shape[1:]) != expected:
        raise ValueError(f"The target must have shape {expected} for {model.card.title}; got {tuple(target.shape[1:])}.")
    target = target.to(model.device, torch.float32)
    loss_fn = losses.get_loss(cfg.loss, model.device)
    torch.manual_seed(cfg.seed)

    start, init_used = initial_latent(model, target, space, cfg)
    latent = start.detach().clone().requires_grad_(True)
    params = [latent]
    noises: list[torch.Tensor] = []
    if cfg.optimize_noise and hasattr(model, "noise_buffers"):
        g = torch.Generator().manual_seed(cfg.seed)
        noises = [torch.randn(b.shape, generator=g).to(model.device).requires_grad_(True) for b in model.noise_buffers()]
        params += noises
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)

    spread = 0.0
    if cfg.latent_noise > 0:
        with torch.no_grad():
            s = model.sample(256, seed=cfg.seed + 1, space=space)
            spread = float((s - s.mean(0)).pow(2).sum() / len(s)) ** 0.5

    best = (math.inf, start.detach().clone(), None)
    history: list[tuple[int, float, float]] = []
    decode_kw = {"noise": noises} if noises else {}
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            break
        t = step / cfg.steps
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, t)
        z, exploring = latent, False
        if spread > 0:
            scale = spread * cfg.latent_noise * max(0.0, 1.0 - t / cfg.latent_noise_ramp) ** 2
            exploring = scale > 0
            z = latent + torch.randn_like(latent) * scale
        recon = model.decode(z, space, **decode_kw)
        per_image = loss_fn(recon, target)
        loss = per_image.sum()
        if noises:
            loss = loss + cfg.noise_regularize * noise_regularizer(noises)
        value = float(per_image.detach().mean())
        if not exploring and value < best[0]:  # the loss belongs to the latent before this step's update
            best = (value, latent.detach().clone(), [n.detach().clone() for n in noises])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if noises:
            with torch.no_grad():
                for n in noises:
                    n -= n.mean()
                    n *= n.square().mean().rsqrt()

        quality = float(psnr(recon.detach(), target).mean())
        history.append((step + 1, value, quality))
        show = cfg.preview_every > 0 and ((step + 1) % cfg.preview_every == 0 or step == 0)
        yield ProjectionEvent(
            step + 1, cfg.steps, value, quality, latent.detach().cpu(), space,
            recon.detach().cpu() if show else None, loss_name=cfg.loss, init=init_used,
        )

    # Final: the best latent seen, or the last one when every step was exploring;
    # the last update is also a candidate, so decode both and keep the better.
    candidates = [(latent.detach().clone(), [n.detach().clone() for n in noises])]
    if best[0] < math.inf:
        candidates.append((best[1], best[2]))
    with torch.no_grad():
        scored = []
        for lat, ns in candidates:
            r = model.decode(lat, space, **({"noise": ns} if ns else {}))
            scored.append((float(loss_fn(r, target).mean()), lat, r))
        value, best_latent, recon = min(scored, key=lambda c: c[0])
        quality = float(psnr(recon, target).mean())
    yield ProjectionEvent(len(history), cfg.steps, value, quality, best_latent.cpu(), space, recon.cpu(), done=True,
                          loss_name=cfg.loss, init=init_used)


def run_projection(model: LatentModel, target: torch.Tensor, config: ProjectionConfig | None = None,
                   callback: Callable[[ProjectionEvent], None] | None = None) -> ProjectionResult:
    """Run :func:`project` to the end (scripts, CLI, tests)."""
    history = []
    last = None
    for ev in project(model, target, config):
        if callback:
            callback(ev)
        if not ev.done:
            history.append((ev.step, ev.loss, ev.psnr))
        last = ev
    assert last is not None and last.preview is not None
    return ProjectionResult(last.latent, last.space, last.preview, last.psnr, last.loss, last.step, history, last.loss_name, last.init)
