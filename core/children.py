"""Blend two parents' latents into children: the inheritance rules, without photos or identity.

A child inherits each of the model's traits (whitened principal axes of its
latents, per layer group in a per-layer space) from one parent or the other,
drawn at random around the gene weight (0 = all father, 1 = all mother), plus a
small seeded mutation from the model's own population spread: siblings differ,
and each takes the gene weight's share from each parent (core.inheritance). In
a per-layer space (StyleGAN's W+) coarse layers carry face shape and pose,
middle ones features, fine ones colour and texture, so each group can also be
given wholly to one parent. Children can then be moved along attribute directions such as age and gender.

This is a latent-space blend, not a prediction of what real children of
these people would look like. ``core.family.Family`` runs these on projected photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from core.checks import whole_number
from core.direction import apply_direction
from core.inheritance import inherit, trait_basis
from core.interpolate import path
from core.model import LatentModel

DOMINANCE = ("blend", "father", "mother")
VARIATION = 0.4  # the tabs' and CLI's default mutation: siblings differ visibly, each still closer to both parents
DISCLAIMER = "A child image is a latent-space blend of the two parents' photos, not a prediction of real children."


@dataclass
class ChildSettings:
    gene_weight: float = 0.5  # 0 = all father, 1 = all mother (layers set to "blend")
    dominance: dict[str, str] = field(default_factory=dict)  # layer group -> blend / father / mother
    attributes: dict[str, float] = field(default_factory=dict)  # direction name -> amount, in std of the data along it
    variation: float = 0.0  # mutation: new traits on top of the inherited ones, in population std (0 = none)
    seed: int = 0
    children: int = 4


MAX_CHILDREN = 64


def check_settings(model: LatentModel, space: str, settings: ChildSettings, directions: Sequence | None = ()) -> list[str]:
    """Refuse settings this model cannot honour, each with a plain sentence; return warnings to show.

    The one place the tab, the API and the CLI validate a family's settings: gene weight in [0, 1], a
    whole number of children from 1, dominance only for this model's layer groups, directions it has
    (``directions=None``: not checked).
    """
    if not 0.0 <= float(settings.gene_weight) <= 1.0:
        raise ValueError("The gene weight must be between 0 (father) and 1 (mother).")
    whole_number(settings.children, "number of children", 1, MAX_CHILDREN)
    if float(settings.variation) < 0:
        raise ValueError("The variation between children cannot be negative.")
    groups = model.layer_groups(space)
    for group, who in settings.dominance.items():
        if who not in DOMINANCE:
            raise ValueError(f"Dominance must be one of {', '.join(DOMINANCE)}; got '{who}'.")
        if group not in groups and who != "blend":
            if not groups:
                raise ValueError(f"{model.card.title} has no layers to split ('{space}' is not a per-layer space), "
                                 f"so per-layer dominance does not apply; leave the groups on blend.")
            raise ValueError(f"Unknown layer group '{group}'; {model.card.title} has {', '.join(groups)}.")
    by_name = {d.name: d for d in directions or ()}
    warnings = []
    for name, amount in settings.attributes.items() if directions is not None else ():
        if not amount:
            continue
        if name not in by_name:
            raise ValueError(f"No '{name}' direction for {model.card.title}; available: {', '.join(by_name) or 'none'}. "
                             f"Make one with 'python app.py directions'.")
        if not getattr(by_name[name], "reliable", True):
            warnings.append(f"Direction {by_name[name].describe()}.")
    return warnings


def layer_weights(model: LatentModel, space: str, settings: ChildSettings) -> torch.Tensor:
    """Per-layer mother weight alpha, shape (num_layers, 1) for per-layer spaces, else (1,)."""
    check_settings(model, space, settings, None)
    groups = model.layer_groups(space)
    n = model.spaces[space].num_layers
    if n == 0:
        return torch.tensor([settings.gene_weight])
    alpha = torch.full((n, 1), float(settings.gene_weight))
    for group, who in settings.dominance.items():
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
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Latents (children, *space shape) of children of two parents' latents (each (1, *shape) or (*shape)).

    Each child inherits every trait from one parent or the other (core.inheritance), so siblings differ and each
    takes the gene weight's share from the mother; ``variation`` adds a mutation. ``shift`` (children,) moves the
    traits each child took from one parent towards the other's (core.inheritance.inherit; Family's identity balance).
    """
    space = model.check_space(space)
    f = model.check_latents(father, space)[:1]
    m = model.check_latents(mother, space)[:1]
    check_settings(model, space, settings, directions)
    basis = trait_basis(model, space)
    gene, fixed = _group_genes(model, space, settings)
    shift = None if shift is None else torch.as_tensor(shift, dtype=torch.float32)
    children, _ = inherit(basis, f, m, gene, fixed, int(settings.children), int(settings.seed), float(settings.variation),
                          shift)
    by_name = {d.name: d for d in directions}
    for name, amount in settings.attributes.items():
        if amount:
            d = by_name[name]
            children = apply_direction(children, d, float(amount) * d.std)  # amounts are in std of the data along d
    return children


def _group_genes(model: LatentModel, space: str, settings: ChildSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer group: the mother's share (groups, 1) and -1 / 0 / 1 for drawn / father's / mother's (groups, 1)."""
    groups = list(model.layer_groups(space)) if model.spaces[space].per_layer else ["all"]
    who = [settings.dominance.get(g, "blend") for g in groups]
    fixed = torch.tensor([[-1.0 if w == "blend" else float(w == "mother")] for w in who])
    return torch.full((len(groups), 1), float(settings.gene_weight)), fixed


def morph(father: torch.Tensor, child: torch.Tensor, mother: torch.Tensor, frames: int = 24) -> torch.Tensor:
    """Latents of a father -> child -> mother walk (linear; W and autoencoder spaces are learned spaces)."""
    half = max(2, frames // 2)
    a = path(father.reshape(child.shape), child, half, "lerp")
    b = path(child, mother.reshape(child.shape), half, "lerp")
    return torch.cat([a, b[1:]])
