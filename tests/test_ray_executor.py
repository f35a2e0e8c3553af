"""The app with its heavy work on a local Ray Serve deployment of 2 model workers (``--ray``).

Requests go through gradio_client as a visitor's would; the in-process executor is made to fail for the
duration, so a result can only have come from the replicas, and each is compared with the same work done
here without Ray. Skipped when Ray Serve is not installed (requirements-ray.txt).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import restore_env, use_private_dirs

pytest.importorskip("ray.serve")
gradio_client = pytest.importorskip("gradio_client")
import ray  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from ray import serve  # noqa: E402

from core.executor import LocalExecutor  # noqa: E402
from core.export import load_latent  # noqa: E402
from demos.ray_executor import APP_NAME, ROOT, RayExecutor  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DIGITS = "small_ae/digits"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray (2 CPUs, no dashboard) with 2 tiny replicas; shut down cleanly afterwards."""
    tmp = tmp_path_factory.mktemp("ray_app")
    old = use_private_dirs(tmp)  # nothing downloaded there: no StyleGAN, no LPIPS weights
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "LATENT_LAB_CACHE": str(tmp / "cache")}})
    try:
        executor = RayExecutor(replicas=2, num_cpus=0.5)
        yield executor
        executor.close()
        assert APP_NAME not in serve.status().applications
    finally:
        serve.shutdown()
        ray.shutdown()
        restore_env(old)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def app(cluster):
    from demos.app import build_app, launch
    from plugins.registry import Registry

    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=300, executor=cluster)
    launch(demo, block=False)
    yield demo
    demo.close()  # closes the executor too; the cluster fixture's second close is a no-op


@pytest.fixture
def remote_only(monkeypatch):
    """Any heavy work done in-process during a request fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("heavy work ran in-process, not on the Ray replicas")

    for method in ("project", "tune", "generate", "encode", "dataset", "latent_map"):
        monkeypatch.setattr(LocalExecutor, method, refuse)


@pytest.fixture(scope="module")
def client(app):
    c = Client(app.local_url, verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    from sklearn.datasets import load_digits

    p = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.uint8(load_digits().images[10] * 255 / 16)).resize((32, 32), Image.NEAREST).save(p)
    return str(p)


def _model(app):
    return app.latent_lab.registry.get(DIGITS)


def test_two_replicas_serve_and_a_second_front_end_shares_them(app, cluster):
    status = serve.status().applications[APP_NAME].deployments["ModelWorker"]
    assert status.replica_states.get("RUNNING") == 2
    assert DIGITS in cluster.remote_names
    second = RayExecutor(replicas=1)  # another front-end: uses the running deployment, does not redeploy it
    m = _model(app)
    z = m.sample(2, 0)
    assert torch.allclose(second.generate(m, z), m.generate(z), atol=1e-5)
    second.close()
    assert serve.status().applications[APP_NAME].deployments["ModelWorker"].replica_states.get("RUNNING") == 2


def test_decode_options_reach_the_replicas(app, cluster, remote_only):
    """A diffusion model's steps and clipping travel with the latents: the replica decodes as asked."""
    d = app.latent_lab.registry.get("diffusion/digits")
    z = d.sample(2, 3)
    three, five = d.decode_options(3), d.decode_options(5, inverted=True)
    remote = cluster.generate(d, z, **three)
    assert torch.allclose(remote, d.generate(z, **three), atol=1e-5)
    assert torch.allclose(cluster.generate(d, z, **five), d.generate(z, **five), atol=1e-5)
    assert not torch.allclose(remote, d.generate(z, **five), atol=1e-3)


def test_projection_through_ray_matches_in_process(app, client, digit_png, remote_only):
    _, _, _, status, _, files = client.predict(DIGITS, handle_file(digit_png), "latent", "mean", "mse", 12, False, 0, api_name="/project")
    assert "Done" in status
    remote, info = load_latent(next(f for f in files if f.endswith(".npz")))
    assert info["steps"] == 12

    from core.image_input import load_image, model_input
    from core.images import from_pil
    from core.projection import project
    from demos.projection import projection_config

    m = _model(app)
    img = model_input(load_image(digit_png, channels=3, min_side=8), m.image_size, m.channels, False, 0).image
    final = list(project(m, from_pil(img, m.channels), projection_config(m, "latent", "mean", "mse", 12, 0, False)))[-1]
    assert np.allclose(remote, final.latent.numpy(), atol=1e-4)


