"""One face picker in Projection, Interpolation and Family, numbered from 1 (issue 18 §1, §5, §7).

Handlers are called directly with an AppContext (as in test_tabs.py); the thumbnails' URLs go through the real
server with two clients (as in test_file_routes.py).
"""

from __future__ import annotations

import warnings

import httpx
import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from demos.face_numbers import face_index  # noqa: E402
from tests.conftest import restore_env, shared_path, use_private_dirs  # noqa: E402
from tests.test_browser import browser_app, page  # noqa: E402, F401 - the real-browser test's fixtures

FACES = "small_ae/faces"
GROUP = str(shared_path("data", "faces", "photos", "singnet_laos.jpg"))  # two people
ZEBRA = str(shared_path("data", "faces", "photos", "singnet_zebra_stripes.jpg"))  # no face


def _london(i: int) -> str:
    return str(shared_path("data", "faces", "london", "neutral", f"{i:03d}_03.jpg"))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from demos.common import AppContext
    from plugins.registry import Registry

    old = use_private_dirs(tmp_path_factory.mktemp("picker"))
    yield AppContext(Registry().discover(None, use_entry_points=False), max_steps=300)
    restore_env(old)


def _select(index: int):
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


def _said(call) -> tuple[object, list[str]]:
    """(result, the warnings the handler said) of a direct call (outside a request gr.Warning is a Python warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _error(call) -> str:
    with pytest.raises(gr.Error) as e:
        call()
    return str(e.value)


def test_face_numbers_count_from_one():
    assert face_index(1, 2) == 0 and face_index(2, 2) == 1 and face_index(None, 1) == 0
    with pytest.raises(ValueError, match="counts from 1"):
        face_index(0, 2)
    with pytest.raises(ValueError, match="must be from 1 to 2; got 3"):
        face_index(3, 2)
    with pytest.raises(ValueError, match="Only one face was found in this photo, so --face must be 1; got 2"):
        face_index(2, 1, "--face")


def test_projection_offers_the_faces_warns_once_and_projects_the_chosen_one(ctx):
    from demos.projection import ProjectionSettings, choose_face, offer_faces, project_image

    (faces, target), said = _said(lambda: offer_faces(ctx, FACES, GROUP, True))
    assert faces["visible"] and len(faces["value"]) == 2
    assert all(str(ctx.session_dir(None)) in p for p in faces["value"])  # the session's own files: served to it only
    assert len(said) == 1 and "2 faces" in said[0]
    (again, _), said = _said(lambda: offer_faces(ctx, FACES, GROUP, True))  # e.g. the model changed: no second warning
    assert again["visible"] and said == []
    assert offer_faces(ctx, FACES, _london(1), True)[0]["visible"] is False  # one face: no picker
    assert offer_faces(ctx, "small_ae/digits", GROUP, True)[0]["visible"] is False  # not a face model
    second = choose_face(ctx, FACES, GROUP, _select(1))  # re-aligned on the face clicked
    assert not np.array_equal(np.asarray(Image.open(target)), np.asarray(Image.open(second)))

    rows, said = _said(lambda: list(project_image(ctx, ProjectionSettings(FACES, GROUP, None, "auto", "auto", 2, True, 0, tune=False))))
    assert not any("faces" in w for w in said)  # said once, at upload
    assert np.array_equal(np.asarray(Image.open(rows[-1][0])), np.asarray(Image.open(second)))  # the chosen face


def test_interpolation_uses_each_images_chosen_face(ctx):
    from demos.interpolation import choose_face_b, offer_faces_a, offer_faces_b
    from demos.projection import prepare_target

    assert offer_faces_a(ctx, FACES, GROUP, True)["visible"] and offer_faces_b(ctx, FACES, GROUP, True)["visible"]
    assert "face 2 of 2" in choose_face_b(ctx, GROUP, _select(1))
    m = ctx.model(FACES)
    a, said = _said(lambda: prepare_target(ctx, m, FACES, GROUP, True, None, slot="interp_a"))
    b = prepare_target(ctx, m, FACES, GROUP, True, None, slot="interp_b")
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image)) and said == []


def test_family_picker_numbers_from_one_and_warns_about_the_new_photo_only(ctx):
    from demos.family import align_chosen_face, align_new_father, align_new_mother, align_parents

    (a, _, note, faces, mfaces), said = _said(lambda: align_new_father(ctx, FACES, GROUP, None))
    assert faces["visible"] and len(faces["value"]) == 2 and not mfaces["visible"]
    assert all(str(ctx.session_dir(None)) in p for p in faces["value"])
    assert [w for w in said if "2 faces" in w] == [said[0]] and len(said) == 1
    _, said = _said(lambda: align_new_mother(ctx, FACES, GROUP, _london(2)))
    assert said == []  # the father's photo is not warned about again
    (b, _, note2, *_), said = _said(lambda: align_chosen_face(ctx, FACES, GROUP, _london(2), 2, 1))
    assert "face 2 of 2" in note2 and said == []
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    *_, note0, _, _ = align_parents(ctx, FACES, GROUP, _london(2), 0, 1)
    assert "counts from 1" in note0
    *_, note3, _, _ = align_parents(ctx, FACES, GROUP, _london(2), 3, 1)
    assert "must be from 1 to 2; got 3" in note3


CHILD = dict(model=FACES, steps=5, variation=0.2, count=1)


@pytest.mark.parametrize("father,mother,message", [(ZEBRA, _london(2), "Father's photo: No face was found"),
                                                    (_london(1), None, "upload the mother's photo first")])
def test_make_children_refuses_a_parent_photo_before_any_projection(ctx, monkeypatch, father, mother, message):
    from core.family import Family
    from demos.family import FamilySettings, check_children, make_children, morph_video

    projections = []
    monkeypatch.setattr(Family, "project", lambda self, *a, **k: projections.append(1) or iter(()))
    settings = FamilySettings(father=father, mother=mother, **CHILD)
    gen = make_children(ctx, settings)
    assert message in _error(lambda: next(gen))  # the first thing it does: no progress row before it
    assert message in _error(lambda: check_children(ctx, settings))  # the UI's check
    assert message in _error(lambda: morph_video(ctx, settings))
    assert projections == []


def test_family_thumbnails_are_served_to_their_owner_only(tmp_path, monkeypatch):
    from demos.app import build_app, launch
    from plugins.registry import Registry
    from tests.test_privacy_server import _call, _file, _upload

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=1000, concurrency=1)
    launch(demo, block=False)
    try:
        url = demo.local_url
        with httpx.Client(timeout=60) as alice, httpx.Client(timeout=60) as bob:
            photo = tmp_path / "group.jpg"
            photo.write_bytes(open(GROUP, "rb").read())
            kind, out = _call(alice, url, "family_align", [FACES, _file(_upload(alice, url, photo)), None, 1, 1])
            assert kind == "complete", out
            tiles = [item["image"]["url"] for item in out[3]["value"]]
            assert len(tiles) == 2
            for tile in tiles:
                assert alice.get(tile).status_code == 200
                assert bob.get(tile).status_code == 404
    finally:
        demo.close()


@pytest.mark.browser
def test_face_pickers_and_an_early_refusal_in_a_real_browser(page, tmp_path):  # noqa: F811 - the fixture
    """The thumbnails load (they were 404s); a photo without a face stops Make children at once: one toast, no error
    marks on the outputs."""
    from playwright.sync_api import expect

    from tests.test_browser import _shots

    page.get_by_role("tab", name="Family").click()
    page.locator("#family_father input[type=file]").set_input_files(GROUP)
    tiles = page.locator("#family_father_faces img")
    expect(tiles).to_have_count(2, timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#family_father_faces img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30_000)
    expect(page.locator(".toast-body")).to_have_count(1, timeout=10_000)  # the several-faces warning, once
    page.locator("#family_mother input[type=file]").set_input_files(_london(2))
    expect(page.locator("#family_mother_crop img")).to_be_visible(timeout=60_000)
    page.locator("#family_father input[type=file]").set_input_files(ZEBRA)
    expect(page.locator("#family_align_note")).to_contain_text("No face was found", timeout=60_000)
    expect(page.locator(".toast-body")).to_have_count(0, timeout=30_000)  # the upload's own warnings have gone
    page.locator("#family_generate").click()
    expect(page.locator(".toast-body")).to_have_count(1, timeout=30_000)
    expect(page.locator(".toast-body")).to_contain_text("No face was found")
    page.wait_for_timeout(2000)
    page.screenshot(path=str(_shots(tmp_path) / "family_refusal.png"))
    assert page.locator(".toast-body").count() == 1
    assert page.locator("#family_children .error, #family_status .error, #family_files .error").count() == 0
    assert "step" not in page.locator("#family_status").inner_text()  # nothing was projected

    page.get_by_role("tab", name="Projection").click()
    page.locator("#proj_image input[type=file]").set_input_files(GROUP)
    page.wait_for_function("[...document.querySelectorAll('#proj_faces img')].length == 2 && "
                           "[...document.querySelectorAll('#proj_faces img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=60_000)
    first = page.locator("#proj_target img").get_attribute("src")
    page.locator("#proj_faces img").nth(1).click()
    expect(page.locator("#proj_target img")).not_to_have_attribute("src", first or "", timeout=30_000)
    page.screenshot(path=str(_shots(tmp_path) / "projection_faces.png"))
