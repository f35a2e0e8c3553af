"""A newcomer's first hour (issue 18), every tab once, in a real browser: Projection with a photo, Interpolation of two
photos stopped mid-projection, Family with a two-face photo and its picker, the latent map computed, recoloured,
stopped and cleared, and a download that fails in the Models tab. Screenshots of each step go to
$LATENT_LAB_SCREENSHOTS, else to the test's temp folder; look at them after a change to these tabs.

Offline here, and CI must not depend on the network: the StyleGAN download is made to fail as it does offline
(a ConnectionError from the downloader), in the server's own process.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import SHARED, restore_env, use_private_dirs
from tests.test_browser import ARGS, CHROMIUM, TOAST_LOG, _shots, toasts_said

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHOTOS = SHARED / "data" / "faces"
STYLEGAN = "stylegan2/ffhq-256"


@pytest.fixture(scope="module")
def first_hour_app(tmp_path_factory):
    if not PHOTOS.is_dir():
        pytest.skip(f"shared data not present: {PHOTOS} (only developers' machines and CI have ../shared)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    pytest.importorskip("playwright")
    old = use_private_dirs(tmp_path_factory.mktemp("first_hour_browser"))  # a fresh clone: nothing downloaded
    from demos.app import build_app, launch
    from plugins.registry import Registry

    registry = Registry().discover(None, use_entry_points=False)

    def offline(progress=None):
        raise ConnectionError("no internet access to nvlabs-fi-cdn.nvidia.com")

    registry.entry(STYLEGAN).download = offline
    demo = build_app(registry, max_steps=5000)
    launch(demo, block=False, warm_maps=True)  # as `python app.py` does: UMAP compiled in the background
    yield demo
    demo.close()
    restore_env(old)


def _set_number(page, selector: str, value: str) -> None:
    """Type a number into a slider's box; it is committed on blur (retried: once lost while a panel was drawn)."""
    from playwright.sync_api import expect

    box = page.locator(f"{selector} input[type=number]")
    for _ in range(3):
        box.fill(value)
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == value:
            break
    expect(box).to_have_value(value)


def _choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").first.click()
    page.get_by_role("option", name=option, exact=False).first.click()


def _no_bare_error(page) -> None:
    assert page.get_by_text("Error", exact=True).count() == 0, "a red 'Error' badge or toast is on the page"