def test_pivotal_tuning_runs_on_a_replica_and_its_copy_comes_back(app, cluster, remote_only):
    from core.pivotal import TuningConfig, tune_decoder

    m = app.latent_lab.registry.get("small_ae/faces")
    space = m.check_space(None)
    pivot, target = m.sample(1, 5), m.generate(m.sample(1, 6))  # tune the drawing at one latent towards another face
    cfg = TuningConfig(steps=10)
    events = list(cluster.tune(m, pivot, target, space, None, cfg))
    final = events[-1]
    assert [ev.step for ev in events[:-1]] == list(range(1, 11)) and final.done and final.step == 10
    assert final.model is not None and final.model.card.name == "small_ae/faces+tuned"
    local = list(tune_decoder(m, pivot, target, space, None, cfg))[-1]
    with torch.no_grad():
        base, here, there = m.generate(pivot), local.model.generate(pivot), final.model.generate(pivot)
    moved = (here - base).abs().max()
    assert moved > 1e-3  # the tuning changed the drawing ...
    assert (there - here).abs().max() < 0.1 * moved  # ... and the replica's copy draws what tuning here gives
    assert abs(final.psnr - local.psnr) < 0.05


def test_interpolation_from_seeds_through_ray_matches_in_process(app, client, remote_only):
    _, _, _, files, status = client.predict(DIGITS, "two seeds", 3, 4, None, None, 5, "", "auto", [], 10, False, 8, False,
                                            api_name="/interpolate")
    assert "5 frames" in status
    latents, _ = load_latent(next(f for f in files if f.endswith(".npz")))
    with zipfile.ZipFile(next(f for f in files if f.endswith(".zip"))) as z:
        frames = [np.asarray(Image.open(io.BytesIO(z.read(f"frame_{i:03d}.png"))), dtype=int) for i in range(5)]

    from core.images import to_pil

    m = _model(app)
    a, b = m.sample(1, 3), m.sample(1, 4)
    assert np.allclose(latents[0], a.numpy()[0], atol=1e-6) and np.allclose(latents[-1], b.numpy()[0], atol=1e-6)
    expected = [np.asarray(p, dtype=int) for p in to_pil(m.generate(torch.as_tensor(latents)))]
    assert all(np.abs(f - e).max() <= 1 for f, e in zip(frames, expected, strict=True))


def test_map_and_decode_point_through_ray_match_in_process(app, client, remote_only):
    from core.images import enlarge, to_pil

    update, _ = client.predict(DIGITS, api_name="/map_datasets")
    ds = update["value"]
    colour = client.predict(DIGITS, ds, api_name="/map_labels")["value"]
    img, text, idx = client.predict(DIGITS, ds, "pca", 2, colour, 5, api_name="/map_decode_point")
    assert idx == 5 and "Point #5" in text
    _, info = client.predict(DIGITS, ds, "umap", 2, colour, api_name="/map")  # dataset and fit on a replica
    assert f"{len(app.latent_lab.dataset(DIGITS, ds))} points" in info
    data = app.latent_lab.dataset(DIGITS, ds)
    expected = enlarge(to_pil(_model(app).generate(torch.as_tensor(data.latents[5:6]), data.space))[0], 256)
    assert np.abs(np.asarray(Image.open(img), dtype=int) - np.asarray(expected, dtype=int)).max() <= 1


def test_stop_and_plain_errors_cross_the_wire(app, cluster):
    from core.projection import ProjectionConfig

    m = _model(app)
    target = m.generate(m.sample(1, 7))
    cfg = ProjectionConfig.for_model(m, None, steps=5000, preview_every=0, init="mean")
    seen = []
    for ev in cluster.project(m, target, cfg, should_stop=lambda: len(seen) >= 3):
        seen.append(ev)
    assert seen[-1].done and seen[-1].stopped and seen[-1].step < 5000
    with pytest.raises(ValueError, match="The target must have shape"):
        list(cluster.project(m, torch.zeros(1, 3, 8, 8), cfg))


def test_a_caller_that_goes_away_stops_the_replica(app, cluster):
    """Closing the stream (a client disconnected) ends the replica's projection, not just the stream."""
    import time

    from core.projection import ProjectionConfig

    m = _model(app)
    cfg = ProjectionConfig.for_model(m, None, steps=10**6, preview_every=0, init="mean")
    before = ray.get(cluster.board.pending.remote())
    events = cluster.project(m, m.generate(m.sample(1, 8)), cfg)
    assert next(events).step == 1 and next(events).step == 2
    events.close()  # what Gradio does to a handler whose client went away
    assert ray.get(cluster.board.pending.remote()) == before + 1  # asked to stop ...
    deadline = time.monotonic() + 30
    while ray.get(cluster.board.pending.remote()) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.get(cluster.board.pending.remote()) == before == 0  # ... the replica's projection ended (it clears its flag)
