"""How a child inherits traits from two parents' latents: each trait from one parent or the other, not a cross-fade.

A lerp between two parents' latents gives every child the same point (siblings are one face) and drifts with
whichever parent dominates the latent's largest axes. Here, as in StyleGene's idea of facial genes, a child
inherits *traits*: the principal axes of the model's own latents (PCA of its samples), whitened so each axis is
one independent trait with unit spread in the model's population. In a per-layer space (StyleGAN's W+) each layer
group carries its own copy of every axis, so coarse shape can come from one parent and fine colour from the other.

For each child, every trait is drawn from the mother with probability ``gene`` (else from the father); among many
such draws the first whose share of the parents' difference (in the latent's own units) is close to ``gene`` is kept, so
each child takes as much from each parent as the gene setting says while siblings inherit different mixes. A
"mutation" of ``variation`` population standard deviations per trait is added on top. The part of a latent outside
the traits' span (when the basis has fewer axes than the latent has numbers) is blended with ``gene``.

Everything is drawn from ``seed`` and the child's index, so a seed repeats a family exactly and asking for more
children keeps the first ones.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from core.model import LatentModel, sample_budget

CANDIDATES = 256  # inheritance draws per child
TOLERANCE = 0.08  # the first draw whose mother's share is this close to the gene weight is kept (else the closest)
MAX_AXES = 512  # traits per layer group at most (a diffusion model's latent has thousands of numbers)
VARIANCE_KEPT = 0.9  # traits are the leading axes that explain this share of the population's variance
_BASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {space: TraitBasis}


@dataclass(frozen=True)
class TraitBasis:
    """Whitened principal axes of a model's latents in one space.

    ``mean`` (D,), ``axes`` (D, K) orthonormal columns, ``scale`` (K,) the population's spread along each;
    ``groups``: the layer indices of each layer group ([[0]] for a space without layers).
    """

    mean: torch.Tensor
    axes: torch.Tensor
    scale: torch.Tensor
    groups: tuple[tuple[int, ...], ...]
    shape: tuple[int, ...]  # one latent's shape in the space

    @property
    def layers(self) -> int:
        return sum(len(g) for g in self.groups)

    def split(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (N, *shape) -> trait coordinates (N, layers, K) and the rest outside the traits (N, layers, D)."""
        x = latents.reshape(len(latents), self.layers, -1).to(self.mean) - self.mean
        coords = (x @ self.axes) / self.scale
        return coords, x - (coords * self.scale) @ self.axes.T

    def join(self, coords: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`split`."""
        x = (coords * self.scale) @ self.axes.T + rest + self.mean
        return x.reshape(len(x), *self.shape)

    def by_layer(self, per_group: torch.Tensor) -> torch.Tensor:
        """(..., groups, K) -> (..., layers, K): every layer gets its group's row."""
        index = torch.tensor([g for g, layers in enumerate(self.groups) for _ in layers], device=per_group.device)
        order = torch.tensor([i for layers in self.groups for i in layers], device=per_group.device)
        rows = per_group.index_select(-2, index)
        return rows.index_select(-2, torch.argsort(order))


@torch.no_grad()
def trait_basis(model: LatentModel, space: str) -> TraitBasis:
    """The model's traits in ``space``, from its own samples (computed once per model and space)."""
    space = model.check_space(space)
    cached = _BASES.setdefault(model, {})
    if space in cached:
        return cached[space]
    sp = model.spaces[space]
    groups = tuple(tuple(v) for v in model.layer_groups(space).values()) if sp.per_layer else ((0,),)
    samples = model.sample(max(256, sample_budget(sp, 2000)), seed=1234, space=space).float().cpu()
    flat = samples[:, 0] if sp.per_layer else samples.reshape(len(samples), -1)  # layers of a sample are equal
    mean = flat.mean(0)
    _, s, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    scale = s / max(1.0, (len(flat) - 1) ** 0.5)
    explained = (scale**2).cumsum(0) / (scale**2).sum().clamp_min(1e-12)
    keep = (explained - scale**2 / (scale**2).sum().clamp_min(1e-12)) < VARIANCE_KEPT  # up to the axis that crosses it
    keep &= scale > scale[0] * 1e-4
    keep[MAX_AXES:] = False
    basis = TraitBasis(mean, vh[keep].T.contiguous(), scale[keep].clamp_min(1e-8), groups, tuple(sp.shape))
    cached[space] = basis
    return basis


def _generator(seed: int, child: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + child * 7919) % (2**63 - 1))


