"""Tab handlers called directly, without a server: they are top-level functions of plain values."""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tests.conftest import restore_env, shared_path, use_private_dirs

DIGITS, FACES = "small_ae/digits", "small_ae/faces"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    old = use_private_dirs(tmp_path_factory.mktemp("handlers"))
    from demos.common import AppContext
    from plugins.registry import Registry

    yield AppContext(Registry().discover(None, use_entry_points=False), max_steps=50)
    restore_env(old)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    from sklearn.datasets import load_digits

    p = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.uint8(load_digits().images[10] * 255 / 16)).resize((32, 32), Image.NEAREST).save(p)
    return str(p)


def _last(gen):
    *_, last = gen
    return last


# ----- interpolation ---------------------------------------------------------------------------------------------------
def test_interpolation_endpoint_boxes_follow_the_mode():
    from demos.interpolation import IMAGES, SEEDS, show_endpoints

    seeds, images = show_endpoints(SEEDS)
    assert seeds["visible"] is True and images["visible"] is False
    seeds, images = show_endpoints(IMAGES)
    assert seeds["visible"] is False and images["visible"] is True


def test_interpolate_handler_seeds_and_images(ctx, digit_png):
    from core.export import load_latent
    from demos.interpolation import IMAGES, SEEDS, InterpolationSettings, interpolate

    seeds = InterpolationSettings(DIGITS, SEEDS, seed_a=1, seed_b=2, frames=5, space="", steps=10, align=False, fps=8,
                                  boomerang=False)
    gallery, gif, mp4, files, status = _last(interpolate(ctx, seeds))
    assert len(gallery) == 5 and Image.open(gif).n_frames == 5 and "5 frames in latent" in status
    latents, info = load_latent(next(f for f in files if f.endswith(".npz")))
    assert latents.shape == (5, 8) and info["method"] == "lerp"
    steps = list(interpolate(ctx, InterpolationSettings(DIGITS, IMAGES, image_a=digit_png, image_b=digit_png, frames=3,
                                                        method="slerp", steps=5, align=False)))
    assert steps[0][-1].startswith("Projecting") and len(steps[-1][0]) == 3 and "slerp" in steps[-1][-1]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"frames": 2.5}, "whole number"),
        ({"frames": 0}, "whole number from 2"),
        ({"space": "zz"}, "no latent space 'zz'"),
        ({"method": "cubic"}, "Unknown interpolation"),
        ({"mixing": ["coarse"]}, "per-layer"),
        ({"source": "two songs"}, "Endpoints are"),
    ],
)
def test_interpolate_handler_refuses_bad_settings(ctx, change, message):
    from demos.interpolation import InterpolationSettings, interpolate

    args = {"source": "two seeds", "frames": 4, "space": "", "method": "auto", "mixing": []} | change
    with pytest.raises((ValueError, gr.Error), match=message):
        _last(interpolate(ctx, InterpolationSettings(DIGITS, **args, steps=10, align=False)))


# ----- latent map ------------------------------------------------------------------------------------------------------
def test_switching_model_refreshes_colour_by_even_when_dataset_names_match(ctx):
    from demos.latent_map import dataset_choices

    ds_digits, colour_digits = dataset_choices(ctx, DIGITS)
    ds_faces, colour_faces = dataset_choices(ctx, FACES)
    assert ds_digits["value"] == ds_faces["value"]  # the same dataset name: the dataset box fires no change event...
    assert "digit" in colour_digits["choices"] and "digit" not in colour_faces["choices"]  # ...so the labels come with it
    assert colour_faces["value"] in ctx.dataset(FACES, ds_faces["value"]).labels


def test_map_handlers_refuse_unknown_colour_and_dimensions(ctx):
    from demos.latent_map import MapSettings, decode_point, show_map

    ds = "samples (1000)"
    fig, info, _ = list(show_map(ctx, MapSettings(DIGITS, ds)))[-1]  # a generator: progress, then the map
    assert "1000 points" in info
    with pytest.raises(gr.Error, match="no label 'nope'"):
        list(show_map(ctx, MapSettings(DIGITS, ds, colour="nope")))
    with pytest.raises(gr.Error, match="2 or 3 dimensions"):
        list(show_map(ctx, MapSettings(DIGITS, ds, dims=4)))
    with pytest.raises(gr.Error, match="between 0 and 999"):
        decode_point(ctx, MapSettings(DIGITS, ds), 1.5)
    img, text, i = decode_point(ctx, MapSettings(DIGITS, ds), 3)
    assert i == 3 and "Point #3" in text and Image.open(img).size[0] >= 8


