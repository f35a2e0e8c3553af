"""One model as the workflows see it: its registered name, its tags and the loaded object, carried together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.tags import FACES

if TYPE_CHECKING:  # a handle is made at start-up paths that must not load torch
    from core.model import LatentModel


class NotAFaceModelError(ValueError):
    """A face-only workflow (Family, face alignment on request) was given a model not tagged FACES."""


@dataclass(frozen=True)
class ModelHandle:
    """``name``: the registry name written into every ``.npz`` and caption; ``tags``: what its plugin says it is
    about (``core.tags``); ``model``: the loaded object (a resized view of it is still the same model)."""

    name: str
    tags: tuple[str, ...]
    model: LatentModel

    @property
    def is_face_model(self) -> bool:
        return FACES in self.tags

    @property
    def title(self) -> str:
        return self.model.card.title

    def require_faces(self, workflow: str) -> None:
        """Refuse a face-only ``workflow`` for a model that is not a face model: the one sentence every front end shows."""
        if not self.is_face_model:
            raise NotAFaceModelError(face_model_refusal(self.title, workflow))


def face_model_refusal(title: str, workflow: str) -> str:
    """The sentence for a face-only workflow asked of another model (also said before a model is loaded)."""
    return (f"{title} is not a face model; {workflow} needs one (e.g. small_ae/faces or a StyleGAN FFHQ model such as "
            "stylegan2/ffhq-256).")
