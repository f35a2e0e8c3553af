"""A finished projection as one value: what the picture is, how good it is, and what its ``.npz`` and captions say.

Projection (then, for faces, pivotal tuning) ends in the same facts for every front end: the drawing shown (the tuned
decoder's when there is one, else the projection's), its PSNR, for an aligned face the identity distance to the photo
and a composite for display, and the latent's metadata. :func:`finish_projection` works them out once; the tab and the
CLI only turn them into files and sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.faces.identity import default_identity, verdict
from core.faces.mask import composite
from core.handle import ModelHandle
from core.image_input import ModelInput
from core.images import from_pil, to_pil
from core.pivotal import TuningEvent
from core.projection import ProjectionEvent


@dataclass(frozen=True)
class ProjectionOutcome:
    """``projected``: the projection's final event; ``tuned``: the tuning's final event, or None when the decoder was
    not tuned. Images are (1, C, H, W) in [-1, 1] on the CPU."""

    name: str  # the model's registry name, as written into the .npz
    licence: str
    projected: ProjectionEvent
    tuned: TuningEvent | None
    shown: torch.Tensor  # the result's drawing: the tuned decoder's, else the projection's
    composite: torch.Tensor | None = None  # aligned faces: the drawing pasted into the photo's crop (display only)
    identity: float | None = None  # aligned faces: descriptor distance photo -> shown drawing
    projection_identity: float | None = None  # with tuning: the same for the projection alone

    @property
    def psnr(self) -> float:
        return self.projected.psnr if self.tuned is None else self.tuned.psnr

    @property
    def projection_alone(self) -> torch.Tensor | None:
        """What the latent draws with the model itself, when the result was drawn by a tuned decoder."""
        return None if self.tuned is None else self.projected.preview

    @property
    def tuning_stopped(self) -> bool:
        return self.tuned is not None and self.tuned.step < self.tuned.steps

    @property
    def inside_face(self) -> bool:
        """The PSNR was measured inside the face mask (an aligned face)."""
        return self.composite is not None

    def latent_fields(self) -> dict:
        """``core.export.save_latent``'s arguments after the path: the latent, where it belongs, and how good it is."""
        ev = self.projected
        fields = {"latent": ev.latent, "model": self.name, "space": ev.space, "noise": ev.noise,
                  "psnr": round(self.psnr, 3), "loss": ev.loss, "loss_name": ev.loss_name, "steps": ev.step,
                  "stopped": ev.stopped, "licence": self.licence}
        if self.tuned is not None:
            fields.update(decoder=self.tuned.model.card.name, projection_psnr=round(ev.psnr, 3))
        if self.identity is not None:
            fields["identity_distance"] = round(self.identity, 4)
        if self.projection_identity is not None:
            fields["projection_identity_distance"] = round(self.projection_identity, 4)
        return fields

    def identity_sentence(self) -> str:
        """The identity verdict(s) for an aligned face ("" otherwise): with tuning, the projection's and the result's."""
        if self.identity is None:
            return ""
        if self.projection_identity is None:
            return verdict(self.identity)
        return f"projection alone: {verdict(self.projection_identity)}; with the tuned decoder: {verdict(self.identity)}"

    def tuning_sentence(self) -> str:
        """What tuning did ("" without it): steps, PSNR against the projection's, and that the copy is not saved."""
        if self.tuned is None:
            return ""
        stopped = f", stopped at step {self.tuned.step}" if self.tuning_stopped else ""
        return (f"The decoder was then tuned to this photo ({self.tuned.steps} steps{stopped}; pivotal tuning: a private "
                f"copy, kept only for this result): PSNR {self.psnr:.2f} dB (projection alone {self.projected.psnr:.2f} "
                "dB). The .npz latent draws the projection alone with the model itself; the tuned decoder is not saved.")


def finish_projection(handle: ModelHandle, inp: ModelInput, projected: ProjectionEvent,
                      tuned: TuningEvent | None = None) -> ProjectionOutcome:
    """The outcome of projecting ``inp`` (what the model saw of the photo) with ``handle``'s model: ``projected`` is the
    projection's final event (it carries a preview), ``tuned`` the tuning's final event when the decoder was tuned."""
    if projected.preview is None or (tuned is not None and tuned.preview is None):
        raise ValueError("A finished projection needs the final events, which carry the drawings.")
    shown = projected.preview if tuned is None else tuned.preview
    outcome = ProjectionOutcome(handle.name, handle.model.card.licence, projected, tuned, shown)
    if inp.reference is None:
        return outcome
    identity = default_identity()
    target = from_pil(inp.image, shown.shape[1])
    return ProjectionOutcome(
        handle.name, handle.model.card.licence, projected, tuned, shown,
        composite=composite(shown, target, inp.mask),
        identity=identity.distance(inp.reference, to_pil(shown)[0]),
        projection_identity=None if tuned is None else identity.distance(inp.reference, to_pil(projected.preview)[0]),
    )
