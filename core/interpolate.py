"""Paths between latents, and the interpolation workflow every front end uses.

``slerp`` suits samples of an isotropic Gaussian prior (StyleGAN's z, a VAE):
their norms concentrate near sqrt(d), and a straight line between two of them
passes through low-norm, atypical latents. ``lerp`` suits learned spaces
(StyleGAN's w, an autoencoder's codes), where the data is not on a sphere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from core.checks import whole_number
from core.executor import LOCAL, Executor
from core.faces.colour import ColourMatch, match_to_each_other
from core.handle import ModelHandle
from core.model import LatentModel
from core.photo_to_latent import project_and_tune
from core.pivotal import TuningConfig
from core.projection import ProjectionConfig

__all__ = ["MAX_FRAMES", "METHODS", "Endpoints", "InterpolationPlan", "InterpolationResult", "describe", "image_endpoints",
           "image_latents", "interpolate_images", "interpolate_seeds", "lerp", "path", "plan_interpolation", "render_walk",
           "seed_endpoints", "slerp", "walk", "whole_number"]

METHODS = ("lerp", "slerp")
MAX_FRAMES = 256  # a walk is shown and exported whole: more frames than this is a mistake, not a wish


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """(1 - t) a + t b for batches a, b of shape (N, *S); ``t`` is a float or has shape (N,)."""
    t = _per_sample(t, a)
    return torch.lerp(a, b, t.reshape(-1, *([1] * (a.ndim - 1))))  # exact at t = 0 and t = 1


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of batches a, b (N, *S); each sample is one flattened vector.

    Moves along the great circle between the directions and interpolates the
    norms linearly. Exact at t = 0 and t = 1; falls back to lerp for parallel,
    antiparallel or zero vectors, where the great circle is undefined, so it
    never returns NaN.
    """
    if a.shape != b.shape:
        raise ValueError(f"Cannot interpolate between latents of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    t = _per_sample(t, a).reshape(-1, 1)
    af, bf = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    na, nb = af.norm(dim=1, keepdim=True), bf.norm(dim=1, keepdim=True)
    ua, ub = af / na.clamp_min(eps), bf / nb.clamp_min(eps)
    omega = torch.arccos((ua * ub).sum(1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    ok = (so > 1e-4) & (na > eps) & (nb > eps)
    so = torch.where(ok, so, torch.ones_like(so))
    on_circle = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so * (na + (nb - na) * t)
    out = torch.where(ok, on_circle, af + (bf - af) * t)
    # Pin the endpoints exactly (sin/arccos round-off would otherwise leave ~1e-7).
    out = torch.where(t == 0, af, torch.where(t == 1, bf, out))
    return out.reshape(a.shape)


def path(a: torch.Tensor, b: torch.Tensor, n: int, method: str = "lerp") -> torch.Tensor:
    """``n`` latents from ``a`` to ``b`` inclusive; a and b are single latents of shape S or (1, *S)."""
    if n < 2:
        raise ValueError("An interpolation needs at least 2 frames.")
    if method not in METHODS:
        raise ValueError(f"Unknown interpolation '{method}'; use one of {', '.join(METHODS)}.")
    if a.shape != b.shape:
        raise ValueError(f"Cannot interpolate between latents of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    a = a[0] if a.ndim > 1 and a.shape[0] == 1 else a
    b = b[0] if b.ndim > 1 and b.shape[0] == 1 else b
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)
    fn = slerp if method == "slerp" else lerp
    return fn(a.expand(n, *a.shape), b.expand(n, *b.shape), t)


def _per_sample(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[0]) if t.ndim == 0 else t


# ----- the interpolation workflow (one path for the tab, the CLI and the API) ----------------


@dataclass(frozen=True)
class InterpolationPlan:
    """Everything decided before any latent is made, so bad settings fail before a projection runs.

    ``space`` is where the endpoints are made and the walk happens; ``layers`` are
    the per-layer indices taken from B when style mixing (empty: no mixing).
    """

    space: str
    method: str
    frames: int
    mixing: tuple[str, ...] = ()
    layers: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


def plan_interpolation(model: LatentModel, frames: float | int, space: str | None = None, method: str = "auto",
                       mixing: Sequence[str] = (), from_images: bool = False) -> InterpolationPlan:
    """Check the settings and choose the space: the same rules for every front end.

    Images cannot be projected into a Gaussian prior space (StyleGAN's z) when the
    model has a learned one, so image endpoints move to the model's first learned
    space (W; W+ when mixing). Style mixing needs a per-layer space: the walk moves
    to it. ``method="auto"`` is the space's natural path (slerp for z, lerp otherwise).
    """
    n = whole_number(frames, "number of frames", 2, MAX_FRAMES)
    if method not in ("auto", *METHODS):
        raise ValueError(f"Unknown interpolation '{method}'; use auto, {', '.join(METHODS)}.")
    space = model.check_space(space or None)
    mixing = tuple(dict.fromkeys(mixing or ()))
    notes: list[str] = []
    per_layer = next((s for s, sp in model.spaces.items() if sp.per_layer), None)
    if from_images and model.spaces[space].prior == "gaussian":
        learned = [s for s, sp in model.spaces.items() if sp.prior != "gaussian"]
        if learned:
            chosen = per_layer if mixing and per_layer in learned else learned[0]
            notes.append(f"Images are projected into {chosen}, not {space}: interpolating in {chosen} instead.")
            space = chosen
    layers: tuple[int, ...] = ()
    if mixing:
        if per_layer is None:
            raise ValueError(f"Style mixing needs a per-layer space (W+); {model.card.title} has none.")
        groups = model.layer_groups(per_layer)
        unknown = [g for g in mixing if g not in groups]
        if unknown:
            raise ValueError(f"Unknown layer group {', '.join(unknown)}; use {', '.join(groups)}.")
        space = per_layer
        layers = tuple(sorted(i for g in mixing for i in groups[g]))
    how = model.spaces[space].interpolation if method == "auto" else method
    return InterpolationPlan(space, how, n, mixing, layers, tuple(notes))


def seed_endpoints(model: LatentModel, plan: InterpolationPlan, seed_a: int, seed_b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A and B from seeds, in the plan's space (sampled in the model's prior, then converted)."""
    return model.sample(1, int(seed_a), plan.space), model.sample(1, int(seed_b), plan.space)


StepReport = Callable[[int, int, float, str], None]  # (step, steps, psnr, stage: "projecting" or "tuning")


def image_latents(model: LatentModel, images: torch.Tensor, space: str, steps: int,
                  report: StepReport | None = None, weights: torch.Tensor | None = None,
                  executor: Executor | None = None, tuning: TuningConfig | int | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[torch.Tensor, float, LatentModel]:
    """Latents of ``images`` (N, C, H, W) in ``space``, the reconstruction PSNR, and the decoder that draws them.

    Always a projection with the model's own defaults (which start from the encoder when there
    is one): an interpolation's endpoints should look like the images, so an encoder's one-shot
    answer is refined, unlike ``core.projection.to_latent``, which stops at the encoder. Then, for models
    with ``pivotal_tuning_steps`` (faces; ``tuning``: steps or a config, see ``core.photo_to_latent.project_and_tune``), a private copy of the decoder is tuned to the
    images (``core.pivotal``) and returned: it draws the endpoints as these people, and the frames between them.
    ``weights``: the pixels that count (N or 1, 1, H, W), e.g. face masks; the PSNR is the decoder's, inside them.
    ``should_stop``: checked between steps; a stop ends with the best latents (and decoder copy) so far.
    """
    cfg = ProjectionConfig.for_model(model, space, steps=steps, preview_every=0)
    projected, last = None, None
    for ev in project_and_tune(model, images, cfg, tuning, should_stop, weights=weights, executor=executor):
        if report is not None:
            report(ev.step, ev.steps, ev.psnr, ev.stage)
        projected = ev if ev.stage == "projecting" else projected
        last = ev
    assert projected is not None and projected.done
    if last.stage != "tuning":
        return projected.latent, projected.psnr, model
    return projected.latent, last.psnr, last.model  # the tuned copy's PSNR at the pivots (inside the weights)


class Endpoints(NamedTuple):
    """Two images' latents, the reconstruction PSNR, the decoder that draws them, and (two faces) their colour map."""

    a: torch.Tensor
    b: torch.Tensor
    psnr: float
    decoder: LatentModel
    colour: ColourMatch | None = None  # the walk is fitted on colours matched to each other; frames get theirs back


def image_endpoints(model: LatentModel, plan: InterpolationPlan, images: torch.Tensor, steps: int,
                    report: StepReport | None = None, weights: torch.Tensor | None = None,
                    executor: Executor | None = None,
                    tuning: TuningConfig | int | None = None, should_stop: Callable[[], bool] | None = None) -> Endpoints:
    """A and B from two images (2, C, H, W), projected together as one batch (by ``executor``); also the PSNR and the
    decoder to draw the walk with. ``weights``, ``tuning``: see :func:`image_latents` (aligned faces: their masks, so
    only the faces drive the fit).

    Two faces (``weights`` given) are fitted on photos whose face colours are matched to each other, as Family does
    (core.faces.colour): a walk between a pale and a dark face otherwise flips from one to the other half-way. The
    frames get the photos' colours back by :func:`render_walk` (``Endpoints.colour``); the PSNR is the model's own.
    """
    if len(images) != 2:
        raise ValueError(f"Give exactly two images, not {len(images)}.")
    colour = None
    if weights is not None and images.shape[1] == 3:
        colour = match_to_each_other(images, weights)
        images = colour.apply(images)
    latents, psnr, decoder = image_latents(model, images, plan.space, steps, report, weights, executor, tuning, should_stop)
    return Endpoints(latents[:1], latents[1:], psnr, decoder, colour)


EVEN_OVERSAMPLE = 3  # latents decoded per frame to space a walk's frames evenly by what they show


def render_walk(decoder: LatentModel, plan: InterpolationPlan, a: torch.Tensor, b: torch.Tensor,
                executor: Executor | None = None, colour: ColourMatch | None = None,
                decode: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The walk's latents and frames (N, C, H, W) as ``decoder`` draws them, the photos' colours put back (``colour``).

    A straight line in latent space is not even in what it shows: a decoder can hold a look and then flip hair or
    background within one step. The line is decoded :data:`EVEN_OVERSAMPLE` times more finely and the frames are
    taken at equal steps of the pixel distance travelled, so no frame-to-frame jump stands out (the first and last
    frames stay A and B). ``decode``: the model's ``decode_options``; a model that samples to decode (diffusion: its
    options are not empty) is decoded once per frame, at even steps of the line, as oversampling would cost it dearly.
    """
    executor = executor or LOCAL
    factor = 1 if decode else EVEN_OVERSAMPLE
    dense_plan = dataclasses.replace(plan, frames=(plan.frames - 1) * factor + 1)
    dense = walk(decoder, dense_plan, a, b)
    images = executor.generate(decoder, dense, plan.space, **(decode or {})).cpu()
    t = torch.linspace(0, 1, len(dense))
    steps = (images[1:] - images[:-1]).abs().flatten(1).mean(1)
    travelled = torch.cat([torch.zeros(1), steps.cumsum(0)])
    if float(travelled[-1]) > 0:
        goals = torch.linspace(0, float(travelled[-1]), plan.frames)
        pick = torch.searchsorted(travelled, goals).clamp(max=len(dense) - 1)
        earlier = (pick - 1).clamp(min=0)
        closer = (goals - travelled[earlier]).abs() < (travelled[pick] - goals).abs()
        pick = torch.where(closer, earlier, pick)
        pick[0], pick[-1] = 0, len(dense) - 1
    else:
        pick = torch.linspace(0, len(dense) - 1, plan.frames).round().long()
    frames = images[pick]
    if colour is not None:
        frames = colour.between(t[pick]).undo(frames.to(colour.mean.device)).cpu()
    return dense[pick], frames


def walk(model: LatentModel, plan: InterpolationPlan, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The plan's frames from A to B: with mixing, B is A with the chosen layers of B, so only those layers move."""
    a, b = a.to(model.device), b.to(model.device)
    if plan.layers:
        b = model.mix(a, b, plan.layers, plan.space)
    return path(a, b, plan.frames, plan.method)


def describe(plan: InterpolationPlan) -> str:
    """One line naming the space, the path and the mixing (status lines, CLI output)."""
    mixing = f" (style mixing: {', '.join(plan.mixing)})" if plan.mixing else ""
    return f"{plan.frames} frames in {plan.space} with {plan.method}{mixing}"


# ----- a finished interpolation: what every front end shows and saves ----------------------------------------------
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class InterpolationResult:
    """A walk from A to B, drawn: its latents and frames (N, C, H, W) in [-1, 1] on the CPU, and what its ``.npz`` and
    captions say. ``decoder`` drew the frames: the model itself, or (image endpoints of a face model) its private
    copy tuned to A and B, which is never saved."""

    handle: ModelHandle
    plan: InterpolationPlan
    latents: torch.Tensor
    frames: torch.Tensor
    decoder: LatentModel
    psnr: float | None = None  # image endpoints: how well they were reconstructed
    projection_steps: int = 0  # image endpoints: the projection's steps
    inside_faces: bool = False  # image endpoints: the PSNR is measured inside the face masks
    colours_matched: bool = False  # two faces fitted on colours matched to each other, the frames given theirs back
    stopped: bool = False  # image endpoints: a Stop ended the projection; only A and B as found so far are drawn

    @property
    def tuned(self) -> bool:
        return self.decoder is not self.handle.model

    def latent_fields(self) -> dict:
        """``core.export.save_latent``'s arguments after the path."""
        fields = {"latent": self.latents, "model": self.handle.name, "space": self.plan.space, "method": self.plan.method,
                  "mixing": list(self.plan.mixing), "licence": self.handle.model.card.licence}
        if self.tuned:
            fields["decoder"] = self.decoder.card.name
        return fields

    def summary(self) -> str:
        """One line: frames, space, path and mixing (:func:`describe`)."""
        return describe(self.plan)

    def endpoints_sentence(self) -> str:
        """How image endpoints were made ("" for seeds): projection steps, tuning, PSNR and the colour matching."""
        if self.psnr is None:
            return ""
        tuned = (", then the decoder tuned to both images (pivotal tuning: a private copy draws this walk; it is not "
                 "saved)") if self.tuned else ""
        where = " inside the faces" if self.inside_faces else ""
        matched = (" Fitted on face colours matched to each other; each frame gets its share of both photos' colours "
                   "back.") if self.colours_matched else ""
        return f"Endpoints projected ({self.projection_steps} steps){tuned}; PSNR{where} {self.psnr:.1f} dB.{matched}"


def interpolate_seeds(handle: ModelHandle, plan: InterpolationPlan, seed_a: float | int, seed_b: float | int,
                      executor: Executor | None = None, decode: dict | None = None) -> InterpolationResult:
    """The walk between two seeds' samples (whole numbers), drawn by the model (``decode``: its ``decode_options``)."""
    model = handle.model
    a, b = seed_endpoints(model, plan, whole_number(seed_a, "seed A", 0, MAX_SEED), whole_number(seed_b, "seed B", 0, MAX_SEED))
    latents, frames = render_walk(model, plan, a, b, executor, None, decode)
    return InterpolationResult(handle, plan, latents, frames, model)


def interpolate_images(handle: ModelHandle, plan: InterpolationPlan, images: torch.Tensor, steps: int,
                       report: StepReport | None = None, weights: torch.Tensor | None = None,
                       executor: Executor | None = None, tuning: TuningConfig | int | None = None,
                       decode: dict | None = None, should_stop: Callable[[], bool] | None = None) -> InterpolationResult:
    """The walk between two images (2, C, H, W) at ``handle.model``'s size: endpoints by :func:`image_endpoints`
    (``weights``: face masks), frames by :func:`render_walk` with the decoder the endpoints came with. Stopped
    (``should_stop``), only A and B as found so far are drawn (``stopped``): nothing long runs after a Stop."""
    ends = image_endpoints(handle.model, plan, images, steps, report, weights, executor, tuning, should_stop)
    stopped = should_stop is not None and should_stop()
    drawn = dataclasses.replace(plan, frames=2) if stopped else plan
    latents, frames = render_walk(ends.decoder, drawn, ends.a, ends.b, executor, ends.colour, decode)
    return InterpolationResult(handle, drawn, latents, frames, ends.decoder, ends.psnr, steps, weights is not None,
                               ends.colour is not None, stopped)
