"""Heavy model work on a Ray Serve deployment: ``python app.py --ray ADDRESS --ray-replicas N``.

:class:`RayExecutor` implements ``core.executor.Executor``: the front-end (Gradio, sessions, files) stays in
this process, and projection, decoding and encoding run on N replicas of one Ray Serve deployment
(``ModelWorker``), one GPU each when the cluster has GPUs. Replicas load models by registry name through the
same plugins, so only a model name, latents, target tensors and a ``ProjectionConfig`` go out, and events,
latents and images come back. Decoding requests from many users are grouped by ``@serve.batch``.

Why here and not in ``core``: ``core`` must import with torch and numpy alone, and a replica needs the plugin
registry (``plugins``), which ``core`` never imports. ``demos`` is where the app is put together (the app
context, the CLI), and this is a choice of how to run it, like ``--device``.

Stop: the projection stream cannot be interrupted between yields from outside, so a Stop (or a client that went
away) sets the job's flag in a small ``StopBoard`` actor; the replica polls it without waiting at every step and
finishes like ``core.projection.project`` with ``should_stop``: a final event with the best latent so far.
Models the replicas do not have (a ``.pkl`` a visitor uploaded to this front-end) run in this process.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from core.executor import LOCAL
from core.model import LatentModel
from core.projection import ProjectionConfig, ProjectionEvent

APP_NAME = "latent_lab_models"
ROOT = Path(__file__).resolve().parent.parent  # the project, which replicas import (same path on every node)


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise RuntimeError("--ray needs Ray Serve: pip install -r requirements-ray.txt") from e
    return ray, serve


def _worker_class():
    """The deployment class (defined on first use, so importing this module needs no Ray)."""
    import asyncio

    ray, serve = _ray()

    class _StopPoll:
        """``should_stop`` for a replica: asks the board without waiting; True once the job's flag is set."""

        def __init__(self, board, job: str) -> None:
            self.board, self.job = board, job
            self.ref = board.is_set.remote(job)

        def __call__(self) -> bool:
            ready, _ = ray.wait([self.ref], timeout=0)
            if not ready:
                return False
            if ray.get(self.ref):
                return True
            self.ref = self.board.is_set.remote(self.job)
            return False

    class ModelWorker:
        """One replica: a plugin registry of its own; models loaded by name on first use."""

        def __init__(self, plugins_dir: str | None, board) -> None:
            from plugins.registry import Registry

            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
            self.registry = Registry().discover(plugins_dir)
            self.board = board
            self.largest_batch = 0  # decode requests grouped into one call by @serve.batch (bench.ray_executor)

        def stats(self) -> dict:
            from core.device import get_device

            return {"largest_batch": self.largest_batch, "device": str(get_device())}

        def names(self) -> list[str]:
            return [n for n in self.registry.names() if self.registry.status(n) != "not downloaded"]

        def project(self, name: str, target: torch.Tensor, config: ProjectionConfig, job: str,
                    weights: torch.Tensor | None = None) -> Iterator[ProjectionEvent]:
            from core.projection import project

            try:
                yield from project(self.registry.get(name), target, config, should_stop=_StopPoll(self.board, job), weights=weights)
            finally:
                self.board.clear.remote(job)

        def encode(self, name: str, images: torch.Tensor, space: str) -> torch.Tensor:
            return LOCAL.encode(self.registry.get(name), images, space)

        async def generate(self, name: str, latents: torch.Tensor, space: str, decode_kw: dict | None = None) -> torch.Tensor:
            return await self._generate_batch((name, latents, space, decode_kw or {}))

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def _generate_batch(self, requests: list[tuple[str, torch.Tensor, str, dict]]) -> list[torch.Tensor]:
            """Requests for the same model, space and decode options decoded as one batch (in a thread: the loop keeps
            serving)."""
            return await asyncio.to_thread(self._generate_many, requests)

        def _generate_many(self, requests: list[tuple[str, torch.Tensor, str, dict]]) -> list[torch.Tensor]:
            out: list[torch.Tensor | None] = [None] * len(requests)
            self.largest_batch = max(self.largest_batch, len(requests))
            groups: dict[tuple, list[int]] = {}
            for i, (name, _, space, kw) in enumerate(requests):
                groups.setdefault((name, space, tuple(sorted(kw.items()))), []).append(i)
            for (name, space, kw), idx in groups.items():
                images = self.registry.get(name).generate(torch.cat([requests[i][1] for i in idx]), space, **dict(kw))
                for i, part in zip(idx, images.split([len(requests[i][1]) for i in idx]), strict=True):
                    out[i] = part
            return out

    return ModelWorker


def _stop_board_class():
    ray, _ = _ray()

    @ray.remote(num_cpus=0)
    class StopBoard:
        """Stop flags of running projections, by job id (a front-end sets, the replica polls and clears)."""

        def __init__(self) -> None:
            self.jobs: set[str] = set()

        def set(self, job: str) -> None:
            self.jobs.add(job)

        def is_set(self, job: str) -> bool:
            return job in self.jobs

        def clear(self, job: str) -> None:
            self.jobs.discard(job)

        def pending(self) -> int:
            """Jobs asked to stop that have not ended yet."""
            return len(self.jobs)

    return StopBoard