def test_the_map_builds_its_dataset_and_fits_its_reduction_through_the_executor(ctx):
    """Heavy map work goes where the app's executor runs it (a Ray replica with --ray), not in the front-end."""
    from core.executor import LocalExecutor
    from core.latent_map import reduce
    from demos.common import AppContext
    from demos.latent_map import MapSettings, show_map

    calls = []

    class Recording(LocalExecutor):
        def dataset(self, model, name):
            calls.append(("dataset", model.card.name, name))
            return super().dataset(model, name)

        def latent_map(self, latents, method="pca", dims=2, seed=0):
            calls.append(("latent_map", len(latents), method, dims))
            return super().latent_map(latents, method, dims, seed)

    mine = AppContext(ctx.registry, executor=Recording())
    ds = "training data (encoded)"
    fig, info, _ = list(show_map(mine, MapSettings(DIGITS, ds, dims=3)))[-1]
    n = len(mine.dataset(DIGITS, ds))
    assert calls == [("dataset", DIGITS, ds), ("latent_map", n, "pca", 3)] and f"{n} points" in info
    expected = reduce(mine.dataset(DIGITS, ds).latents, "pca", 3).coords
    shown = np.stack([np.concatenate([np.asarray(t[a]) for t in fig.data]) for a in "xyz"], 1)
    assert np.allclose(np.sort(shown, 0), np.sort(expected, 0), atol=1e-4)
    list(show_map(mine, MapSettings(DIGITS, ds, dims=3)))
    assert len(calls) == 2  # dataset and map both cached: no second trip to the executor
    with pytest.raises(KeyError, match="no dataset"):
        mine.executor.dataset(mine.model(DIGITS), "nope")


def test_a_batch_of_clicks_decodes_each_model_once_and_answers_each_visitor(ctx):
    """Gradio batch=True hands the click handler lists; mixed models are grouped, bad clicks answered alone."""
    from core.executor import LocalExecutor
    from demos.common import AppContext
    from demos.latent_map import MapSettings, decode_clicks, decode_point

    generated = []

    class Recording(LocalExecutor):
        def generate(self, model, latents, space=None):
            generated.append((model.card.name, len(latents)))
            return super().generate(model, latents, space)

    mine = AppContext(ctx.registry, executor=Recording())
    ds_d, ds_f = "training data (encoded)", next(iter(mine.model(FACES).datasets()))
    names = [DIGITS, FACES, DIGITS, DIGITS, DIGITS, FACES]
    dss = [ds_d, ds_f, ds_d, ds_d, ds_d, ds_f]
    values = ["3:1", "2:1", "7:2", "x:3", "999999:4", None]
    n = len(values)
    images, texts, points = decode_clicks(mine, names, dss, ["pca"] * n, [2] * n, [None] * n, values)
    assert sorted(generated) == [(DIGITS, 2), (FACES, 1)]  # one generate call per model, not one per click
    for k, (name, ds, i) in enumerate([(DIGITS, ds_d, 3), (FACES, ds_f, 2), (DIGITS, ds_d, 7)]):
        img, text, idx = decode_point(ctx, MapSettings(name, ds), i)
        assert points[k] == idx == i and texts[k] == text
        assert np.abs(np.asarray(Image.open(images[k]), int) - np.asarray(Image.open(img), int)).max() <= 1
    assert "did not name a point" in texts[3] and "between 0 and" in texts[4]
    assert all(isinstance(out[k], dict) for out in (images, points) for k in (3, 4, 5))  # left as they were
    assert isinstance(texts[5], dict)


def test_dimensions_are_documented_and_accepted_as_numbers():
    from demos.latent_map import DimsRadio

    dims = DimsRadio([2, 3], value=2)
    assert dims.api_info()["type"] == "integer" and dims.api_info()["enum"] == [2, 3]
    assert dims.preprocess(3) == 3 and dims.preprocess("3") == 3
    with pytest.raises(gr.Error):
        dims.preprocess(4)


# ----- models tab ------------------------------------------------------------------------------------------------------
def test_add_model_failure_leaves_the_table_alone(ctx, tmp_path):
    from demos.models_tab import AddModelSettings, add_model, model_lists, table

    before = table(ctx)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a model")
    with pytest.raises(gr.Error, match=r"No plugin reads '\.txt' files \(model files it can add: \.pkl\)"):
        add_model(ctx, AddModelSettings(str(bad), "", "", False))
    with pytest.raises(gr.Error, match="Upload a model file"):
        add_model(ctx, AddModelSettings(None, "  ", "", False))
    assert table(ctx) == before  # and the table is not an output of this step: only the note shows the error
    assert len(model_lists(ctx)) == 1 + len(ctx.model_dropdowns)


