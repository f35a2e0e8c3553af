"""Heavy model work on a Ray Serve deployment: ``python app.py --ray ADDRESS --ray-replicas N``.

:class:`RayExecutor` implements ``core.executor.Executor``: the front-end (Gradio, sessions, files) stays in
this process, and projection, decoding, encoding and the latent map's datasets and fits run on N replicas of one Ray Serve deployment
(``ModelWorker``), one GPU each when the cluster has GPUs. Replicas load models by registry name through the
same plugins, so only a model name, latents, target tensors and a ``ProjectionConfig`` go out, and events,
latents and images come back (and, after pivotal tuning, the tuned copy of the model, which the front-end decodes
with). Decoding requests from many users are grouped by ``@serve.batch``.

Why here and not in ``core``: ``core`` must import with torch and numpy alone, and a replica needs the plugin
registry (``plugins``), which ``core`` never imports. ``demos`` is where the app is put together (the app
context, the CLI), and this is a choice of how to run it, like ``--device``.

Stop: the projection stream cannot be interrupted between yields from outside, so a Stop (or a client that went
away) sets the job's flag in a small ``StopBoard`` actor; the replica polls it without waiting at every step and
finishes like ``core.projection.project`` with ``should_stop``: a final event with the best latent so far.
Models the replicas do not have (a ``.pkl`` a visitor uploaded to this front-end) run in this process.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from core.datasets import LatentDataset
from core.executor import LOCAL
from core.latent_map import LatentMap
from core.model import LatentModel
from core.projection import ProjectionConfig, ProjectionEvent

APP_NAME = "latent_lab_models"
MAX_DATASETS = 4  # map datasets a replica keeps (least recently built dropped first), like the front-end's
ROOT = Path(__file__).resolve().parent.parent  # the project, which replicas import (same path on every node)


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise RuntimeError("--ray needs Ray Serve: pip install -r requirements-ray.txt") from e
    return ray, serve


def _worker_class():
    """The deployment class (defined on first use, so importing this module needs no Ray). Over 80 lines because the
    class body is the replica's whole protocol (jobs, polling, stop flags), and a class body cannot be split out of
    the function that defines it on first use."""
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

        def __init__(self, plugins_dir: str | None, board, max_bytes: int | None = None) -> None:
            from plugins.registry import Registry

            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
            self.registry = Registry(max_bytes=max_bytes).discover(plugins_dir)  # the front-end's --max-model-memory
            self.board = board
            self.largest_batch = 0  # decode requests grouped into one call by @serve.batch (bench.ray_executor)
            self.datasets: dict[tuple[str, str], LatentDataset] = {}  # the map's datasets built here (MAX_DATASETS)
            self.datasets_lock = threading.Lock()

        def stats(self) -> dict:
            from core.device import get_device

            return {"largest_batch": self.largest_batch, "device": str(get_device())}

        def names(self) -> list[str]:
            return [n for n in self.registry.names() if self.registry.status(n) != "not downloaded"]

        def project(self, name: str, target: torch.Tensor, config: ProjectionConfig, job: str,
                    weights: torch.Tensor | None = None) -> Iterator[ProjectionEvent]:
            from core.projection import project

            try:
                model = self.registry.get(name).at_size(*target.shape[-2:])  # a VAE at the photo's size
                yield from project(model, target, config, should_stop=_StopPoll(self.board, job), weights=weights)
            finally:
                self.board.clear.remote(job)

        def tune(self, name: str, latents: torch.Tensor, targets: torch.Tensor, space: str, weights: torch.Tensor | None,
                 config, job: str) -> Iterator:
            """Pivotal tuning of a copy of the model here; the final event carries the copy back to the front-end."""
            from core.pivotal import tune_decoder

            try:
                model = self.registry.get(name).at_size(*targets.shape[-2:])
                for ev in tune_decoder(model, latents, targets, space, weights, config, should_stop=_StopPoll(self.board, job)):
                    if ev.model is not None:
                        ev.model = ev.model.to("cpu")  # a GPU replica's copy must unpickle on a CPU-only front-end
                    yield ev
            finally:
                self.board.clear.remote(job)

        def encode(self, name: str, images: torch.Tensor, space: str) -> torch.Tensor:
            return LOCAL.encode(self.registry.get(name).at_size(*images.shape[-2:]), images, space)

        # ----- latent map: datasets (kept here, their images read on demand) and fits -----
        async def dataset(self, name: str, ds: str) -> tuple[LatentDataset, bool]:
            """The dataset without its image reader (a closure: it stays here) and whether it has images."""
            data = await asyncio.to_thread(self._dataset, name, ds)
            return dataclasses.replace(data, images=None), data.images is not None

        def dataset_images(self, name: str, ds: str, idx: np.ndarray) -> torch.Tensor:
            return self._dataset(name, ds).images(np.asarray(idx))

        def _dataset(self, name: str, ds: str) -> LatentDataset:
            with self.datasets_lock:
                if (name, ds) in self.datasets:
                    return self.datasets[name, ds]
            data = LOCAL.dataset(self.registry.get(name), ds)
            with self.datasets_lock:
                self.datasets[name, ds] = data
                while len(self.datasets) > MAX_DATASETS:
                    self.datasets.pop(next(iter(self.datasets)))
            return data

        async def latent_map(self, latents: np.ndarray, method: str, dims: int, seed: int) -> LatentMap:
            return await asyncio.to_thread(LOCAL.latent_map, latents, method, dims, seed)

        async def generate(self, name: str, latents: torch.Tensor, space: str, shape: tuple[int, int] | None = None,
                           decode_kw: dict | None = None) -> torch.Tensor:
            """``shape``: the (H, W) a resizable model (a VAE) decodes at, None: the model's own size; ``decode_kw``: its
            ``decode_options`` (a diffusion model's steps, clipping)."""
            return await self._generate_batch((name, latents, space, shape, decode_kw or {}))

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def _generate_batch(self, requests: list[tuple[str, torch.Tensor, str, tuple | None, dict]]) -> list[torch.Tensor]:
            """Requests for the same model, space, size and decode options decoded as one batch (in a thread: the loop
            keeps serving)."""
            return await asyncio.to_thread(self._generate_many, requests)

        def _generate_many(self, requests: list[tuple[str, torch.Tensor, str, tuple | None, dict]]) -> list[torch.Tensor]:
            out: list[torch.Tensor | None] = [None] * len(requests)
            self.largest_batch = max(self.largest_batch, len(requests))
            groups: dict[tuple, list[int]] = {}
            for i, (name, _, space, shape, kw) in enumerate(requests):
                groups.setdefault((name, space, shape, tuple(sorted(kw.items()))), []).append(i)
            for (name, space, shape, kw), idx in groups.items():
                model = self.registry.get(name)
                model = model.at_size(*shape) if shape else model
                images = model.generate(torch.cat([requests[i][1] for i in idx]), space, **dict(kw))
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
    ``max_model_bytes``: each replica's budget for loaded models (``Registry.max_bytes``; None: no limit).
    """

    def __init__(self, address: str = "auto", replicas: int = 1, plugins_dir: str | None = None,
                 num_cpus: float | None = None, num_gpus: float | None = None,
                 max_model_bytes: int | None = None) -> None:
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
            self.handle = serve.run(worker.bind(plugins, self.board, max_model_bytes), name=APP_NAME, route_prefix=None)
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
        w = None if weights is None else torch.as_tensor(weights).detach().cpu()
        yield from self._streamed(lambda job: self._stream.project.remote(name, target.detach().cpu(), config, job, w),
                                  should_stop)

    def tune(self, model: LatentModel, latents: torch.Tensor, targets: torch.Tensor, space: str,
             weights: torch.Tensor | None = None, config=None,
             should_stop: Callable[[], bool] | None = None) -> Iterator:
        """On a replica (its own copy of the model; the tuned copy comes back in the final event, and this process
        decodes with it: replicas know registry models only)."""
        name = self._name(model)
        if name is None:
            yield from LOCAL.tune(model, latents, targets, space, weights, config, should_stop)
            return
        w = None if weights is None else torch.as_tensor(weights).detach().cpu()
        args = (name, latents.detach().cpu(), targets.detach().cpu(), model.check_space(space), w, config)
        for ev in self._streamed(lambda job: self._stream.tune.remote(*args, job), should_stop):
            if ev.model is not None:
                ev.model = ev.model.to(model.device)  # where this process's copy of the model lives
            yield ev

    def _streamed(self, start: Callable[[str], object], should_stop: Callable[[], bool] | None) -> Iterator:
        """A replica's event stream for a new job id: Stop is passed on through the board, and a caller that goes
        away stops the replica's work too."""
        job = uuid.uuid4().hex
        stream = start(job)
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
        return _result(self.handle.generate.remote(name, model.check_latents(latents, space).detach().cpu(), space,
                                                   tuple(model.image_shape), decode_kw))

    def encode(self, model: LatentModel, images: torch.Tensor, space: str | None = None) -> torch.Tensor:
        name = self._name(model)
        if name is None:
            return LOCAL.encode(model, images, space)
        return _result(self.handle.encode.remote(name, images.detach().cpu(), model.check_space(space)))

    def dataset(self, model: LatentModel, name: str) -> LatentDataset:
        """Built on a replica; its real images (if any) are fetched from there when the map shows neighbours."""
        model_name = self._name(model)
        if model_name is None:
            return LOCAL.dataset(model, name)
        data, has_images = _result(self.handle.dataset.remote(model_name, name))
        if has_images:
            handle = self.handle
            data.images = lambda idx: _result(handle.dataset_images.remote(model_name, name, np.asarray(idx)))
        return data

    def latent_map(self, latents: np.ndarray, method: str = "pca", dims: int = 2, seed: int = 0) -> LatentMap:
        return _result(self.handle.latent_map.remote(np.asarray(latents, dtype=np.float32), method, int(dims), int(seed)))

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