class RayExecutor:
    """``core.executor.Executor`` on a Ray Serve deployment of ``replicas`` model workers.

    ``address``: ``auto`` (the cluster this machine belongs to, ``ray start``), ``ray://HEAD:10001`` (Ray Client),
    ``local`` (start a Ray on this machine), or a Ray already initialised by the caller (tests) is used as it is.
    ``num_gpus`` per replica defaults to 1 when the cluster has GPUs, else 0; ``num_cpus`` to 1.
    """

    def __init__(self, address: str = "auto", replicas: int = 1, plugins_dir: str | None = None,
                 num_cpus: float | None = None, num_gpus: float | None = None) -> None:
        if replicas < 1:
            raise ValueError(f"--ray-replicas must be at least 1, got {replicas}.")
        ray, serve = _ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            env = {"PYTHONPATH": str(ROOT)}
            if os.environ.get("LATENT_LAB_CACHE"):
                env["LATENT_LAB_CACHE"] = os.environ["LATENT_LAB_CACHE"]
            try:
                ray.init(address=None if address == "local" else address, include_dashboard=False if address == "local" else None,
                         runtime_env={"env_vars": env}, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RuntimeError(f"Could not connect to Ray at '{address}': {e}") from e
        if num_gpus is None:
            num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        serve.start(proxy_location="Disabled")
        # Detached: the workers poll it, and they outlive the front-end that deployed them.
        self.board = _stop_board_class().options(name=f"{APP_NAME}_stops", get_if_exists=True, lifetime="detached").remote()
        # Another front-end already deployed the workers: share them (front-ends and workers scale apart).
        self._owns_deployment = APP_NAME not in serve.status().applications
        if self._owns_deployment:
            worker = serve.deployment(_worker_class(), name="ModelWorker", num_replicas=replicas, max_ongoing_requests=8,
                                      ray_actor_options={"num_cpus": 1 if num_cpus is None else num_cpus, "num_gpus": num_gpus})
            plugins = str(Path(plugins_dir).resolve()) if plugins_dir else None
            self.handle = serve.run(worker.bind(plugins, self.board), name=APP_NAME, route_prefix=None)
        else:
            print(f"Using the Ray Serve deployment '{APP_NAME}' already running on the cluster (--ray-replicas is its own).",
                  file=sys.stderr)
            self.handle = serve.get_app_handle(APP_NAME)
        self._stream = self.handle.options(stream=True)
        self.remote_names = set(self.handle.names.remote().result())
        self.replicas, self.num_gpus = replicas, num_gpus

    def _name(self, model: LatentModel) -> str | None:
        """The registry name the replicas know this model by; None: run it here."""
        name = model.card.name
        return name if name in self.remote_names else None

    def project(self, model: LatentModel, target: torch.Tensor, config: ProjectionConfig,
                should_stop: Callable[[], bool] | None = None, weights: torch.Tensor | None = None) -> Iterator[ProjectionEvent]:
        name = self._name(model)
        if name is None:
            yield from LOCAL.project(model, target, config, should_stop, weights)
            return
        job = uuid.uuid4().hex
        w = None if weights is None else torch.as_tensor(weights).detach().cpu()
        stream = self._stream.project.remote(name, target.detach().cpu(), config, job, w)
        asked, done = False, False
        try:
            for ev in _plain_errors(stream):
                if not asked and should_stop is not None and should_stop():
                    self.board.set.remote(job)
                    asked = True
                done = ev.done
                yield ev
        except GeneratorExit:  # the caller went away (client disconnected): stop the replica's work too
            if not done:
                self.board.set.remote(job)
                stream.cancel()
            raise

    def generate(self, model: LatentModel, latents: torch.Tensor, space: str | None = None, **decode_kw) -> torch.Tensor:
        name = self._name(model)
        if name is None:
            return LOCAL.generate(model, latents, space, **decode_kw)
        space = model.check_space(space)
        return _result(self.handle.generate.remote(name, model.check_latents(latents, space).detach().cpu(), space, decode_kw))

    def encode(self, model: LatentModel, images: torch.Tensor, space: str | None = None) -> torch.Tensor:
        name = self._name(model)
        if name is None:
            return LOCAL.encode(model, images, space)
        return _result(self.handle.encode.remote(name, images.detach().cpu(), model.check_space(space)))

    def close(self) -> None:
        """Remove the deployment if this executor made it (and stop Ray if it started it); safe to call twice."""
        if self.handle is None:
            return
        ray, serve = _ray()
        self.handle = None
        try:
            if self._owns_deployment:  # a deployment shared with other front-ends stays for them
                serve.delete(APP_NAME)
                ray.kill(self.board)
            if self._owns_ray:
                serve.shutdown()
                ray.shutdown()
        except Exception as e:  # stopping must not fail the app's own clean-up
            print(f"warning: stopping the Ray deployment: {e}", file=sys.stderr)


def _cause(e: Exception) -> Exception:
    """A replica's exception as raised there (Ray wraps it with the remote traceback)."""
    return getattr(e, "cause", None) or e


def _result(response):
    try:
        return response.result()
    except Exception as e:
        cause = _cause(e)
        if isinstance(cause, ValueError | KeyError):
            raise type(cause)(*cause.args) from None  # the user's mistake: the plain message, not a remote traceback
        raise


def _plain_errors(stream) -> Iterator:
    try:
        yield from stream
    except Exception as e:
        cause = _cause(e)
        if isinstance(cause, ValueError | KeyError):
            raise type(cause)(*cause.args) from None
        raise
