"""Where heavy model work runs: one small interface, in-process by default.

Projection, pivotal tuning of a private decoder copy (``tune``), batched decoding (``generate``), encoding, a model's
map datasets (``dataset``) and the latent map's PCA / UMAP / t-SNE fit (``latent_map``) go through an :class:`Executor`, so the app's
front-end (Gradio, sessions, files) and the model work can scale apart: :class:`LocalExecutor` runs them in
this process; ``demos.ray_executor.RayExecutor`` runs them on a Ray Serve deployment of model replicas on
other machines (GPUs). Models are named by their registry name (``model.card.name``), so only that name,
latents, target tensors and small settings cross the wire; a replica loads the model through the same plugins.

Kept free of Gradio and Ray: workflows in ``core`` take an executor argument defaulting to :data:`LOCAL`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from core import pivotal, projection
from core.datasets import LatentDataset
from core.latent_map import LatentMap, reduce
from core.model import LatentModel
from core.pivotal import TuningConfig, TuningEvent
from core.projection import ProjectionConfig, ProjectionEvent


@runtime_checkable
class Executor(Protocol):
    """Heavy work on a model; the model object is passed for its name (remote) or used directly (local)."""

    def project(self, model: LatentModel, target: torch.Tensor, config: ProjectionConfig,
                should_stop: Callable[[], bool] | None = None, weights: torch.Tensor | None = None) -> Iterator[ProjectionEvent]:
        """``core.projection.project``: one event per step, a final ``done`` event (``stopped`` if asked to stop);
        ``weights``: the pixels that count (face masks)."""
        ...

    def tune(self, model: LatentModel, latents: torch.Tensor, targets: torch.Tensor, space: str,
             weights: torch.Tensor | None = None, config: TuningConfig | None = None,
             should_stop: Callable[[], bool] | None = None) -> Iterator[TuningEvent]:
        """``core.pivotal.tune_decoder``: one event per step, then a final ``done`` event holding the tuned copy
        (``.model``, returned to the caller: it decodes the copy's pictures itself)."""
        ...

    def generate(self, model: LatentModel, latents: torch.Tensor, space: str | None = None, **decode_kw) -> torch.Tensor:
        """``LatentModel.generate``: images (N, C, H, W) in [-1, 1] on the CPU; ``decode_kw``: the model's
        ``decode_options`` (DDIM steps, clipping)."""
        ...

    def encode(self, model: LatentModel, images: torch.Tensor, space: str | None = None) -> torch.Tensor:
        """``LatentModel.encode_batched``: latents on the CPU (models with an encoder)."""
        ...

    def dataset(self, model: LatentModel, name: str) -> LatentDataset:
        """``model.datasets()[name]()``: a labelled latent set for the map (building it may encode images);
        a KeyError for a name the model does not offer."""
        ...

    def latent_map(self, latents: np.ndarray, method: str = "pca", dims: int = 2, seed: int = 0) -> LatentMap:
        """``core.latent_map.reduce``: the PCA / UMAP / t-SNE fit of a dataset's latents (seconds to a minute)."""
        ...

    def close(self) -> None:
        """Release what the executor holds (connections, deployments)."""
        ...


class LocalExecutor:
    """Everything in this process, on the model object given: exactly the functions it wraps."""

    def project(self, model: LatentModel, target: torch.Tensor, config: ProjectionConfig,
                should_stop: Callable[[], bool] | None = None, weights: torch.Tensor | None = None) -> Iterator[ProjectionEvent]:
        return projection.project(model, target, config, should_stop, weights)  # looked up per call (tests patch it)

    def tune(self, model: LatentModel, latents: torch.Tensor, targets: torch.Tensor, space: str,
             weights: torch.Tensor | None = None, config: TuningConfig | None = None,
             should_stop: Callable[[], bool] | None = None) -> Iterator[TuningEvent]:
        return pivotal.tune_decoder(model, latents, targets, space, weights, config, should_stop)

    def generate(self, model: LatentModel, latents: torch.Tensor, space: str | None = None, **decode_kw) -> torch.Tensor:
        return model.generate(latents, space, **decode_kw)

    def encode(self, model: LatentModel, images: torch.Tensor, space: str | None = None) -> torch.Tensor:
        return model.encode_batched(images, space)

    def dataset(self, model: LatentModel, name: str) -> LatentDataset:
        makers = model.datasets()
        if name not in makers:
            raise KeyError(f"{model.card.title} has no dataset '{name}'.")
        return makers[name]()

    def latent_map(self, latents: np.ndarray, method: str = "pca", dims: int = 2, seed: int = 0) -> LatentMap:
        return reduce(latents, method, dims, seed)

    def close(self) -> None:
        pass


LOCAL = LocalExecutor()
