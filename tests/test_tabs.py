"""The Projection and Family tabs' handlers, called directly with an AppContext (no server).

Each test here is a bug found by using the app (issue 9 §2, issue 7 §4) that the old closures could not be tested for.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from core.export import load_latent  # noqa: E402
from tests.conftest import restore_env, shared_path, use_private_dirs  # noqa: E402
from tests.toy import ToyLinear  # noqa: E402

FACES, DIGITS = "small_ae/faces", "small_ae/digits"


class ToyPerceptual(ToyLinear):
    wanted_losses = ("lpips",)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from core.card import ModelCard
    from demos.common import AppContext
    from plugins.registry import ModelEntry, Registry

    tmp = tmp_path_factory.mktemp("tabs")
    old = use_private_dirs(tmp)  # nothing downloaded there: no StyleGAN, no LPIPS weights
    reg = Registry().discover(None, use_entry_points=False)
    reg.add(ModelEntry(ModelCard("toy/perceptual", "Toy perceptual", "test", "nothing", 8, "MIT", "tests"),
                       load=ToyPerceptual))
    yield AppContext(reg, max_steps=300)
    restore_env(old)


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    from sklearn.datasets import load_digits

    p = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.uint8(load_digits().images[10] * 255 / 16)).resize((32, 32), Image.NEAREST).save(p)
    return str(p)


def _error(call) -> str:
    with pytest.raises(gr.Error) as e:
        call()
    return str(e.value)


# ----- Projection ------------------------------------------------------------------------------------------------
def test_a_stop_pressed_while_the_run_waits_in_the_queue_stops_that_run_as_it_starts(ctx, digit):
    from gradio.context import LocalContext

    from demos.projection import ProjectionSettings, project_image, stop_projection

    ctx.sessions.queued = lambda key, apis: {"waiting-run"} if "project" in apis else set()
    try:
        stop_projection(ctx)  # pressed while the session's run waits for a heavy slot
    finally:
        ctx.sessions.queued = lambda key, apis: set()
    token = LocalContext.event_id.set("another-run")
    try:
        *_, last = project_image(ctx, ProjectionSettings(DIGITS, digit, "latent", "mean", "mse", 5, False, 0))
        assert "Done" in last[3]  # a different run is not stopped
        LocalContext.event_id.set("waiting-run")
        *_, last = project_image(ctx, ProjectionSettings(DIGITS, digit, "latent", "mean", "mse", 200, False, 0))
        assert "Stopped at step 0" in last[3]  # the run that waited ends at once, with where it started
        *_, last = project_image(ctx, ProjectionSettings(DIGITS, digit, "latent", "mean", "mse", 5, False, 0))
        assert "Done" in last[3]  # and only once
    finally:
        LocalContext.event_id.reset(token)


def test_stop_says_where_and_offers_the_partial_latent(ctx, digit):
    from demos.projection import ProjectionSettings, project_image, stop_projection

    rows = []
    for row in project_image(ctx, ProjectionSettings(DIGITS, digit, "latent", "mean", "mse", 200, False, 0)):
        rows.append(row)
        if len(rows) == 3:  # the target, then two previews: press Stop
            stop_projection(ctx)
    status, files = rows[-1][3], rows[-1][5]
    assert "Stopped at step" in status and "Step 200/200" not in status
    step = int(status.split("Stopped at step ")[1].split("*")[0])
    assert 1 <= step < 200
    latent, info = load_latent(next(f for f in files if f.endswith(".npz")))
    assert latent.shape == (1, 8) and info["stopped"] is True and info["steps"] == step
    assert Image.open(next(f for f in files if f.endswith(".png"))).size == (8, 8)
    # The next run is not stopped by the old press.
    *_, last = project_image(ctx, ProjectionSettings(DIGITS, digit, "latent", "mean", "mse", 5, False, 0))
    assert "Done" in last[3]


def test_projection_refuses_unknown_space_and_fractional_steps(ctx, digit):
    from demos.projection import ProjectionSettings, project_image

    msg = _error(lambda: list(project_image(ctx, ProjectionSettings(DIGITS, digit, "w+", "auto", "mse", 5, False, 0))))
    assert "has no latent space 'w+'" in msg
    assert "whole number" in _error(lambda: list(project_image(ctx, ProjectionSettings(DIGITS, digit, "latent", "auto", "mse", 5.5, False, 0))))
    *_, last = project_image(ctx, ProjectionSettings(DIGITS, digit, "", "auto", "mse", 3.0, False, 0))  # empty: the model's edit space
    assert "space: latent" in last[3]


def test_face_projection_shows_identity(ctx):
    from demos.projection import ProjectionSettings, project_image

    photo = str(shared_path("data", "faces", "london", "neutral", "001_03.jpg"))
    *_, last = project_image(ctx, ProjectionSettings(FACES, photo, None, "auto", "auto", 5, True, 0, tune=False))
    assert "identity distance" in last[3] and "reads as" in last[3] and "tuned" not in last[3]
    _, info = load_latent(next(f for f in last[5] if f.endswith(".npz")))
    assert 0 < info["identity_distance"] < 2 and "decoder" not in info
    assert any("composite_display_only" in f for f in last[5])


def test_face_projection_tunes_the_decoder_to_a_stranger(ctx):
    """By default the faces model's decoder is then tuned to the photo: a person no model saw comes back as them."""
    from demos.projection import ProjectionSettings, project_image

    photo = str(shared_path("data", "faces", "3dsk", "female", "agata.jpg"))
    rows = list(project_image(ctx, ProjectionSettings(FACES, photo, None, "auto", "auto", 100, True, 0)))
    assert any("Tuning the decoder" in r[3] for r in rows)  # its progress is shown
    last = rows[-1]
    assert "tuned to this photo" in last[3] and "projection alone" in last[3]
    _, info = load_latent(next(f for f in last[5] if f.endswith(".npz")))
    assert info["decoder"] == f"{FACES}+tuned" and info["psnr"] > info["projection_psnr"] + 3
    assert info["identity_distance"] < min(0.6, info["projection_identity_distance"] - 0.1)
    assert any("projection_alone" in f for f in last[5]) and any("composite_display_only" in f for f in last[5])


