"""Where a projection starts and what keeps it on the model's data: latent statistics, the initialisations, the
penalty terms (noise maps, W+ layer spread, on-manifold) and the pixel weights (face masks)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from core import losses
from core.model import LatentModel, sample_budget
from core.projection_config import INITS, ProjectionConfig


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
        if hasattr(model, "bank_start"):  # a backend's own (cached) bank: plugins.stylegan.start
            return model.bank_start(target, space, cfg, weights), init
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


def pixel_weights(weights: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor | None:
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

