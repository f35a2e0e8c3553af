"""What a newcomer tripped on in the first hour (issue 18): default models, stale maps, downloads, the API page, the CLI."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from tests.conftest import restore_env, use_private_dirs  # noqa: E402

FACES, DIGITS = "small_ae/faces", "small_ae/digits"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from demos.app import build_app
    from plugins.registry import Registry

    old = use_private_dirs(tmp_path_factory.mktemp("first_hour"))  # nothing downloaded there
    yield build_app(Registry().discover(None, use_entry_points=False))
    restore_env(old)


def _by_id(demo) -> dict:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def _fn(demo, api_name: str):
    return next(f for f in demo.fns.values() if f.api_name == api_name)


# ----- 3: default model, and a photo that does not suit it ----------------------------------------------------------
def test_interpolation_opens_on_faces_and_a_face_photo_on_digits_gets_one_line(demo):
    from demos.interpolation import model_hint

    ctx = demo.latent_lab
    assert _by_id(demo)["interp_model"].value == FACES and _by_id(demo)["map_model"].value == DIGITS
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    hint = model_hint(ctx, DIGITS, photo)
    assert hint and "does not suit" in hint and ctx.registry.entry(FACES).card.title in hint
    assert model_hint(ctx, FACES, photo) is None
    digit = Image.fromarray(np.uint8(rng.integers(0, 255, (8, 8)))).convert("RGB")
    assert model_hint(ctx, DIGITS, digit) is None


# ----- 4: latent map ---------------------------------------------------------------------------------------------
def test_colour_by_recolours_the_map_on_screen_without_recomputing(demo, monkeypatch):
    from demos.latent_map import MapSettings, clear_map, recolour, show_map

    ctx = demo.latent_lab
    ds = next(iter(ctx.model(DIGITS).datasets()))
    labels = list(ctx.dataset(DIGITS, ds).labels)
    *_, (fig, _, shown) = show_map(ctx, MapSettings(DIGITS, ds, colour=labels[0]))
    fits = []
    fit = ctx.maps.fit
    monkeypatch.setattr(ctx.maps, "fit", lambda *a: fits.append(a) or fit(*a))
    other = labels[-1] if len(labels) > 1 else None
    again = recolour(ctx, shown, DIGITS, ds, other)
    assert not fits and again is not fig and len(again.data) >= 1
    assert recolour(ctx, shown, FACES, ds, other) == gr.update()  # another model chosen: nothing drawn from the old
    assert recolour(ctx, None, DIGITS, ds, other) == gr.update()
    plot, info, decoded, decoded_info, neighbours, state, point = clear_map()
    assert plot is None and info == "" and decoded is None and decoded_info == "" and not state and point is None


def test_map_has_stop_and_clears_on_a_new_model(demo):
    by_id = _by_id(demo)

    def on(elem_id: str) -> list:
        return [f for f in demo.fns.values() if by_id[elem_id]._id in [t[0] for t in f.targets]]

    assert any(getattr(f.fn, "__name__", "") == "stop_map" for f in on("map_stop")), "Stop ends the map's computation"
    assert any(by_id["map_plot"] in f.outputs and by_id["map_decoded"] in f.outputs for f in on("map_model"))
    assert any(by_id["map_plot"] in f.outputs for f in on("map_colour"))


def test_umap_is_warmed_up_in_the_background_after_launch(monkeypatch, tmp_path):
    from demos import latent_map
    from demos.app import build_app, launch
    from plugins.registry import Registry

    warmed = threading.Event()

    def slow_warm_up():
        time.sleep(0.5)
        warmed.set()

    monkeypatch.setattr(latent_map, "warm_up_umap", slow_warm_up)
    old = use_private_dirs(tmp_path)
    demo = build_app(Registry())
    try:
        launch(demo, block=False, warm_maps=True)
        assert not warmed.is_set()  # launch did not wait for it
        assert warmed.wait(30)
    finally:
        demo.close()
        restore_env(old)


def test_a_colour_bar_leaves_the_legend_below_the_plot():
    from demos.map_figure import map_figure

    coords = np.random.default_rng(0).normal(size=(50, 2))
    fig = map_figure(coords, np.arange(50, dtype=float), "age", "t", query=coords[:1])
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert map_figure(coords, np.arange(50) % 3, "digit", "t").layout.legend.orientation != "h"


# ----- 6: downloads ----------------------------------------------------------------------------------------------
def test_a_failed_download_is_a_line_beside_its_button_not_an_error_on_the_dropdown(demo, monkeypatch):
    ctx = demo.latent_lab
    name = "stylegan2/ffhq-256"
    entry = ctx.registry.entry(name)

    def offline(progress=None):
        raise ConnectionError("no internet access to nvlabs-fi-cdn.nvidia.com")

    monkeypatch.setattr(entry, "download", offline)
    card, button, dropdown, failed = _fn(demo, "models_download").fn(name)
    assert failed["value"].startswith("**Download failed:**") and "no internet" in failed["value"] and failed["visible"]
    assert "Download failed" not in card  # the card sits in a closed accordion: the line goes beside the button
    assert button["visible"] is True and dropdown == gr.update()
    with pytest.raises(gr.Error, match="Download weights"):
        ctx.model(name)


def test_models_tab_has_a_download_button_and_a_table_that_fits(demo):
    from demos.models_tab import HEADERS

    by_id = _by_id(demo)
    assert "models_download" in by_id and "Download weights" in by_id["models_download"].value
    assert "source" not in HEADERS and len(HEADERS) <= 5
    assert "/" not in by_id["models_pkl_upload"].label and ".pkl" in by_id["models_pkl_upload"].label


# ----- 8: the API page -------------------------------------------------------------------------------------------
def test_api_page_has_one_user_sentence_per_endpoint_no_duplicates_and_no_empty_literals(demo):
    info = demo.get_api_info()["named_endpoints"]
    assert "/family_align_mother" not in info and "/models_on_load" not in info
    assert "/family_align" in info and "/models" in info
    for name, endpoint in info.items():
        text = endpoint["description"]
        assert text and "``" not in text and "batch=True" not in text and "demos." not in text, name
        assert len(text) < 160, name
        for p in endpoint["parameters"]:
            assert p["python_type"]["type"] != "Literal[]", (name, p["label"])


# ----- 9: CLI ----------------------------------------------------------------------------------------------------
def test_directions_checks_its_folder_and_csv_before_any_model_is_loaded(tmp_path, capsys, monkeypatch):
    import demos.cli

    monkeypatch.setattr(demos.cli, "_load", lambda *a, **k: pytest.fail("the model was loaded before the inputs were checked"))
    argv = ["directions", "--model", DIGITS, "--images", str(tmp_path / "nope"), "--labels", str(tmp_path / "l.csv")]
    assert app.main(argv) == 2
    assert "images folder" in capsys.readouterr().err
    (tmp_path / "photos").mkdir()
    assert app.main([*argv[:3], "--images", str(tmp_path / "photos"), "--labels", str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err
    assert "labels file" in err and "Errno" not in err


def test_models_lists_the_builtin_diffusion_model_with_a_card(capsys):
    assert app.main(["models"]) == 0
    line = next(li for li in capsys.readouterr().out.splitlines() if li.startswith("diffusion/digits "))
    assert "16px" in line and "MIT" in line and "not stated" not in line


def test_a_user_direction_never_shadows_a_builtin_one(monkeypatch):
    from core import user_directions
    from core.direction import Direction

    builtin = Direction("gender", np.ones(4), "latent", "logistic", source="204 photos")
    mine = Direction("gender", -np.ones(4), "latent", "logistic", source="12 photos")
    extra = Direction("smile", np.ones(4), "latent", "logistic")

    class Model:
        spaces = {"latent": None}
        default_space = "latent"

        def directions(self):
            return [builtin]

    monkeypatch.setattr(user_directions, "_user_directions", lambda name: {"gender": mine, "smile": extra})
    found = {d.name: d for d in user_directions.directions_for("m", Model(), unsupervised=0)}
    assert found["gender"].source == "204 photos"
    assert found["gender (yours)"].source == "12 photos" and "smile" in found