def test_lpips_download_only_for_models_that_use_it(ctx):
    from core.losses import downloadable
    from demos.projection import loss_choices

    assert "lpips" in downloadable()  # not in the test cache
    assert loss_choices(ctx, DIGITS)[1]["visible"] is False
    assert loss_choices(ctx, "toy/perceptual")[1]["visible"] is True


def test_face_tabs_open_on_a_face_model_and_panels_keep_their_size(ctx):
    from demos.app import build_app

    demo = build_app(ctx.registry)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["proj_model"].value == FACES and by_id["family_model"].value == FACES
    assert by_id["proj_preview"].height and by_id["proj_preview"].height == by_id["proj_target"].height
    assert by_id["family_video"].height and by_id["family_video"].height <= 400
    from core.children import VARIATION
    from core.family import PROJECTION_STEPS

    assert by_id["family_variation"].value == VARIATION  # the tab's defaults are the CLI's and the benchmark's
    assert by_id["family_steps"].value == PROJECTION_STEPS


def test_builtin_face_model_note_and_download_button(ctx):
    from demos.face_note import face_model_note

    note, button = face_model_note(ctx, FACES)
    assert note["visible"] and "FFHQ" in note["value"] and button["visible"] and "Download" in button["value"]
    assert face_model_note(ctx, DIGITS)[0]["visible"] is False


# ----- Family -----------------------------------------------------------------------------------------------------
def _london(i: int) -> str:
    return str(shared_path("data", "faces", "london", "neutral", f"{i:03d}_03.jpg"))


def test_family_parents_are_aligned_independently(ctx):
    from demos.family import align_parents

    zebra = str(shared_path("data", "faces", "photos", "singnet_zebra_stripes.jpg"))
    fcrop, mcrop, note, *_ = align_parents(ctx, FACES, zebra, _london(2))
    assert fcrop is None and Image.open(mcrop).size == (256, 256)
    assert "Father's photo: No face was found" in note
    assert "No face was found" in _error(lambda: align_parents(ctx, FACES, zebra, None))


def test_family_several_faces_offer_a_choice(ctx):
    from demos.family import align_parents

    laos = str(shared_path("data", "faces", "photos", "singnet_laos.jpg"))
    a, _, note, faces, _ = align_parents(ctx, FACES, laos, _london(2))
    assert faces["visible"] and len(faces["value"]) == 2 and "largest" not in note
    b, _, note2, *_ = align_parents(ctx, FACES, laos, _london(2), 2, 1)  # face numbers count from 1, as the picker's
    assert "face 2 of 2" in note2 and not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_family_refuses_non_face_models_and_bad_settings(ctx, digit):
    from demos.family import FamilySettings, align_parents, make_children, morph_video

    assert "not a face model" in _error(lambda: align_parents(ctx, DIGITS, digit, digit))
    dad, mum = _london(1), _london(2)

    def kids(**kw):
        return list(make_children(ctx, FamilySettings(**({"model": FACES, "father": dad, "mother": mum, "steps": 5,
                                                           "variation": 0.2, "count": 2} | kw))))

    assert "No 'eyebrows' direction" in _error(lambda: kids(extra="eyebrows", extra_amount=1.0))
    assert "per-layer dominance does not apply" in _error(lambda: kids(coarse="father"))
    assert "whole number from 1" in _error(lambda: kids(count=0))
    assert "whole number from 1" in _error(lambda: kids(count=1.5))
    gallery, files, status, fproj, mproj = kids(count=1)[-1]
    assert status.startswith("1 child.") and "identity distance to father" in status and fproj and mproj
    assert all(caption is None for _, caption in gallery)  # captions sit under the gallery, not over the faces
    gallery, _, status, *_ = kids(count=3, age=1.0)[-1]
    assert status.startswith("3 children.") and "unreliable" in status and len(gallery) == 3
    two = FamilySettings(FACES, dad, mum, steps=5, variation=0.2, count=2, which=2)
    assert "between 0 and 1" in _error(lambda: morph_video(ctx, two))


def test_family_stop_keeps_partial_projections(ctx):
    from demos.family import FamilySettings, project_parents, stop_family

    rows = []
    for row in project_parents(ctx, FamilySettings(FACES, _london(3), _london(4), steps=300)):
        rows.append(row)
        stop_family(ctx)  # pressed as soon as the first progress row arrives
    fproj, mproj, status = rows[-1]
    assert "Stopped at step" in status and fproj and mproj


def test_dominance_shown_only_for_models_with_layers(ctx):
    from demos.family import model_view

    group, *_ = model_view(ctx, FACES)
    assert group["visible"] is False
