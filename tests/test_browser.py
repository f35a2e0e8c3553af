"""One real-browser test: Playwright driving Debian's Chromium against the running app.

Uploads a face in Projection and waits for the result, then clicks a point on
the latent map (the plotly-click bridge only exists in a browser). Screenshots
go to $LATENT_LAB_SCREENSHOTS (the README's come from here) or a temp folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import shared_path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser_app(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    pytest.importorskip("playwright")
    tmp = tmp_path_factory.mktemp("browser")
    os.environ.setdefault("GRADIO_TEMP_DIR", str(tmp / "gradio"))
    from demos.app import build_app, launch
    from plugins.registry import Registry

    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=5000)  # room for a run long enough to stop
    launch(demo, block=False)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def page(browser_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(browser_app.local_url, wait_until="load")  # not "networkidle": the session heartbeat never idles
        pg.locator("#proj_run").wait_for(timeout=60_000)
        yield pg
        browser.close()


@pytest.fixture
def fresh_page(browser_app, page):
    """A page of its own (a new visitor): after all the tests before it on the shared page, the Stop click once hung
    in the full run (not alone, not after any single one of them); not yet explained, see the closing note."""
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.goto(browser_app.local_url, wait_until="load")
    pg.locator("#proj_run").wait_for(timeout=60_000)
    yield pg
    context.close()


def _shots(tmp_path) -> Path:
    folder = Path(os.environ.get("LATENT_LAB_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_projection_in_a_real_browser(page, tmp_path):
    from playwright.sync_api import expect

    photo = shared_path("data", "faces", "photos", "singnet_woman_portrait.jpg")  # public domain: the README shows it
    page.get_by_role("tab", name="Projection").click()
    page.locator("#proj_model input").first.click()
    page.get_by_role("option", name="Small AE — London faces", exact=False).first.click()
    page.locator("#proj_image input[type=file]").set_input_files(str(photo))
    page.locator("#proj_run").click()
    status = page.locator("#proj_status")
    expect(status).to_contain_text("Done", timeout=180_000)
    expect(status).to_contain_text("tuned to this photo")  # a face: the decoder is then tuned to it (on by default)
    expect(status).to_contain_text("PSNR")
    expect(page.locator("#proj_preview img")).to_be_visible()
    expect(page.locator("#proj_target img")).to_be_visible()
    page.screenshot(path=str(_shots(tmp_path) / "projection.png"), full_page=True)


def test_latent_map_click_decodes_the_point(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Latent map").click()
    page.locator("#map_model input").first.click()
    page.get_by_role("option", name="Small AE — digits", exact=False).first.click()
    expect(page.locator("#map_dataset input").first).not_to_have_value("", timeout=30_000)
    page.locator("#map_run").click()
    points = page.locator("#map_plot .scatterlayer .points path")
    expect(points.first).to_be_visible(timeout=60_000)
    points.nth(3).click(force=True)
    info = page.locator("#map_decoded_info")
    expect(info).to_contain_text("Point #", timeout=30_000)
    expect(page.locator("#map_decoded img")).to_be_visible()
    page.screenshot(path=str(_shots(tmp_path) / "latent_map.png"), full_page=True)


def test_family_in_a_real_browser(page, tmp_path):
    from playwright.sync_api import expect

    # Public-domain photos (the README shows this screenshot; the London images may not be published with the project).
    dad = shared_path("data", "faces", "photos", "singnet_model_face.jpg")
    mum = shared_path("data", "faces", "photos", "singnet_woman_portrait.jpg")
    page.get_by_role("tab", name="Family").click()
    page.locator("#family_father input[type=file]").set_input_files(str(dad))
    expect(page.locator("#family_father_crop img")).to_be_visible(timeout=60_000)  # aligned before anything slow
    page.locator("#family_mother input[type=file]").set_input_files(str(mum))
    expect(page.locator("#family_mother_crop img")).to_be_visible(timeout=60_000)
    page.locator("#family_generate").click()
    expect(page.locator("#family_status")).to_contain_text("children", timeout=180_000)
    expect(page.locator("#family_children img").first).to_be_visible()
    page.screenshot(path=str(_shots(tmp_path) / "family.png"), full_page=True)


def test_interpolation_shows_only_the_chosen_endpoints_and_frames_fit(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Interpolation").click()
    expect(page.locator("#interp_seed_a")).to_be_visible()
    expect(page.locator("#interp_image_a")).to_be_hidden()
    page.locator("#interp_source").get_by_label("two images").check()
    expect(page.locator("#interp_image_a")).to_be_visible()
    expect(page.locator("#interp_seed_a")).to_be_hidden()
    page.locator("#interp_source").get_by_label("two seeds").check()
    expect(page.locator("#interp_seed_a")).to_be_visible()
    page.locator("#interp_model input").first.click()
    page.get_by_role("option", name="Small AE — digits", exact=False).first.click()
    page.locator("#interp_run").click()
    expect(page.locator("#interp_status")).to_contain_text("16 frames", timeout=120_000)
    thumbs = page.locator("#interp_gallery img")
    expect(thumbs.first).to_be_visible()
    gallery = page.locator("#interp_gallery").bounding_box()
    right = max(b["x"] + b["width"] for b in (thumbs.nth(i).bounding_box() for i in range(thumbs.count())) if b)
    assert right <= gallery["x"] + gallery["width"] + 1  # no frame sticks out of the gallery
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")  # nor the page
    page.screenshot(path=str(_shots(tmp_path) / "interpolation.png"), full_page=True)


def test_latent_map_colour_by_follows_the_model(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Latent map").click()
    for title, label in (("Small AE — digits", "digit"), ("Small AE — London faces", "age"), ("Small AE — digits", "digit")):
        page.locator("#map_model input").first.click()
        page.get_by_role("option", name=title, exact=False).first.click()
        expect(page.locator("#map_colour input").first).to_have_value(label, timeout=30_000)


def test_family_face_choice_and_layout_in_a_real_browser(page):
    """Several faces: a gallery to pick from, and the crop follows the click; no per-layer dominance without layers."""
    from playwright.sync_api import expect

    laos = shared_path("data", "faces", "photos", "singnet_laos.jpg")
    page.get_by_role("tab", name="Family").click()
    expect(page.locator("#family_dom_coarse")).to_be_hidden()  # the built-in faces model has no layers
    expect(page.locator("#family_builtin_note")).to_contain_text("FFHQ")
    page.locator("#family_father input[type=file]").set_input_files(str(laos))
    faces = page.locator("#family_father_faces")
    expect(faces).to_be_visible(timeout=60_000)
    expect(page.locator("#family_align_note")).to_contain_text("face 1 of 2", timeout=60_000)
    first = page.locator("#family_father_crop img").get_attribute("src")
    faces.locator("img").nth(1).click()
    expect(page.locator("#family_align_note")).to_contain_text("face 2 of 2", timeout=60_000)
    assert page.locator("#family_father_crop img").get_attribute("src") != first


def test_stop_in_a_real_browser_says_where_and_offers_the_partial_result(fresh_page):
    """Stop runs beside the projection (not queued behind it) and the run ends with what it has."""
    from playwright.sync_api import expect

    page = fresh_page

    photo = shared_path("data", "faces", "photos", "singnet_woman_portrait.jpg")  # public domain: the README shows it
    page.get_by_role("tab", name="Projection").click()
    page.locator("#proj_image input[type=file]").set_input_files(str(photo))
    page.locator("#proj_settings").get_by_text("Settings").first.click()
    tune = page.locator("#proj_tune input[type=checkbox]")
    tune.uncheck()  # Stop must land in the projection, not the tuning after it (and the opened settings are drawn)
    steps = page.locator("#proj_steps input[type=number]")
    for _ in range(3):  # a typed number is committed on blur; in CI it was once lost while the settings were being drawn
        steps.fill("5000")  # ~a minute on a fast CPU: Stop always lands mid-run
        steps.press("Tab")
        page.wait_for_timeout(300)
        if steps.input_value() == "5000":
            break
    expect(steps).to_have_value("5000")
    expect(tune).not_to_be_checked()
    page.locator("#proj_run").click()
    status = page.locator("#proj_status")
    expect(status).to_contain_text("/5000", timeout=60_000)  # this run's steps (an earlier run's status also says "Step")
    page.locator("#proj_stop").click()
    expect(status).to_contain_text("Stopped at step", timeout=60_000)
    expect(page.locator("#proj_files")).to_contain_text(".npz")


def test_interpolation_stop_in_a_real_browser_shows_the_endpoints_so_far(fresh_page, tmp_path):
    """Stop during the projection of two photos: a stopped state with the two endpoints so far (it was a bare red
    "Error" while the server computed on), and the job has ended: the next run is served at once."""
    from playwright.sync_api import expect

    page = fresh_page
    a = shared_path("data", "faces", "london", "neutral", "001_03.jpg")
    b = shared_path("data", "faces", "london", "neutral", "002_03.jpg")
    page.get_by_role("tab", name="Interpolation").click()
    page.locator("#interp_source").get_by_label("two images").check()
    page.locator("#interp_image_a input[type=file]").set_input_files(str(a))
    page.locator("#interp_image_b input[type=file]").set_input_files(str(b))
    page.locator("#interp_settings").get_by_text("Settings").first.click()
    steps = page.locator("#interp_steps input[type=number]")
    for _ in range(3):  # a typed number is committed on blur (see the Projection Stop test)
        steps.fill("5000")
        steps.press("Tab")
        page.wait_for_timeout(300)
        if steps.input_value() == "5000":
            break
    expect(steps).to_have_value("5000")
    page.locator("#interp_run").click()
    status = page.locator("#interp_status")
    expect(status).to_contain_text("Projecting both images", timeout=60_000)
    page.wait_for_timeout(1500)  # a few steps in
    page.locator("#interp_stop").click()
    expect(status).to_contain_text("Stopped.", timeout=60_000)
    expect(status).to_contain_text("of 5000")
    expect(page.locator("#interp_gallery img")).to_have_count(2)  # A and B as projected so far
    expect(page.locator("#interp_files")).to_contain_text(".npz")
    page.wait_for_timeout(500)
    assert page.get_by_text("Error", exact=True).count() == 0  # no red badge, no error toast
    page.screenshot(path=str(_shots(tmp_path) / "interpolation_stopped.png"), full_page=True)
    page.locator("#interp_source").get_by_label("two seeds").check()  # the stopped job no longer holds the queue
    page.locator("#interp_run").click()
    expect(status).to_contain_text("16 frames", timeout=120_000)


TOAST_LOG = """() => { window.__toasts = []; new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes)
    if (n.nodeType === 1) for (const t of [n, ...n.querySelectorAll('.toast-body')]) if (t.matches('.toast-body'))
        window.__toasts.push(t.innerText); }).observe(document.body, {childList: true, subtree: true}); }"""


def toasts_said(page, text: str) -> int:
    """How many toasts containing ``text`` appeared since TOAST_LOG was installed (gone ones included)."""
    return sum(text in t for t in page.evaluate("window.__toasts"))


def test_family_says_two_faces_once_at_upload_and_not_again_on_a_pick(fresh_page):
    from playwright.sync_api import expect

    page = fresh_page
    laos = shared_path("data", "faces", "photos", "singnet_laos.jpg")
    page.evaluate(TOAST_LOG)
    page.get_by_role("tab", name="Family").click()
    page.locator("#family_father input[type=file]").set_input_files(str(laos))
    expect(page.locator("#family_align_note")).to_contain_text("face 1 of 2", timeout=60_000)
    expect(page.locator("#family_father_faces img")).to_have_count(2)
    page.wait_for_timeout(3000)  # a second toast, if any, has come by now
    assert toasts_said(page, "2 faces") == 1
    page.locator("#family_father_faces img").nth(1).click()
    expect(page.locator("#family_align_note")).to_contain_text("face 2 of 2", timeout=60_000)
    page.wait_for_timeout(3000)
    assert toasts_said(page, "2 faces") == 1
