"""Blend two parents' latents into children.

A child inherits each of the model's traits (whitened principal axes of its
latents, per layer group in a per-layer space) from one parent or the other,
drawn at random around the gene weight (0 = all father, 1 = all mother), plus a
small seeded mutation from the model's own population spread: siblings differ,
and each takes the gene weight's share from each parent (core.inheritance). In
a per-layer space (StyleGAN's W+) coarse layers carry face shape and pose,
middle ones features, fine ones colour and texture, so each group can also be
given wholly to one parent. Children are then balanced by identity (Family)
and can be moved along attribute directions such as age and gender.

This is a latent-space blend, not a prediction of what real children of
these people would look like.

:class:`Family` is the workflow the Family tab, its API and ``python app.py family`` share: photos ->
aligned parents -> one batched projection -> children and morphs, with each result as an object
(:class:`Parent`, :class:`Children`) and every setting judged by :func:`check_settings`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch stays out of the app's start-up, which only needs DISCLAIMER
    import torch
    from PIL import Image

    from core.executor import Executor
    from core.faces.colour import ColourMatch
    from core.model import LatentModel

DOMINANCE = ("blend", "father", "mother")
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
BALANCE_STEPS = 6  # identity evaluations per family to even out each child's resemblance (see Family.children)
BALANCE_RANGE = 0.5  # how far a child's traits from one parent may move towards the other's for that (1 = all the way)


def check_settings(model: LatentModel, space: str, settings: ChildSettings, directions: Sequence | None = ()) -> list[str]:
    """Refuse settings this model cannot honour, each with a plain sentence; return warnings to show.

    The one place the tab, the API and the CLI validate a family's settings: gene weight in [0, 1], a
    whole number of children from 1, dominance only for this model's layer groups, directions it has
    (``directions=None``: not checked).
    """
    if not 0.0 <= float(settings.gene_weight) <= 1.0:
        raise ValueError("The gene weight must be between 0 (father) and 1 (mother).")
    n = settings.children
    if isinstance(n, bool) or float(n) != int(n) or not 1 <= int(n) <= MAX_CHILDREN:
        raise ValueError(f"The number of children must be a whole number from 1 to {MAX_CHILDREN}; got {n}.")
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
    import torch

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
    import torch

    from core.direction import apply_direction
    from core.inheritance import inherit, trait_basis

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
    import torch

    groups = list(model.layer_groups(space)) if model.spaces[space].per_layer else ["all"]
    who = [settings.dominance.get(g, "blend") for g in groups]
    fixed = torch.tensor([[-1.0 if w == "blend" else float(w == "mother")] for w in who])
    return torch.full((len(groups), 1), float(settings.gene_weight)), fixed


def morph(father: torch.Tensor, child: torch.Tensor, mother: torch.Tensor, frames: int = 24) -> torch.Tensor:
    """Latents of a father -> child -> mother walk (linear; W and autoencoder spaces are learned spaces)."""
    import torch

    from core.interpolate import path

    half = max(2, frames // 2)
    a = path(father.reshape(child.shape), child, half, "lerp")
    b = path(child, mother.reshape(child.shape), half, "lerp")
    return torch.cat([a, b[1:]])


# ----- the Family workflow: one session object shared by the tab, the API and the CLI ----------------------------
PARENTS = ("father", "mother")


@dataclass
class Parent:
    """One parent's photo as the model sees it, and (once projected) its latent; ``error`` if the photo failed."""

    who: str
    digest: str = ""
    face: int = 0  # which detected face (0: the largest)
    crop: Image.Image | None = None  # aligned, at the model's size and channels
    mask: np.ndarray | None = None  # face-region weights at the model's size: only the face drives the projection
    reference: Image.Image | None = None  # the aligned face, sharp (core.image_input.IDENTITY_SIDE px): identity is measured on it
    faces: list[Image.Image] = field(default_factory=list)  # thumbnails of every detected face, largest first
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    latent: torch.Tensor | None = None  # (1, *shape) on the CPU
    reconstruction: Image.Image | None = None
    psnr: float = 0.0
    loss_name: str = ""
    identity: float | None = None  # descriptor distance photo -> reconstruction (core.faces.identity), the model's own output
    identity_shown: float | None = None  # the same with the photo's colours put back (a global per-channel map), if any
    steps: int = 0
    stopped: bool = False  # the projection was stopped early: the latent is partial
    tuned: bool = False  # the reconstruction comes from the decoder tuned to both parents' photos (core.pivotal)


