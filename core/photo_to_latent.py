"""Photos in, latents out: projection, then pivotal tuning of a private decoder copy, with each model's defaults.

The engines below (``core.projection``, ``core.pivotal``) know nothing of each other; this module chains them, and the
executor (``core.executor``) runs each engine here or on a remote replica. Front ends and the workflows above
(Projection, Interpolation, Family) come here for "put these photos in, faithfully".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from core.executor import LOCAL, Executor
from core.model import CancelFn, LatentModel, ProgressFn
from core.pivotal import TuningConfig, TuningEvent
from core.projection import ProjectionConfig, ProjectionEvent, project

TWO_PIVOT_PATH = 3.0  # the path term used when tuning to two photos (Family's parents, Interpolation's endpoints)
# Tuning steps for two photos, as a multiple of the model's pivotal_tuning_steps: the path term shares the decoder's
# capacity with the two pivots, so they need more steps to come back as themselves (docs/benchmarks.md, Family).
TWO_PIVOT_STEPS = 1.5
# Prior samples per step of the locality term for two photos: the path term's children already hold the decoder to
# the base model around the pair, so fewer are needed there, and each step stays cheap.
TWO_PIVOT_LOCALITY = 2


def default_tuning(model: LatentModel, photos: int, loss: str, steps: int | None = None) -> TuningConfig:
    """The tuning every face workflow uses: the model's ``pivotal_tuning_steps`` (or ``steps``), and for two photos
    (Family's parents, Interpolation's endpoints) the path term between them, so blends of the two stay one face,
    with :data:`TWO_PIVOT_STEPS` times the steps by default and :data:`TWO_PIVOT_LOCALITY` prior samples."""
    if steps is None:
        steps = round(model.pivotal_tuning_steps * (TWO_PIVOT_STEPS if photos == 2 else 1))
    if photos == 2:
        return TuningConfig(steps=int(steps), loss=loss, path=TWO_PIVOT_PATH, locality_samples=TWO_PIVOT_LOCALITY)
    return TuningConfig(steps=int(steps), loss=loss)


def project_and_tune(model: LatentModel, target: torch.Tensor, config: ProjectionConfig,
                     tuning: TuningConfig | int | None = None, should_stop: Callable[[], bool] | None = None,
                     weights: torch.Tensor | None = None,
                     executor: Executor | None = None) -> Iterator[ProjectionEvent | TuningEvent]:
    """Projection, then pivotal tuning at the latents found: the one path for "put these photos in, faithfully".

    Yields ``core.projection.project``'s events, then ``core.pivotal.tune_decoder``'s, whose final event holds the
    tuned copy (both run by ``executor``, default here; the projection's final ``done`` event included). ``tuning``:
    None for :func:`default_tuning` with the projection's loss, a number for the same with that many steps (the UI's
    and CLI's setting), or a whole TuningConfig; nothing is tuned when its steps are 0 or the projection was stopped,
    so the projection's final event is then the last.
    """
    executor = executor or LOCAL
    if not isinstance(tuning, TuningConfig):
        tuning = default_tuning(model, len(target), config.loss, tuning)
    if tuning.steps < 0:
        raise ValueError("The number of decoder-tuning steps cannot be negative.")
    final = None
    for ev in executor.project(model, target, config, should_stop, weights):
        final = ev
        yield ev
    if tuning.steps == 0 or final is None or final.stopped:
        return
    yield from executor.tune(model, final.latent, target, final.space, weights, tuning, should_stop)


def invert(model: LatentModel, images: torch.Tensor, space: str | None = None, steps: int = 200,
           progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> torch.Tensor:
    """Latents (N, *shape) on the CPU whose decoding reproduces ``images`` (N, C, H, W), without tuning.

    One call for every backend: the encoder and/or Adam of ``core.projection`` with the model's defaults, or the
    backend's iterative inversion (``inversion_events``). ``progress(step, steps)`` sees every step; ``cancel()``
    returning True ends it early with the best latent so far.
    """
    cfg = ProjectionConfig.for_model(model, model.check_space(space), steps=steps, preview_every=0)
    final = None
    for ev in project(model, images, cfg, should_stop=cancel):
        if progress is not None and not ev.done:
            progress(ev.step, ev.steps)
        final = ev
    if final is None:
        raise ValueError("The inversion made no step.")
    return final.latent