def test_the_first_hour_every_tab_once(first_hour_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = _shots(tmp_path)
    portrait = PHOTOS / "photos" / "singnet_woman_portrait.jpg"
    two_faces = PHOTOS / "photos" / "singnet_laos.jpg"
    london = [PHOTOS / "london" / "neutral" / f"00{i}_03.jpg" for i in (1, 2)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(first_hour_app.local_url, wait_until="load")
        page.locator("#proj_run").wait_for(timeout=60_000)
        page.evaluate(TOAST_LOG)

        # Projection: a photo of one face, on the faces model the tab opens on.
        expect(page.locator("#proj_model input").first).to_have_value(re.compile("London faces"), timeout=30_000)
        page.locator("#proj_image input[type=file]").set_input_files(str(portrait))
        page.locator("#proj_run").click()
        status = page.locator("#proj_status")
        expect(status).to_contain_text("Done", timeout=240_000)
        expect(page.locator("#proj_preview img")).to_be_visible()
        _no_bare_error(page)
        page.screenshot(path=str(shots / "01_projection.png"), full_page=True)

        # Interpolation: two photos, stopped while they are projected; then a walk between seeds is served at once.
        page.get_by_role("tab", name="Interpolation").click()
        expect(page.locator("#interp_model input").first).to_have_value(re.compile("London faces"))
        page.locator("#interp_source").get_by_label("two images").check()
        page.locator("#interp_image_a input[type=file]").set_input_files(str(london[0]))
        page.locator("#interp_image_b input[type=file]").set_input_files(str(london[1]))
        page.locator("#interp_settings").get_by_text("Settings").first.click()
        _set_number(page, "#interp_steps", "5000")
        page.locator("#interp_run").click()
        status = page.locator("#interp_status")
        expect(status).to_contain_text("Projecting both images", timeout=60_000)
        page.wait_for_timeout(1500)
        page.locator("#interp_stop").click()
        expect(status).to_contain_text("Stopped.", timeout=60_000)
        expect(page.locator("#interp_gallery img")).to_have_count(2)
        _no_bare_error(page)
        page.screenshot(path=str(shots / "02_interpolation_stopped.png"), full_page=True)
        page.locator("#interp_source").get_by_label("two seeds").check()
        page.locator("#interp_run").click()
        expect(status).to_contain_text("16 frames", timeout=120_000)
        page.screenshot(path=str(shots / "03_interpolation_seeds.png"), full_page=True)

        # Family: a photo with two faces: one warning, a picker whose thumbnails load, a pick re-aligns; children.
        page.get_by_role("tab", name="Family").click()
        page.locator("#family_father input[type=file]").set_input_files(str(two_faces))
        expect(page.locator("#family_align_note")).to_contain_text("face 1 of 2", timeout=60_000)
        page.wait_for_function("[...document.querySelectorAll('#family_father_faces img')].length == 2 && [...document"
                               ".querySelectorAll('#family_father_faces img')].every(i => i.complete && i.naturalWidth > 0)",
                               timeout=30_000)
        box = page.locator("#family_father_faces").bounding_box()
        for tile in page.locator("#family_father_faces img").all():  # whole faces: no tile runs past the picker's bottom
            t = tile.bounding_box()
            assert t["y"] + t["height"] <= box["y"] + box["height"] + 1
        page.locator("#family_father_faces img").nth(1).click()
        expect(page.locator("#family_align_note")).to_contain_text("face 2 of 2", timeout=60_000)
        page.locator("#family_mother input[type=file]").set_input_files(str(portrait))
        expect(page.locator("#family_mother_crop img")).to_be_visible(timeout=60_000)
        assert toasts_said(page, "2 faces") == 1
        page.screenshot(path=str(shots / "04_family_picker.png"), full_page=True)
        _set_number(page, "#family_steps", "100")
        page.locator("#family_generate").click()
        expect(page.locator("#family_status")).to_contain_text("children", timeout=240_000)
        expect(page.locator("#family_children img").first).to_be_visible()
        assert toasts_said(page, "2 faces") == 1
        _no_bare_error(page)
        page.screenshot(path=str(shots / "05_family_children.png"), full_page=True)

        # Latent map: PCA, recoloured at once by another label, a UMAP stopped, cleared by a new model.
        page.get_by_role("tab", name="Latent map").click()
        expect(page.locator("#map_dataset input").first).not_to_have_value("", timeout=30_000)
        colour = page.locator("#map_colour input").first
        expect(colour).not_to_have_value("", timeout=30_000)
        first_label = colour.input_value()
        page.locator("#map_run").click()
        points = page.locator("#map_plot .scatterlayer .points path")
        expect(points.first).to_be_visible(timeout=60_000)
        info = page.locator("#map_info")
        expect(info).to_contain_text("points")
        computed = info.inner_text()
        colour.click()
        other = page.locator("[role=option]").filter(has_not_text=first_label).first
        other_label = other.inner_text().strip()
        other.click()
        expect(page.locator("#map_plot")).to_contain_text(other_label, timeout=30_000)  # the legend's or colour bar's title
        assert info.inner_text() == computed  # recoloured, not recomputed
        page.screenshot(path=str(shots / "06_map_recoloured.png"), full_page=True)
        page.locator("#map_method").get_by_label("umap").check()
        page.locator("#map_run").click()
        expect(info).to_contain_text("Computing the UMAP map", timeout=60_000)
        page.locator("#map_stop").click()
        expect(info).to_contain_text("Stopped.", timeout=120_000)
        _no_bare_error(page)
        page.screenshot(path=str(shots / "07_map_umap_stopped.png"), full_page=True)
        page.locator("#map_method").get_by_label("pca").check()
        page.locator("#map_run").click()
        expect(info).to_contain_text("points", timeout=60_000)  # the stopped UMAP no longer holds the queue
        _choose(page, "#map_model", "Small AE — London faces")
        expect(points).to_have_count(0, timeout=30_000)  # the digits' map is gone, not left under the faces' name
        expect(info).to_have_text("")
        page.screenshot(path=str(shots / "08_map_new_model.png"), full_page=True)

        # Models: a download that fails (offline) is a line beside its button, with no red overlay on the dropdown.
        page.get_by_role("tab", name="Models").click()
        _choose(page, "#models_model", "StyleGAN2 FFHQ 256")
        download = page.locator("#models_download")
        expect(download).to_be_visible(timeout=30_000)
        download.click()
        expect(page.locator(".toast-body", has_text="no internet")).to_have_count(1, timeout=60_000)  # one warning
        expect(page.locator("#models_download_status")).to_contain_text("Download failed", timeout=30_000)  # in view
        expect(download).to_be_visible()  # to try again
        _no_bare_error(page)
        page.screenshot(path=str(shots / "09_models_failed_download.png"), full_page=True)
        _choose(page, "#models_model", "Small AE — digits")  # the dropdown takes clicks: nothing lies over it
        expect(page.locator("#models_model input").first).to_have_value(re.compile("digits"))
        browser.close()
