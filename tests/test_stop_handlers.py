"""Stop ends the work itself, not only the wait (issue 18): Interpolation's projection of two images, and the latent
map's UMAP / t-SNE. Handlers are called directly (no server); the browser tests show the same from the page."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import restore_env, use_private_dirs

DIGITS = "small_ae/digits"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    old = use_private_dirs(tmp_path_factory.mktemp("stop"))
    from demos.common import AppContext
    from plugins.registry import Registry

    yield AppContext(Registry().discover(None, use_entry_points=False), max_steps=5000)
    restore_env(old)


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("img")
    paths = []
    for i in (10, 11):
        p = folder / f"digit{i}.png"
        Image.fromarray(np.uint8(load_digits().images[i] * 255 / 16)).resize((32, 32), Image.NEAREST).save(p)
        paths.append(str(p))
    return paths


def test_stop_ends_the_projection_of_two_images_with_the_endpoints_so_far(ctx, digit_pngs):
    from core.export import load_latent
    from demos.interpolation import IMAGES, InterpolationSettings, interpolate, stop_interpolation

    seen = []

    def progress(fraction, desc=""):  # Stop pressed as step 5 of 5000 is reported
        seen.append(desc)
        if "step 5/" in desc:
            stop_interpolation(ctx)

    settings = InterpolationSettings(DIGITS, IMAGES, 0, 0, *digit_pngs, frames=8, steps=5000, align=False)
    rows = list(interpolate(ctx, settings, progress=progress))
    gallery, gif, mp4, files, status = rows[-1]
    assert status.startswith("**Stopped.**") and ("step 5 of 5000" in status or "step 6 of 5000" in status), status
    assert "Error" not in status
    assert len(seen) < 20  # the projection ended at the next step: it did not run on to 5000
    assert len(gallery) == 2 and gif is None and mp4 is None  # the two endpoints so far, no walk
    npz = next(f for f in files if f.endswith(".npz"))
    latent, info = load_latent(npz)
    assert len(latent) == 2 and info["stopped"] is True and info["model"] == DIGITS


def test_a_new_run_after_a_stop_runs_in_full(ctx, digit_pngs):
    from demos.interpolation import IMAGES, InterpolationSettings, interpolate

    settings = InterpolationSettings(DIGITS, IMAGES, 0, 0, *digit_pngs, frames=4, steps=5, align=False)
    *_, status = list(interpolate(ctx, settings))[-1]
    assert "Stopped" not in status and "4 frames" in status  # the earlier Stop does not leak into the next run


def _map_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "latent-lab-map" and t.is_alive()]


@pytest.mark.parametrize("how", ["tsne", "umap"])
def test_stop_ends_the_map_computation_itself_and_caches_nothing(ctx, how):
    from demos.latent_map import MapSettings, show_map, stop_map

    ds = next(iter(ctx.model(DIGITS).datasets()))
    calls = []

    def progress(fraction, desc=""):  # Stop pressed after the first "so far" report (half a second in)
        calls.append(desc)
        stop_map(ctx)

    rows = list(show_map(ctx, MapSettings(DIGITS, ds, how), progress=progress))
    assert calls, "the fit took under half a second: nothing to stop"
    fig, info, shown = rows[-1]
    assert info.startswith("**Stopped.**") and how.upper() in info
    assert not _map_threads()  # the fit itself ended (it used to run on in the background and be cached)
    assert not [k for k in ctx.maps._mem if k[2] == how]

    *_, (fig, info, shown) = show_map(ctx, MapSettings(DIGITS, ds))  # the next map is served
    assert shown[2] == "pca" and "points" in info
