"""Blend two parents' latents into children.

A child is a point between the two projected parents: per layer, a weight
alpha in [0, 1] picks how much comes from the mother (0 = father's layer,
1 = mother's). In a per-layer space (StyleGAN's W+) coarse layers carry face
shape and pose, middle ones features, fine ones colour and texture, so each
group can be dominated by one parent or blended. Children of the same parents
differ by a seeded variation drawn from the model's own sample distribution
(so it stays on the data manifold), and can be moved along attribute
directions such as age and gender.

This is a latent-space blend, not a prediction of what real children of
these people would look like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays out of the app's start-up, which only needs DISCLAIMER
    import torch

    from core.model import LatentModel

DOMINANCE = ("blend", "father", "mother")
DISCLAIMER = "A child image is a latent-space blend of the two parents' photos, not a prediction of real children."


@dataclass
class ChildSettings:
    gene_weight: float = 0.5  # 0 = all father, 1 = all mother (layers set to "blend")
    dominance: dict[str, str] = field(default_factory=dict)  # layer group -> blend / father / mother
    attributes: dict[str, float] = field(default_factory=dict)  # direction name -> amount, in std of the data along it
    variation: float = 0.0  # 0 = the pure blend; ~0.3 = siblings that clearly differ
    seed: int = 0
    children: int = 4


def layer_weights(model: LatentModel, space: str, settings: ChildSettings) -> torch.Tensor:
    """Per-layer mother weight alpha, shape (num_layers, 1) for per-layer spaces, else (1,)."""
    import torch

    if not 0.0 <= settings.gene_weight <= 1.0:
        raise ValueError("The gene weight must be between 0 (father) and 1 (mother).")
    groups = model.layer_groups(space)
    unknown = set(settings.dominance) - set(groups)
    if unknown and groups:
        raise ValueError(f"Unknown layer groups {sorted(unknown)}; this model has {', '.join(groups)}.")
    n = model.spaces[space].num_layers
    if n == 0:
        return torch.tensor([settings.gene_weight])
    alpha = torch.full((n, 1), float(settings.gene_weight))
    for group, who in settings.dominance.items():
        if who not in DOMINANCE:
            raise ValueError(f"Dominance must be one of {', '.join(DOMINANCE)}; got '{who}'.")
        if who != "blend":
            alpha[groups[group]] = 0.0 if who == "father" else 1.0
    return alpha


def make_children(
    model: LatentModel,
    father: torch.Tensor,
    mother: torch.Tensor,
    space: str,
    settings: ChildSettings,
    directions: Sequence = (),
) -> torch.Tensor:
    """Latents (children, *space shape) of children of two parents' latents (each (1, *shape) or (*shape))."""
    import torch

    from core.direction import apply_direction

    space = model.check_space(space)
    f = model.check_latents(father, space)[:1]
    m = model.check_latents(mother, space)[:1]
    alpha = layer_weights(model, space, settings).to(f.device)
    child = torch.lerp(f, m, alpha.to(f.dtype))  # exact at alpha 0 and 1
    n = max(1, int(settings.children))
    children = child.expand(n, *child.shape[1:]).clone()
    if settings.variation > 0:
        # Deviations of fresh samples from the centre: model-shaped variation, seeded per family.
        deltas = model.sample(n, seed=settings.seed, space=space) - model.mean_latent(space).to(f.device)
        children = children + settings.variation * deltas
    by_name = {d.name: d for d in directions}
    for name, amount in settings.attributes.items():
        if not amount:
            continue
        if name not in by_name:
            raise ValueError(f"No '{name}' direction for {model.card.title}; available: {', '.join(by_name) or 'none'}.")
        d = by_name[name]
        children = apply_direction(children, d, float(amount) * d.std)  # amounts are in std of the data along d
    return children


def morph(father: torch.Tensor, child: torch.Tensor, mother: torch.Tensor, frames: int = 24) -> torch.Tensor:
    """Latents of a father -> child -> mother walk (linear; W and autoencoder spaces are learned spaces)."""
    import torch

    from core.interpolate import path

    half = max(2, frames // 2)
    a = path(father.reshape(child.shape), child, half, "lerp")
    b = path(child, mother.reshape(child.shape), half, "lerp")
    return torch.cat([a, b[1:]])
