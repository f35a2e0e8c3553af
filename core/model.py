"""The latent-model interface every backend implements.

A backend wraps one generative model and exposes:

* ``card``: a :class:`~core.card.ModelCard` (shown in the UI with the licence);
* ``image_size`` and ``channels``; images follow :mod:`core.images`
  (float (N, C, H, W) in [-1, 1]); ``image_shape`` is (H, W), square (``image_size``) unless the
  model is ``resizable``: a VAE's convolutions work at any size that is a multiple of ``size_multiple``,
  and ``at_size(h, w)`` gives a view of it at one size (same weights, spaces of that size);
* ``spaces``: the latent spaces it offers, by name. An autoencoder offers one
  (``"latent"``); a StyleGAN offers ``"z"``, ``"w"`` and ``"w+"``.
  ``convert`` maps between them where that is possible (z -> w -> w+);
* ``sample(n, seed, space)``: plausible latents, deterministic for a seed;
* ``decode(latents, space)``: differentiable, so projection can back-propagate;
* ``encode(images, space)`` when ``has_encoder``.

Backends implement ``_decode`` (and ``_encode``/``_sample``/``_convert``);
batching, device moves and no-grad inference live here once.

Not every model is a StyleGAN: a space says what it can do (``LatentSpace.can_sample``,
``spatial``); ``core.photo_to_latent.invert`` puts images into a space (by default the encoder and/or Adam of
``core.projection``; a backend with an iterative inversion such as DDIM sets
``iterative_inversion`` and streams its own steps through ``inversion_events``); and
``generate`` reports progress and can be cancelled where decoding is iterative
(``iterative_decode``: diffusion sampling). Statistics over samples are bounded in
memory (``sample_budget``), so a 196,608-d noise latent never asks for 1,000 samples.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from core.card import LatentSpace, ModelCard
from core.datasets import LatentDataset, sample_dataset
from core.device import get_device

if TYPE_CHECKING:
    from core.projection_config import ProjectionConfig, ProjectionEvent

ProgressFn = Callable[[int, int], None]  # (done, total)
CancelFn = Callable[[], bool]  # True: stop at the next step
SAMPLE_BUDGET = 1 << 22  # floats of samples held at once for statistics (16 MB of float32)


class Cancelled(Exception):
    """Iterative decoding was stopped by its ``cancel`` callback (a Stop button)."""


def sample_budget(space: LatentSpace, wanted: int = 1000) -> int:
    """How many samples of ``space`` statistics may use: ``wanted``, fewer for large latents (at least 8)."""
    return int(max(8, min(wanted, SAMPLE_BUDGET // max(1, space.size))))


class LatentModel(ABC):
    card: ModelCard
    image_size: int
    channels: int
    spaces: dict[str, LatentSpace]
    default_space: str
    has_encoder: bool = False
    # Decoder-tuning steps (core.pivotal) that Family runs after projecting the parents by default: a copy of the
    # decoder tuned to the two photos draws them recognisably. 0 where a copy is too big or too slow to tune interactively.
    pivotal_tuning_steps: int = 0
    # Losses that need downloaded weights and that this model projects best with (StyleGAN: LPIPS); the UI
    # offers their download only for such models.
    wanted_losses: tuple[str, ...] = ()
    # True when ``_decode`` is a loop (diffusion sampling) that accepts ``progress`` and ``cancel`` keywords.
    iterative_decode: bool = False
    # True when photos go into the latent space by the backend's own iterative inversion (DDIM inversion), not Adam.
    iterative_inversion: bool = False
    # True when the model works at any (H, W) that are multiples of ``size_multiple`` (a VAE): ``at_size`` makes the
    # view for one size. False: only ``image_size`` squared (a StyleGAN's synthesis network has one output size).
    resizable: bool = False
    size_multiple: int = 1

    def __init__(self) -> None:
        self.device = get_device()

    # ----- what backends implement -------------------------------------------------
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules of this model (moved by :meth:`to`, counted against the memory budget); none by default,
        so a model without parameters (PCA held in plain tensors) needs no dummy module, but then moves its own tensors."""
        return []

    @abstractmethod
    def _sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        """Draw n latents on the CPU with ``generator``; return them and their space."""

    @abstractmethod
    def _decode(self, latents: torch.Tensor, space: str, **kwargs) -> torch.Tensor:
        """latents (on self.device) in ``space`` -> images (N, C, H, W) in [-1, 1]."""

    def _encode(self, images: torch.Tensor, space: str) -> torch.Tensor:
        raise NotImplementedError(f"{self.card.title} has no encoder; use projection by optimisation.")

    def _convert(self, latents: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        """Map latents between spaces; the base class handles w -> w+ broadcasting."""
        s, d = self.spaces[src], self.spaces[dst]
        if d.per_layer and not s.per_layer and s.shape == d.shape[1:]:
            return latents.unsqueeze(1).repeat(1, d.num_layers, 1)
        raise ValueError(f"{self.card.title} cannot map latents from space '{src}' to '{dst}'.")

    def mean_latent(self, space: str | None = None) -> torch.Tensor:
        """A central latent (1, *shape) to start projections from.

        The default is the mean of up to 1000 samples (fewer for large latents, see
        ``sample_budget``); zeros for a space without a prior. Backends with a better
        estimate (StyleGAN's tracked ``w_avg``, zero for a Gaussian) override it.
        """
        space = self.check_space(space)
        sp = self.spaces[space]
        if not sp.can_sample:
            return torch.zeros(1, *sp.shape, device=self.device)
        with torch.no_grad():
            return self.sample(sample_budget(sp), seed=0, space=space).mean(0, keepdim=True)

    def inversion_events(self, images: torch.Tensor, cfg: ProjectionConfig,
                         should_stop: CancelFn | None = None) -> Iterator[ProjectionEvent]:
        """The backend's own inversion as projection events (used when ``iterative_inversion``)."""
        raise NotImplementedError(f"{self.card.title} has no iterative inversion.")

    def decode_options(self, steps: float | None = None, inverted: bool = False) -> dict:
        """Keyword arguments for ``generate`` saying how to decode, where a model has such choices (empty otherwise).

        ``steps``: sampling steps of an iterative decoder (None: its default). ``inverted``: the latents came from
        inverting images (projection), not from the prior, so decode them as the mirror of that inversion (DDIM:
        without clipping, which would spoil the round trip); fresh samples are decoded the clean way.
        """
        return {}

    def blend(self, a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Mix two latents with weight ``alpha`` on ``b`` (broadcast): linear here; a Gaussian space may slerp."""
        return torch.lerp(a, b, alpha.to(a.dtype))

    def projection_defaults(self, space: str) -> dict:
        """ProjectionConfig fields this model projects best with (learning rate, noise...)."""
        return {}

    def edit_space(self) -> str:
        """The space to project photos into and edit them in (Projection, Family): the most expressive one.

        A per-layer space (StyleGAN's W+) reconstructs photos best and allows per-layer mixing; other
        models use their default space. Backends with a better choice override this.
        """
        return next((name for name, s in self.spaces.items() if s.per_layer), self.default_space)

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(H, W) of the per-call noise inputs ``decode(..., noise=[...])`` takes (StyleGAN2); none by default."""
        return []

    def directions(self) -> list:
        """Named latent directions shipped with the model (``core.direction.Direction``), e.g. age, gender."""
        return []

    def datasets(self) -> dict[str, Callable[[], LatentDataset]]:
        """Labelled latent sets for the latent map, by name (built lazily).

        Every model offers fresh samples; backends add their training data.
        """
        sp = self.spaces[self.default_space]
        if not sp.can_sample:
            return {}
        n = sample_budget(sp)
        return {f"samples ({n})": lambda: sample_dataset(self, n)}

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the images this model takes and makes: ``image_size`` squared unless a resized view says otherwise."""
        return getattr(self, "_shape", None) or (self.image_size, self.image_size)

    def at_size(self, height: int, width: int) -> LatentModel:
        """This model working on ``height`` x ``width`` images: itself at its own size; for a ``resizable`` model a view
        sharing its weights whose latent spaces have that size's shape (``_resized``); a plain ValueError otherwise."""
        height, width = int(height), int(width)
        if (height, width) == self.image_shape:
            return self
        if not self.resizable:
            h, w = self.image_shape
            raise ValueError(f"{self.card.title} works on {w}×{h} images only; got {width}×{height}.")
        f = self.size_multiple
        if height < f or width < f or height % f or width % f:
            raise ValueError(f"{self.card.title} needs image sides that are multiples of {f} (at least {f}); "
                             f"got {width}×{height}.")
        view = copy.copy(self)  # shares the modules and the device; only the size and the spaces differ
        view._shape = (height, width)
        view.image_size = max(height, width)  # a view's one number for its size: the longer side (image_shape is exact)
        view.spaces = self._resized(height, width)
        return view

    def _resized(self, height: int, width: int) -> dict[str, LatentSpace]:
        """The latent spaces at ``height`` x ``width`` (resizable backends implement it)."""
        raise NotImplementedError(f"{self.card.title} has one image size.")

    # ----- shared behaviour -------------------------------------------------------
    def check_space(self, space: str | None) -> str:
        space = space or self.default_space
        if space not in self.spaces:
            raise ValueError(f"{self.card.title} has no latent space '{space}' (it offers: {', '.join(self.spaces)}).")
        return space

    def check_latents(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        shape = self.spaces[space].shape
        if latents.ndim == len(shape):
            latents = latents.unsqueeze(0)
        if tuple(latents.shape[1:]) != tuple(shape):
            raise ValueError(
                f"Latents of shape {tuple(latents.shape[1:])} do not fit space '{space}' of "
                f"{self.card.title}, which expects {tuple(shape)}."
            )
        return latents.to(self.device, torch.float32)

    def to(self, device: str | torch.device) -> LatentModel:
        self.device = torch.device(device)
        for m in self.modules():
            m.to(self.device)
        return self

    def sample(self, n: int, seed: int | None = 0, space: str | None = None) -> torch.Tensor:
        """n plausible latents in ``space`` (default: the model's default space).

        Drawn on the CPU so the same seed gives the same latents on any device.
        """
        space = self.check_space(space)
        if not self.spaces[space].can_sample:
            raise ValueError(f"{self.card.title} has no prior to sample its space '{space}' from: start from images instead.")
        g = torch.Generator().manual_seed(int(seed) if seed is not None else torch.seed())
        latents, src = self._sample(int(n), g)
        latents = latents.to(self.device)
        return latents if src == space else self.convert(latents, src, space)

    def convert(self, latents: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        src, dst = self.check_space(src), self.check_space(dst)
        latents = self.check_latents(latents, src)
        return latents if src == dst else self._convert(latents, src, dst)

    def decode(self, latents: torch.Tensor, space: str | None = None, **kwargs) -> torch.Tensor:
        """Differentiable decode of latents in ``space``."""
        space = self.check_space(space)
        return self._decode(self.check_latents(latents, space), space, **kwargs)

    def encode(self, images: torch.Tensor, space: str | None = None) -> torch.Tensor:
        space = self.check_space(space)
        if not self.has_encoder:
            raise NotImplementedError(f"{self.card.title} has no encoder; use projection by optimisation.")
        images = images.to(self.device, torch.float32)
        if images.shape[1:] != (self.channels, *self.image_shape):
            raise ValueError(
                f"{self.card.title} takes images of shape {(self.channels, *self.image_shape)}, "
                f"got {tuple(images.shape[1:])}."
            )
        return self._encode(images, space)

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, space: str | None = None, batch_size: int = 16,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None, **kwargs) -> torch.Tensor:
        """Inference-only decode in batches; returns images on the CPU.

        ``progress(done, total)`` counts images, or sampling steps of all batches for an iterative
        decoder; ``cancel()`` returning True raises :class:`Cancelled` at the next batch (or step).
        """
        space = self.check_space(space)
        latents = self.check_latents(latents, space)
        out = []
        batches = range(0, len(latents), batch_size)
        for k, i in enumerate(batches):
            if cancel is not None and cancel():
                raise Cancelled(f"Stopped after {i} of {len(latents)} images.")
            chunk = latents[i : i + batch_size]
            if self.iterative_decode:
                def report(done: int, total: int, k=k) -> None:
                    if progress is not None:
                        progress(k * total + done, total * len(batches))

                out.append(self._decode(chunk, space, progress=report, cancel=cancel, **kwargs).cpu())
            else:
                out.append(self._decode(chunk, space, **kwargs).cpu())
                if progress is not None:
                    progress(i + len(chunk), len(latents))
        return torch.cat(out) if out else torch.empty(0, self.channels, *self.image_shape)

    @torch.no_grad()
    def encode_batched(self, images: torch.Tensor, space: str | None = None, batch_size: int = 64) -> torch.Tensor:
        parts = [self.encode(images[i : i + batch_size], space).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(parts)

    # ----- per-layer (style) mixing ---------------------------------------------------
    def layer_groups(self, space: str | None = None) -> dict[str, list[int]]:
        """Coarse / middle / fine layer indices of a per-layer space (empty if none).

        Split as in the StyleGAN paper for 1024 px (4-8, 16-32, 64-1024 px, i.e.
        layers 0-3, 4-7, 8+), scaled to the number of layers this model has.
        """
        space = self.check_space(space)
        n = self.spaces[space].num_layers
        if n == 0:
            return {}
        a, b = max(1, round(n * 4 / 18)), max(2, round(n * 8 / 18))
        return {"coarse": list(range(0, a)), "middle": list(range(a, b)), "fine": list(range(b, n))}

    def mix(self, a: torch.Tensor, b: torch.Tensor, layers_from_b: Sequence[int], space: str | None = None) -> torch.Tensor:
        """Style mixing: ``a`` with the listed layers taken from ``b`` (per-layer space)."""
        space = self.check_space(space)
        if not self.spaces[space].per_layer:
            raise ValueError(f"Style mixing needs a per-layer space; '{space}' is not one.")
        a, b = self.check_latents(a, space), self.check_latents(b, space)
        out = a.clone()
        idx = list(layers_from_b)
        out[:, idx] = b.expand_as(a)[:, idx]
        return out