def inheritance_masks(energy: torch.Tensor, gene: torch.Tensor, fixed: torch.Tensor, gen: torch.Generator,
                      candidates: int = CANDIDATES) -> torch.Tensor:
    """One child's mask (groups, K): 1 where a trait comes from the mother.

    ``energy`` (groups, K): how much the parents differ along each trait; ``gene`` (groups, 1): the mother's share per
    group; ``fixed`` (groups, 1): -1 for groups drawn at random, 0 / 1 for groups given to the father / mother.
    Draws ``candidates`` masks and keeps the first whose mother's share of the free traits' energy is within
    :data:`TOLERANCE` of the free groups' gene weight (the closest if none is): the first, not the closest, so that
    siblings still differ when the model has few traits.
    """
    draws = (torch.rand(candidates, *energy.shape, generator=gen) < gene).float()
    free = (fixed < 0).expand_as(energy)
    draws = torch.where(free, draws, fixed.expand_as(energy).clamp_min(0))
    total = (energy * free).sum()
    if total <= 0:
        return draws[0]
    share = (draws * energy * free).sum((1, 2)) / total
    target = (gene * energy * free).sum() / total
    miss = (share - target).abs()
    near = torch.nonzero(miss <= TOLERANCE)
    return draws[int(near[0, 0]) if len(near) else int(torch.argmin(miss))]


@torch.no_grad()
def inherit(basis: TraitBasis, father: torch.Tensor, mother: torch.Tensor, gene: torch.Tensor, fixed: torch.Tensor,
            n: int, seed: int, variation: float = 0.0,
            shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` children (n, *shape) of two latents (1, *shape), and each child's mother share (n,) of the difference.

    ``gene`` (groups, 1) is the mother's share per layer group, ``fixed`` (groups, 1) as in :func:`inheritance_masks`;
    ``variation`` the mutation in population standard deviations per trait. ``shift`` (n,) evens out a child's
    resemblance without changing which traits it inherited: t > 0 moves the traits it took from the father a share t
    of the way towards the mother's (t < 0: the mother's towards the father's), so no trait ever goes beyond either
    parent's value (extrapolating past a parent leaves the faces the model draws).
    """
    (cf, rf), (cm, rm) = basis.split(father), basis.split(mother)
    diff = (cm - cf)[0]  # (layers, K)
    energy = torch.zeros(len(basis.groups), diff.shape[-1])
    weight = basis.scale.cpu() ** 2  # the latent's own units: the whitened ones overweight axes the population barely uses
    for g, layers in enumerate(basis.groups):
        energy[g] = diff[list(layers)].pow(2).sum(0).cpu() * weight
    gene_groups = torch.where(fixed < 0, gene, fixed.clamp_min(0))
    kids, shares = [], []
    for i in range(int(n)):
        gen = _generator(seed, i)
        mask = inheritance_masks(energy, gene, fixed, gen)
        shares.append(float((mask * energy).sum() / energy.sum()) if energy.sum() > 0 else float(gene.mean()))
        t = 0.0 if shift is None else float(shift[i])
        free = (fixed < 0).float()  # a group given to one parent is not shifted
        weights = (mask + t * free).clamp(0, 1)
        coords = cf[0] + basis.by_layer(weights).to(cf) * diff
        if variation > 0:
            coords = coords + variation * basis.by_layer(torch.randn(energy.shape, generator=gen)).to(cf)
        rest = torch.lerp(rf, rm, basis.by_layer((gene_groups + t * free).clamp(0, 1)).to(rf))
        kids.append(basis.join(coords[None], rest).to(father))
    return torch.cat(kids), torch.tensor(shares)


@torch.no_grad()
def random_mixtures(basis: TraitBasis, pivots: torch.Tensor, n: int, gen: torch.Generator,
                    max_variation: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random children of two pivots (2, *shape) with random gene weights and mutations, and each one's mother
    share: where a Family's children can land, for tuning the decoder there (core.pivotal's path term). Mutations go
    up to ``max_variation``, a little beyond the tabs' default variation (core.children.VARIATION)."""
    (cf, rf), (cm, rm) = basis.split(pivots[:1]), basis.split(pivots[1:2])
    diff = (cm - cf)[0]
    gene = torch.rand(n, 1, 1, generator=gen)
    masks = (torch.rand(n, len(basis.groups), diff.shape[-1], generator=gen) < gene).float()
    energy = diff.pow(2).cpu() * basis.scale.cpu() ** 2
    layer_masks = basis.by_layer(masks)  # (n, layers, K)
    share = (layer_masks * energy).sum((1, 2)) / energy.sum().clamp_min(1e-12)
    coords = cf + layer_masks.to(cf) * diff
    coords = coords + (torch.rand(n, 1, 1, generator=gen) * max_variation
                       * basis.by_layer(torch.randn(n, len(basis.groups), diff.shape[-1], generator=gen))).to(cf)
    rest = torch.lerp(rf, rm, share.reshape(-1, 1, 1).to(rf))
    return basis.join(coords, rest).to(pivots), share