@dataclass
class Children:
    latents: torch.Tensor  # (n, *shape) on the CPU
    images: list[Image.Image]
    space: str
    settings: ChildSettings
    identity: list[tuple[float, float]]  # per child: identity distance to the father's and the mother's photo
    parents_distance: float  # the parents' photos' distance to each other
    warnings: list[str] = field(default_factory=list)
    colour_weight: float | None = None  # mother's share of the skin-tone map put back on the children (None: none)


class Family:
    """Two parents' photos -> aligned once per upload -> projected once per setting -> children and morphs.

    Aligned crops are keyed by a digest of the photo's bytes and the face chosen, projections by that and the
    projection settings, so moving a slider re-reads and re-detects nothing. Each parent is aligned on its own:
    a failed photo sets that parent's ``error`` and leaves the other usable.
    """

    def __init__(self, model: LatentModel, name: str, tags: Sequence[str] = (), executor: Executor | None = None) -> None:
        """``executor`` runs the projections and decoding (``core.executor``; default: in this process)."""
        from core.executor import LOCAL

        self.executor: Executor = executor or LOCAL
        if "faces" not in tags:
            raise ValueError(f"{model.card.title} is not a face model; Family needs one (e.g. small_ae/faces or a StyleGAN "
                             "FFHQ model).")
        self.model, self.name, self.space = model, name, model.edit_space()
        # Sampling steps when a diffusion model draws parents and children (None: its default); the latents all come
        # from inverted photos, so they are decoded as the inversion's mirror (see LatentModel.decode_options).
        self.decode_steps: int | None = None
        self.parents = {who: Parent(who) for who in PARENTS}
        self._found: dict[str, tuple] = {}  # digest -> (FoundFaces, thumbnails)
        self._aligned: dict[tuple[str, int], Parent] = {}
        self._projected: dict[tuple, Parent] = {}
        self._descriptors: dict[tuple[str, int], object] = {}  # (digest, face) -> the parent photo's dlib descriptor
        self._directions: list | None = None
        self.decoder: LatentModel = model  # what draws parents and children: the model, or its copy tuned to the parents
        self._tuned: tuple[tuple, LatentModel] | None = None  # (parents' keys, tuned copy): only the latest is kept
        self._kids: tuple[tuple, Children] | None = None  # the latest children (morphs walk to the very child shown)
        # Two parents are fitted on photos whose face colours are matched to each other (core.faces.colour), and each
        # drawing gets its own / a child's gene-weighted colours back: see project().
        self.colour: ColourMatch | None = None

    @property
    def directions(self) -> list:
        if self._directions is None:
            from core.user_directions import directions_for

            self._directions = directions_for(self.name, self.model)
        return self._directions

    # ----- photos ------------------------------------------------------------------------
    def set_parent(self, who: str, photo: str | Path | None, face: int = 0) -> Parent:
        """Align ``who``'s photo (a path; None clears it); a bad photo is reported in ``Parent.error``, never raised."""
        if who not in PARENTS:
            raise ValueError(f"A parent is 'father' or 'mother', not '{who}'.")
        if not photo:
            self.parents[who] = Parent(who)
            return self.parents[who]
        try:
            with open(photo, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            self.parents[who] = Parent(who, error=f"{Path(photo).name} could not be read ({e.strerror or e}).")
            return self.parents[who]
        if isinstance(face, bool) or float(face) != int(face) or face < 0:
            self.parents[who] = Parent(who, digest, error=f"The face number must be a whole number from 0; got {face}.")
            return self.parents[who]
        key = (digest, int(face))
        if key not in self._aligned:
            self._aligned[key] = self._align(who, photo, digest, int(face))
        self.parents[who] = replace(self._aligned[key], who=who, warnings=list(self._aligned[key].warnings))
        return self.parents[who]

    def _align(self, who: str, photo: str | Path, digest: str, face: int) -> Parent:
        """Decode, detect (once per digest) and align; errors become ``Parent.error``."""
        from core.faces import find_faces
        from core.image_input import load_image, model_input

        try:
            img = load_image(photo, channels=3, min_side=16)
            if digest not in self._found:
                found = find_faces(img)
                self._found[digest] = (found, [face_thumbnail(img, f.box) for f in found.faces])
            found, thumbs = self._found[digest]
            inp = model_input(img, self.model.image_size, self.model.channels, align_face=True, face=face, found=found)
        except ValueError as e:  # unreadable photo, no face, a face number out of range
            return Parent(who, digest, face, error=str(e), faces=self._found.get(digest, (None, []))[1])
        return Parent(who, digest, face, inp.image, inp.mask, inp.reference, thumbs, inp.warnings)

    def _ready(self, who: str) -> Parent:
        p = self.parents[who]
        if p.error:
            raise ValueError(f"The {who}'s photo: {p.error}")
        if p.crop is None:
            raise ValueError(f"Upload the {who}'s photo first.")
        return p

    # ----- projection ----------------------------------------------------------------------
    def project(self, steps: int = 200, should_stop: Callable[[], bool] | None = None,
                tune_steps: int | None = None) -> Iterator:
        """Project every aligned parent not yet projected with these settings, as ONE batch, then tune a copy of the
        decoder to both parents' photos (``tune_steps``, default the model's ``pivotal_tuning_steps``; see
        core.pivotal); yields ProjectionEvents, then TuningEvents.

        With both parents, projection and tuning fit photos whose face colours are matched to each other (their
        average; ``self.colour``): a latent blend of a pale and a dark face otherwise decodes to a patchwork of the
        two. Each parent's drawing gets its own colours back and a child the gene-weighted blend, as one global
        per-channel map; identity and PSNR are measured on the model's own output (``Parent.identity_shown``: with
        the colours put back).

        Afterwards ``parents[who]`` hold latent, reconstruction, PSNR (inside the face), loss name and identity
        distance, measured on what ``self.decoder`` draws. A stopped run leaves partial results that are not reused.
        """
        import torch

        from core.faces.colour import match_to_each_other
        from core.faces.mask import as_weights
        from core.images import from_pil
        from core.projection import ProjectionConfig

        usable = [w for w in PARENTS if self.parents[w].crop is not None]
        if not usable:
            self._ready("father" if self.parents["father"].error or not self.parents["mother"].error else "mother")
        cfg = ProjectionConfig.for_model(self.model, self.space, steps=steps, preview_every=0)
        tune = self.model.pivotal_tuning_steps if tune_steps is None else int(tune_steps)
        if tune < 0:
            raise ValueError("The number of decoder-tuning steps cannot be negative.")
        photos = torch.cat([from_pil(self.parents[w].crop, self.model.channels) for w in usable])
        weights = as_weights(np.stack([self.parents[w].mask for w in usable]))  # the faces only, not their backdrops
        self.colour = match_to_each_other(photos, weights) if len(usable) == 2 else None
        target = photos if self.colour is None else self.colour.apply(photos)
        # A parent's target depends on both photos once their colours are matched, so its projection is keyed by both.
        both = tuple((self.parents[w].digest, self.parents[w].face) for w in usable) if self.colour is not None else ()
        keys = {w: (self.parents[w].digest, self.parents[w].face, self.space, cfg.steps, cfg.loss, both) for w in usable}
        todo = [w for w in usable if keys[w] not in self._projected]
        if todo:
            rows = [usable.index(w) for w in todo]
            final = None
            for ev in self.executor.project(self.model, target[rows], cfg, should_stop, weights[rows]):
                final = ev
                yield ev
            for i, w in enumerate(todo):
                done = replace(self.parents[w], latent=final.latent[i : i + 1].clone(), loss_name=final.loss_name,
                               steps=final.step, stopped=final.stopped)
                self.parents[w] = done
                if not final.stopped:
                    self._projected[keys[w]] = done
        for w in usable:
            if w not in todo:
                self.parents[w] = replace(self._projected[keys[w]], warnings=self.parents[w].warnings)
        self.decoder = self.model
        latents = torch.cat([self.parents[w].latent for w in usable])
        if tune > 0 and not any(self.parents[w].stopped for w in usable):
            yield from self._tune(tuple(keys[w] for w in usable) + (tune,), latents, target, weights, tune, cfg.loss, should_stop)
        self._describe_parents(usable, latents, target, weights)

    def _tune(self, key: tuple, latents, target, weights, steps: int, loss: str, should_stop) -> Iterator:
        """Tune a copy of the decoder to these parents (once per parents and settings; only the latest copy is kept)."""
        from core.pivotal import default_tuning

        if self._tuned is None or self._tuned[0] != key:
            final = None
            for ev in self.executor.tune(self.model, latents, target, self.space, weights,
                                         default_tuning(self.model, len(latents), loss, steps), should_stop):
                final = ev
                if not ev.done:
                    yield ev
            self._tuned = (key, final.model) if final.step == steps else None  # a stopped tuning is used, not kept
            self.decoder = final.model
            return
        self.decoder = self._tuned[1]

    def _describe_parents(self, usable: list[str], latents, target, weights) -> None:
        """Each parent's reconstruction as ``self.decoder`` draws it, its PSNR inside the face and its identity distance."""
        import torch

        from core.images import psnr, to_pil

        recon = self._draw(latents)
        face_psnr = psnr(recon, target.cpu(), weights)
        drawn = self._describe(to_pil(recon))
        images = to_pil(self._recoloured(recon, torch.arange(len(usable), dtype=torch.float32)))
        shown = drawn if self.colour is None else self._describe(images)
        for i, (w, rec) in enumerate(zip(usable, images, strict=True)):
            photo = self._photo_descriptor(self.parents[w])
            self.parents[w] = replace(self.parents[w], reconstruction=rec, psnr=float(face_psnr[i]),
                                      identity=float(np.linalg.norm(drawn[i] - photo)),
                                      identity_shown=float(np.linalg.norm(shown[i] - photo)), tuned=self.decoder is not self.model)

    def _recoloured(self, images: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The model's drawings with the parents' colours put back, ``t`` (per image or one) = the mother's share."""
        if self.colour is None:
            return images
        return self.colour.blend(t).undo(images.to(self.colour.mean.device)).cpu()

    def _projected_latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        ps = [self._ready(w) for w in PARENTS]
        for p in ps:
            if p.latent is None:
                raise ValueError(f"Project the {p.who} first.")
        return ps[0].latent.to(self.model.device), ps[1].latent.to(self.model.device)

    # ----- children ------------------------------------------------------------------------
    def check(self, settings: ChildSettings) -> list[str]:
        """Validate settings before any work (the CLI calls this before projecting); returns warnings."""
        return check_settings(self.model, self.space, settings, self.directions)

    def children(self, settings: ChildSettings) -> Children:
        """The children of the projected parents, with each child's identity distance to each parent's photo.

        Each child is balanced by identity, not by latent distance alone: the traits it took from the parent it
        resembles more move part of the way towards the other parent's (a few bisection steps, :data:`BALANCE_STEPS`)
        until its dlib distances to the two photos split as the gene weight says (at 0.5: as close to one as to the
        other). Which traits it inherited stays the same, and no trait goes beyond either parent's.
        """
        from core.faces.identity import distances
        from core.images import to_pil

        warnings = self.check(settings)
        key = (repr(settings), id(self.decoder), *((p.digest, p.face, id(p.latent)) for p in self.parents.values()))
        if self._kids is not None and self._kids[0] == key:
            return self._kids[1]
        f, m = self._projected_latents()
        parents = np.stack([self._photo_descriptor(p) for p in self.parents.values()])
        share = self._colour_share(settings)
        lat, drawn, identity = self._balanced(f, m, settings, parents, share)
        parents_distance = float(distances(parents[:1], parents[1:])[0, 0])
        images = to_pil(self._recoloured(drawn, share))
        kids = Children(lat.cpu(), images, self.space, settings, identity, parents_distance, warnings,
                        None if self.colour is None else share)
        self._kids = (key, kids)
        return kids

    def _balanced(self, f, m, settings: ChildSettings, parents: np.ndarray, share: float):
        """Children latents, drawings and (to father, to mother) identity distances, each child's traits shifted
        (``make_children``'s ``shift``) so that d(father) / (d(father) + d(mother)) meets the mother's share (bisection
        per child)."""
        import torch

        from core.faces.identity import distances
        from core.images import to_pil

        n = int(settings.children)
        lo, hi = torch.full((n,), -BALANCE_RANGE), torch.full((n,), BALANCE_RANGE)
        shift = torch.zeros(n)
        best: list = [None] * n
        steps = BALANCE_STEPS if 0.0 < share < 1.0 else 1
        for _ in range(steps):
            lat = make_children(self.model, f, m, self.space, settings, self.directions, shift=shift)
            drawn = self._draw(lat)
            d = distances(self._describe(to_pil(drawn)), parents)  # the model's own drawing, before recolouring
            ratio = torch.as_tensor(d[:, 0] / np.maximum(d.sum(1), 1e-9), dtype=torch.float32)
            for i in range(n):
                miss = abs(float(ratio[i]) - share)
                if best[i] is None or miss < best[i][0]:
                    best[i] = (miss, lat[i], drawn[i], (float(d[i, 0]), float(d[i, 1])))
            lo = torch.where(ratio < share, shift, lo)  # too close to the father: move towards the mother
            hi = torch.where(ratio < share, hi, shift)
            shift = (lo + hi) / 2
        return (torch.stack([b[1] for b in best]), torch.stack([b[2] for b in best]), [b[3] for b in best])

    def _colour_share(self, settings: ChildSettings) -> float:
        """The mother's share of a child's colours: its layers' mean mother weight (gene weight and dominance)."""
        return float(layer_weights(self.model, self.space, settings).mean())

    def morph(self, index: int, settings: ChildSettings, frames: int = 32) -> list[Image.Image]:
        """Frames of a father -> child ``index`` -> mother walk."""
        from core.images import to_pil

        self.check(settings)
        n = int(settings.children)
        if isinstance(index, bool) or float(index) != int(index) or not 0 <= int(index) < n:
            raise ValueError(f"Choose a child number between 0 and {n - 1}; got {index}.")
        import torch

        f, m = self._projected_latents()
        kid = self.children(settings).latents[int(index) : int(index) + 1].to(f.device)  # the child shown, balanced
        walk = morph(f, kid, m, frames)
        half, share = max(2, frames // 2), self._colour_share(settings)  # the colours walk as morph's latents do
        t = torch.cat([torch.linspace(0, share, half), torch.linspace(share, 1, half)[1:]])
        return to_pil(self._recoloured(self._draw(walk), t))

    def _draw(self, latents: torch.Tensor) -> torch.Tensor:
        """Images of latents in this family's space, drawn by ``self.decoder`` with ``decode_steps``."""
        return self.executor.generate(self.decoder, latents, self.space,
                                      **self.decoder.decode_options(self.decode_steps, inverted=True))

    # ----- identity -----------------------------------------------------------------------
    def _describe(self, images: list[Image.Image]):
        """dlib descriptors (N, 128) of aligned faces (dlib is already needed to align the photos)."""
        from core.faces.identity import default_identity

        return default_identity().describe(images)

    def _photo_descriptor(self, parent: Parent):
        """A parent photo's descriptor, described once per (photo, face) for parents and children alike."""
        key = (parent.digest, parent.face)
        if key not in self._descriptors:
            self._descriptors[key] = self._describe([parent.reference])[0]
        return self._descriptors[key]


def face_thumbnail(img: Image.Image, box: tuple[int, int, int, int], side: int = 96) -> Image.Image:
    """The detected face with a margin, for picking among several faces."""
    left, top, right, bottom = box
    pad = 0.3 * max(right - left, bottom - top)
    crop = img.crop((int(max(0, left - pad)), int(max(0, top - pad)), int(min(img.width, right + pad)),
                     int(min(img.height, bottom + pad))))
    crop.thumbnail((side, side))
    return crop