def test_add_model_goes_through_the_registry_hook(ctx):
    import ast
    import inspect

    import demos.local_models
    import demos.models_tab
    from demos.common import AppContext
    from demos.models_tab import AddModelSettings, add_model, table
    from plugins.contract import FACES as FACE_TAG

    for module in (demos.models_tab, demos.local_models):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m.startswith("plugins.stylegan") for m in imported)  # the registry knows who reads .pkl
    assert ctx.registry.file_loaders[".pkl"][0] == "plugins.stylegan"
    fixture = shared_path("fixtures", "stylegan", "ada_r32.pkl")
    served = AppContext(ctx.registry, models_dir=fixture.parent)  # the operator's --models-dir
    note = add_model(served, AddModelSettings(path=fixture.name, title="Fixture", faces=True))
    name = note.split("`")[1]
    assert FACE_TAG in ctx.registry.entry(name).tags and any(r[0] == name for r in table(ctx))


# ----- user errors -----------------------------------------------------------------------------------------------------
def test_user_errors_are_one_line_and_faults_keep_their_traceback(capsys):
    from demos.common import user_errors

    def refuses(x):
        raise ValueError(f"{x} is not a number of frames.")

    def streams(x):
        yield 1
        raise gr.Error("Upload the image first.")

    def breaks():
        raise RuntimeError("a real bug")

    with pytest.raises(gr.Error) as e:
        user_errors(refuses)("many")
    assert e.value.message == "many is not a number of frames." and e.value.print_exception is False
    with pytest.raises(gr.Error) as e:
        list(user_errors(streams)(1))
    assert e.value.print_exception is False
    err = capsys.readouterr().err
    assert err.splitlines() == ["user error in refuses: many is not a number of frames.",
                                "user error in streams: Upload the image first."]
    with pytest.raises(RuntimeError):
        user_errors(breaks)()


def test_bind_keeps_what_gradio_reads():
    import inspect

    from gradio import utils

    from demos.common import user_errors
    from demos.latent_map import decode_point
    from demos.models_tab import overview
    from demos.wiring import bind

    wired = user_errors(bind(decode_point, "the context"))
    assert not inspect.isgeneratorfunction(wired) and inspect.isgeneratorfunction(bind(_streams, None))
    assert not inspect.isgeneratorfunction(bind(overview, None))
    params = list(inspect.signature(wired).parameters)
    assert params[0] == "v" and "ctx" not in params and params[-1] == "request"
    assert utils.is_special_typed_parameter("request", utils.get_type_hints(wired))  # so Gradio passes the session


def _streams(ctx, x):
    yield x


@dataclasses.dataclass
class _Walk:
    model: str | None
    frames: float = 16
    fps: float = 12


def _walk(ctx, s: _Walk, request: gr.Request | None = None, progress=gr.Progress()):
    yield ctx, s, request


def test_bind_settings_names_each_component_and_keeps_what_gradio_reads():
    import inspect

    from gradio import utils

    from demos.common import user_errors
    from demos.wiring import bind_settings

    boxes = {"model": gr.Textbox(), "frames": gr.Slider(), "fps": gr.Slider()}
    wired, inputs = bind_settings(_walk, "the context", _Walk, boxes)
    wired = user_errors(wired)
    assert inputs == list(boxes.values()) and inspect.isgeneratorfunction(wired)
    assert list(inspect.signature(wired).parameters) == ["model", "frames", "fps", "request", "progress"]
    assert utils.is_special_typed_parameter("request", utils.get_type_hints(wired))  # so Gradio passes the session
    (ctx, s, request), = wired("m", 8, 30, "the request")
    assert ctx == "the context" and s == _Walk("m", 8, 30) and request == "the request"  # each value by its name
    fewer, _ = bind_settings(_walk, None, _Walk, {"model": gr.Textbox(), "fps": gr.Slider()})
    (_, s, _), = fewer("m", 30)
    assert s == _Walk("m", fps=30)  # a field with a default may stay unwired: it keeps the default, not a neighbour's value
    with pytest.raises(TypeError, match=r"\['colour'\] have no field"):
        bind_settings(_walk, None, _Walk, {**boxes, "colour": gr.Dropdown()})  # a component the settings lack
    with pytest.raises(TypeError, match=r"fields \['model'\] have no component"):
        bind_settings(_walk, None, _Walk, {"frames": gr.Slider()})
