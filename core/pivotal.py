"""Pivotal tuning: after projection, tune a copy of the decoder so it draws *these* faces at their latents.

A small or general model cannot draw a stranger: the best latent still decodes to a lookalike (identity
distance ~0.7 for the built-in faces model, where 0.6 separates "same person" from "someone else"). Pivotal
Tuning Inversion (Roich, Mokady, Bermano & Cohen-Or 2022) keeps the latent found by projection as a pivot and
then fine-tunes the generator's weights for a few steps so that the pivot reproduces the photo, with a
locality term that keeps the generator's other outputs where they were, so blends and edits around the pivot
still behave. Here the loss is the projection's (same losses, same face weights), and locality compares the
tuned and the original decoder on fresh samples from the model's prior.

The tuned model is a private copy, held in memory by whoever asked for it (a Family session), never written to
disk and never shared; its card says it was tuned, so nobody mistakes its pictures for the base model's.

This is the engine; ``core.photo_to_latent`` runs it after a projection with each model's defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from core import losses
from core.images import psnr
from core.inheritance import random_mixtures, trait_basis
from core.model import LatentModel


@dataclass
class TuningConfig:
    steps: int = 100
    lr: float = 3e-4  # Adam on the decoder's weights (PTI: 3e-4)
    loss: str = "mse"
    locality: float = 1.0  # weight of ||G_tuned(z) - G(z)||² on prior samples (PTI's locality regulariser)
    locality_samples: int = 4  # fresh prior samples per step
    # Weight of the path term when there are two pivots (a Family's parents): random children of the two (see
    # tune_decoder) are pulled towards what the base decoder draws there plus the blend of what tuning adds at each
    # pivot, so children stay one clean face instead of whatever the tuned weights make of the space around them.
    path: float = 0.0
    path_samples: int = 4
    seed: int = 0


@dataclass
class TuningEvent:
    step: int
    steps: int
    loss: float
    psnr: float  # of the pivots' reconstructions (inside the weights, if given)
    model: LatentModel | None = None  # the tuned copy, on the final event
    preview: torch.Tensor | None = None  # what the copy draws at the pivots (CPU), on the final event
    done: bool = False
    stage: str = "tuning"


def tuned_copy(model: LatentModel) -> LatentModel:
    """A private copy of ``model`` whose card says it was tuned (its outputs are then never taken for the base model's)."""
    tuned = copy.deepcopy(model)
    tuned.card = dataclasses.replace(model.card, name=f"{model.card.name}+tuned",
                                     title=f"{model.card.title}, tuned to these photos")
    return tuned


@torch.enable_grad()  # generator-aware, as core.projection.project
def tune_decoder(model: LatentModel, latents: torch.Tensor, targets: torch.Tensor, space: str,
                 weights: torch.Tensor | None = None, config: TuningConfig | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[TuningEvent]:
    """Tune a copy of ``model`` so ``decode(latents)`` matches ``targets`` (N, C, H, W); the last event holds the copy.

    ``latents`` are the pivots (N, *shape) in ``space``; ``weights`` (N or 1, 1, H, W) the pixels that count, as in
    ``core.projection.project``. ``model`` itself is never changed. Stopping early still returns the copy as it is.
    """
    cfg = config or TuningConfig()
    if cfg.steps < 0:
        raise ValueError("The number of tuning steps cannot be negative.")
    space = model.check_space(space)
    tuned = tuned_copy(model)
    device = tuned.device
    pivots = tuned.check_latents(latents.detach(), space)
    targets = targets.to(device, torch.float32)
    w = None if weights is None else torch.as_tensor(weights).to(device, torch.float32)
    loss_fn = losses.get_loss(cfg.loss, device)
    scored = targets if w is None else w * targets
    params = [p for m in tuned.modules() for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    recon, done = None, 0
    fixes = _corrections(model, pivots, targets, w, space) if cfg.path > 0 and cfg.path_samples > 0 and len(pivots) == 2 else None
    basis = trait_basis(model, space) if fixes is not None else None
    local = cfg.locality_samples if cfg.locality > 0 else 0
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            break
        done = step + 1
        # Every latent of the step is drawn by the tuned decoder in one batch (pivots, locality samples, path
        # children) and the extra ones by the base decoder in another: fewer, larger calls than one per term.
        extra = [model.sample(local, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)), space=space)] if local else []
        if fixes is not None:
            children, share = random_mixtures(basis, pivots, cfg.path_samples, gen)
            extra.append(children)
        drawn = tuned.decode(torch.cat([pivots, *extra]), space)
        recon = drawn[: len(pivots)]
        loss = loss_fn(recon if w is None else w * recon, scored).sum()
        if extra:
            with torch.no_grad():
                base = model.decode(torch.cat(extra), space)
            rest = drawn[len(pivots):]
            if local:
                loss = loss + cfg.locality * (rest[:local] - base[:local]).pow(2).flatten(1).mean(1).sum()
            if fixes is not None:
                # The path term: random children of the two pivots (core.inheritance: random gene weights, trait
                # draws and mutations, i.e. where Family's children and Interpolation's frames land, not only the
                # straight line) are pulled towards the base drawing plus the pivots' corrections blended by each
                # child's share of the mother.
                goal = base[local:] + torch.lerp(fixes[:1], fixes[1:2], share.to(fixes).reshape(-1, 1, 1, 1))
                loss = loss + cfg.path * (rest[local:] - goal).pow(2).flatten(1).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield TuningEvent(step + 1, cfg.steps, float(loss.detach()), float(psnr(recon.detach(), targets, w).mean()))
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    with torch.no_grad():
        final = tuned.decode(pivots, space)
    yield TuningEvent(done, cfg.steps, 0.0, float(psnr(final, targets, w).mean()), tuned, final.cpu(),  # step < steps: stopped
                      done=True)


@torch.no_grad()
def _corrections(model: LatentModel, pivots: torch.Tensor, targets: torch.Tensor, w: torch.Tensor | None,
                 space: str) -> torch.Tensor:
    """What each pivot's drawing needs to become its target (target - base drawing), inside the face weights."""
    fix = targets - model.decode(pivots, space)
    return fix if w is None else fix * w.expand(len(fix), *w.shape[1:])
