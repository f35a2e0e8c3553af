"""The Family workflow the Family tab, its API and ``python app.py family`` share: photos -> aligned parents -> one
batched projection (then a decoder copy tuned to both photos) -> children and morphs, with each result as an object
(:class:`Parent`, :class:`Children`) and every setting judged by ``core.children.check_settings``.

Children are balanced by identity (dlib descriptors of what the decoder draws against the parents' photos): see
:meth:`Family.children`. A child image is a latent-space blend of two photos, not a prediction of real children.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from core import faces  # faces.find_faces looked up per call (tests count the detections)
from core.checks import whole_number
from core.children import (
    DISCLAIMER,
    DOMINANCE,
    MAX_CHILDREN,
    ChildSettings,
    check_settings,
    layer_weights,
    make_children,
    morph,
)
from core.executor import LOCAL, Executor
from core.faces.colour import ColourMatch, match_to_each_other
from core.faces.identity import default_identity, distances
from core.faces.mask import as_weights
from core.handle import ModelHandle
from core.image_input import load_image, model_input
from core.images import from_pil, psnr, to_pil
from core.model import LatentModel
from core.photo_to_latent import default_tuning
from core.projection import ProjectionConfig
from core.thumbnails import face_thumbnail
from core.user_directions import directions_for

if TYPE_CHECKING:
    from core.teach import SessionDirections

__all__ = ["BALANCE_RANGE", "BALANCE_STEPS", "DISCLAIMER", "DOMINANCE", "MAX_CHILDREN", "PARENTS", "ChildSettings",
           "Children", "Family", "Parent", "check_settings", "face_thumbnail", "layer_weights", "make_children", "morph"]

PROJECTION_STEPS = 100  # the tabs' and CLI's default per parent: tuning then brings the parents back (docs/benchmarks.md)
BALANCE_STEPS = 3  # identity evaluations per family to even out each child's resemblance (see Family.children)
BALANCE_SLOPE = 0.3  # first guess of d(ratio)/d(shift) for the first secant step (typical of the built-in model)
MAX_FACES = 10_000  # a bound for the face-number check, far above any photo's count
BALANCE_RANGE = 0.5  # how far a child's traits from one parent may move towards the other's for that (1 = all the way)


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

    def __init__(self, model: ModelHandle | LatentModel, name: str = "", tags: Sequence[str] = (),
                 executor: Executor | None = None, session_directions: SessionDirections | None = None) -> None:
        """``model``: the face model's handle (name, tags, loaded model); ``executor`` runs the projections and decoding
        (``core.executor``; default: in this process); ``session_directions``: what this session taught
        (``core.teach``), offered after the model's own. Deprecated: a bare model with its ``name`` and ``tags``."""
        handle = model if isinstance(model, ModelHandle) else ModelHandle(name, tuple(tags), model)
        handle.require_faces("Family")
        self.handle, self.executor = handle, executor or LOCAL
        model, name = handle.model, handle.name
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
        self.session_directions = session_directions
        self.decoder: LatentModel = model  # what draws parents and children: the model, or its copy tuned to the parents
        self._tuned: tuple[tuple, LatentModel] | None = None  # (parents' keys, tuned copy): only the latest is kept
        self._kids: tuple[tuple, Children] | None = None  # the latest children (morphs walk to the very child shown)
        # Two parents are fitted on photos whose face colours are matched to each other (core.faces.colour), and each
        # drawing gets its own / a child's gene-weighted colours back: see project().
        self.colour: ColourMatch | None = None

    def set_decode_steps(self, steps: float | None) -> None:
        """Sampling steps for what a diffusion model draws here (None: its default); a bad count is refused now, before
        any projection (the tab and the CLI share this set-up)."""
        self.model.decode_options(steps)
        self.decode_steps = steps

    @property
    def directions(self) -> list:
        """The model's directions (read once), then the session's taught ones (read each time: teaching adds some)."""
        if self._directions is None:
            self._directions = directions_for(self.name, self.model)
        if self.session_directions is None:
            return self._directions
        return self.session_directions.merged(self.name, self._directions)

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
        try:
            face = whole_number(face, "face number", 0, MAX_FACES)
        except ValueError as e:
            self.parents[who] = Parent(who, digest, error=str(e))
            return self.parents[who]
        key = (digest, face)
        if key not in self._aligned:
            self._aligned[key] = self._align(who, photo, digest, int(face))
        self.parents[who] = replace(self._aligned[key], who=who, warnings=list(self._aligned[key].warnings))
        return self.parents[who]

    def _align(self, who: str, photo: str | Path, digest: str, face: int) -> Parent:
        """Decode, detect (once per digest) and align; errors become ``Parent.error``."""
        try:
            img = load_image(photo, channels=3, min_side=16)
            if digest not in self._found:
                found = faces.find_faces(img)
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
    def project(self, steps: int = PROJECTION_STEPS, should_stop: Callable[[], bool] | None = None,
                tune_steps: int | None = None) -> Iterator:
        """Project every aligned parent not yet projected with these settings, as ONE batch, then tune a copy of the
        decoder to both parents' photos (``tune_steps``, default ``core.photo_to_latent.default_tuning``'s for two; see
        core.pivotal); yields ProjectionEvents, then TuningEvents.

        With both parents, projection and tuning fit photos whose face colours are matched to each other (their
        average; ``self.colour``): a latent blend of a pale and a dark face otherwise decodes to a patchwork of the
        two. Each parent's drawing gets its own colours back and a child the gene-weighted blend, as one global
        per-channel map; identity and PSNR are measured on the model's own output (``Parent.identity_shown``: with
        the colours put back).

        Afterwards ``parents[who]`` hold latent, reconstruction, PSNR (inside the face), loss name and identity
        distance, measured on what ``self.decoder`` draws. A stopped run leaves partial results that are not reused.
        """
        usable = [w for w in PARENTS if self.parents[w].crop is not None]
        if not usable:
            self._ready("father" if self.parents["father"].error or not self.parents["mother"].error else "mother")
        cfg = ProjectionConfig.for_model(self.model, self.space, steps=steps, preview_every=0)
        tune = default_tuning(self.model, 2, cfg.loss, tune_steps).steps  # the two-photo default when None
        if tune < 0:
            raise ValueError("The number of decoder-tuning steps cannot be negative.")
        photos = torch.cat([from_pil(self.parents[w].crop, self.model.channels) for w in usable])
        weights = as_weights(np.stack([self.parents[w].mask for w in usable]))  # the faces only, not their backdrops
        self.colour = match_to_each_other(photos, weights) if len(usable) == 2 else None
        target = photos if self.colour is None else self.colour.apply(photos)
        # A parent's target depends on both photos once their colours are matched, so its projection is keyed by both.
        pair = tuple((self.parents[w].digest, self.parents[w].face) for w in usable) if self.colour is not None else ()
        keys = {w: (self.parents[w].digest, self.parents[w].face, self.space, cfg.steps, cfg.loss, pair) for w in usable}
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
        self._measure_parents(usable, latents, target, weights)

    def _tune(self, key: tuple, latents, target, weights, steps: int, loss: str, should_stop) -> Iterator:
        """Tune a copy of the decoder to these parents (once per parents and settings; only the latest copy is kept)."""
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

    def _measure_parents(self, usable: list[str], latents, target, weights) -> None:
        """Each parent's reconstruction as ``self.decoder`` draws it, its PSNR inside the face and its identity distance."""
        recon = self._draw(latents)
        face_psnr = psnr(recon, target.cpu(), weights)
        drawn = self._descriptors_of(to_pil(recon))
        images = to_pil(self._recoloured(recon, torch.arange(len(usable), dtype=torch.float32)))
        shown = drawn if self.colour is None else self._descriptors_of(images)
        for i, (w, rec) in enumerate(zip(usable, images, strict=True)):
            photo = self._photo_descriptor(self.parents[w])
            self.parents[w] = replace(self.parents[w], reconstruction=rec, psnr=float(face_psnr[i]),
                                      identity=float(np.linalg.norm(drawn[i] - photo)),
                                      identity_shown=float(np.linalg.norm(shown[i] - photo)), tuned=self.decoder is not self.model)

    def _recoloured(self, images: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The model's drawings with the parents' colours put back, ``t`` (per image or one) = the mother's share."""
        if self.colour is None:
            return images
        return self.colour.between(t).undo(images.to(self.colour.mean.device)).cpu()

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
        resembles more move part of the way towards the other parent's (a few secant steps, :data:`BALANCE_STEPS`)
        until its dlib distances to the two photos split as the gene weight says (at 0.5: as close to one as to the
        other). Which traits it inherited stays the same, and no trait goes beyond either parent's.
        """
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
        (``make_children``'s ``shift``) so that d(father) / (d(father) + d(mother)) meets the mother's share.

        Per child, a secant step on that ratio as a function of the shift, kept inside the bracket the evaluations so
        far allow (bisection when the secant leaves it or the ratio did not move); the best evaluation wins. Each
        round costs a decode and a dlib description of every child, so the rounds are few (:data:`BALANCE_STEPS`).
        """
        n = int(settings.children)
        lo, hi = torch.full((n,), -BALANCE_RANGE), torch.full((n,), BALANCE_RANGE)
        shift, last = torch.zeros(n), None
        best: list = [None] * n
        for _ in range(BALANCE_STEPS if 0.0 < share < 1.0 else 1):
            lat = make_children(self.model, f, m, self.space, settings, self.directions, shift=shift)
            drawn = self._draw(lat)
            d = distances(self._descriptors_of(to_pil(drawn)), parents)  # the model's own drawing, before recolouring
            ratio = torch.as_tensor(d[:, 0] / np.maximum(d.sum(1), 1e-9), dtype=torch.float32)
            for i in range(n):
                miss = abs(float(ratio[i]) - share)
                if best[i] is None or miss < best[i][0]:
                    best[i] = (miss, lat[i], drawn[i], (float(d[i, 0]), float(d[i, 1])))
            lo = torch.where(ratio < share, shift, lo)  # too close to the father: move towards the mother
            hi = torch.where(ratio < share, hi, shift)
            shift, last = _next_shift(shift, ratio, last, share, lo, hi), (shift, ratio)
        return (torch.stack([b[1] for b in best]), torch.stack([b[2] for b in best]), [b[3] for b in best])

    def _colour_share(self, settings: ChildSettings) -> float:
        """The mother's share of a child's colours: its layers' mean mother weight (gene weight and dominance)."""
        return float(layer_weights(self.model, self.space, settings).mean())

    def morph(self, index: int, settings: ChildSettings, frames: int = 32) -> list[Image.Image]:
        """Frames of a father -> child ``index`` -> mother walk."""
        self.check(settings)
        n = int(settings.children)
        try:
            index = whole_number(index, "child number", 0, n - 1)
        except ValueError:  # worded as the gallery numbers children
            raise ValueError(f"Choose a child number between 0 and {n - 1}; got {index}.") from None
        f, m = self._projected_latents()
        kid = self.children(settings).latents[index : index + 1].to(f.device)  # the child shown, balanced
        walk = morph(f, kid, m, frames)
        half, share = max(2, frames // 2), self._colour_share(settings)  # the colours walk as morph's latents do
        t = torch.cat([torch.linspace(0, share, half), torch.linspace(share, 1, half)[1:]])
        return to_pil(self._recoloured(self._draw(walk), t))

    def _draw(self, latents: torch.Tensor) -> torch.Tensor:
        """Images of latents in this family's space, drawn by ``self.decoder`` with ``decode_steps``."""
        return self.executor.generate(self.decoder, latents, self.space,
                                      **self.decoder.decode_options(self.decode_steps, inverted=True))

    # ----- identity -----------------------------------------------------------------------
    def _descriptors_of(self, images: list[Image.Image]):
        """dlib descriptors (N, 128) of aligned faces (dlib is already needed to align the photos)."""
        return default_identity().descriptors(images)

    def _photo_descriptor(self, parent: Parent):
        """A parent photo's descriptor, described once per (photo, face) for parents and children alike."""
        key = (parent.digest, parent.face)
        if key not in self._descriptors:
            self._descriptors[key] = self._descriptors_of([parent.reference])[0]
        return self._descriptors[key]


def _next_shift(shift: torch.Tensor, ratio: torch.Tensor, last: tuple | None, share: float, lo: torch.Tensor,
                hi: torch.Tensor) -> torch.Tensor:
    """The next shift per child: a secant step towards ``ratio == share`` (the first from :data:`BALANCE_SLOPE`),
    or the bracket's midpoint where the step would leave the bracket or the slope is flat or of the wrong sign."""
    slope = torch.full_like(shift, BALANCE_SLOPE)
    if last is not None:
        moved = shift - last[0]
        slope = torch.where(moved.abs() > 1e-6, (ratio - last[1]) / moved.where(moved.abs() > 1e-6, torch.ones_like(moved)), slope)
    guess = shift + (share - ratio) / slope.clamp(min=1e-3)
    inside = (slope > 1e-3) & (guess > lo) & (guess < hi)
    return torch.where(inside, guess, (lo + hi) / 2)
