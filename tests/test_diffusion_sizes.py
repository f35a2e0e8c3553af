"""VAEs at any size that is a multiple of their factor: photos at their own aspect (non-square), rounded sizes said
plainly, latents C x H/f x W/f, and models with one size refusing others; tiny random VAEs from save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.card import ModelCard
from core.image_input import fit, input_for, working_shape
from core.images import channel_grid, channel_images, from_pil
from tests.diffusion_fixtures import save_pipeline, save_vae

pytest.importorskip("diffusers")
CARD = ModelCard(name="tiny", title="Tiny VAE", description="", trained_on="nothing", resolution=0, licence="MIT", source="")


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    from plugins.diffusion import load_folder

    root = tmp_path_factory.mktemp("vaes")
    return {kind: load_folder(save_vae(root / kind, kind, 64), CARD) for kind in ("AutoencoderTiny", "AutoencoderKL")}


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)


def test_working_shape_rounds_and_caps_and_says_so():
    assert working_shape((64, 48), 8, 512) == ((48, 64), "")  # already fine: used as it is
    shape, note = working_shape((203, 75), 8, 512)
    assert shape == (72, 200) and "203×75" in note and "200×72" in note and "multiple of 8" in note and "at most" not in note
    shape, note = working_shape((1200, 900), 8, 512)  # 4:3, longer side capped
    assert shape == (384, 512) and "at most 512 px" in note
    shape, _ = working_shape((3000, 20), 8, 512)  # a sliver keeps at least one multiple a side
    assert shape == (8, 512)
    with pytest.raises(ValueError, match="at least 8"):
        working_shape((64, 64), 8, 4)


def test_fit_keeps_the_centre_at_the_asked_aspect():
    img = Image.new("RGB", (300, 100), "black")
    img.paste((255, 255, 255), (100, 0, 200, 100))  # a white middle third
    out = fit(img, (50, 50))  # a square from a 3:1 photo: its middle third
    assert out.size == (50, 50) and np.asarray(out).min() > 200
    assert fit(img, (40, 120)).size == (120, 40)


@pytest.mark.parametrize("kind", ["AutoencoderTiny", "AutoencoderKL"])
def test_a_non_square_photo_goes_through_a_vae_at_its_own_size(vaes, kind):
    from core.projection import ProjectionConfig, project

    model = vaes[kind]
    f, c = model.size_multiple, model.spaces["latent"].spatial[0]
    base_spaces = dict(model.spaces)
    inp = input_for(model, _photo(203, 75), max_side=512)
    h, w = inp.shape
    assert h % f == 0 and w % f == 0 and abs(w - 203) < f and abs(h - 75) < f and h != w
    view = model.at_size(h, w)
    assert view.image_shape == (h, w) and view.spaces["latent"].spatial == (c, h // f, w // f)
    assert model.spaces == base_spaces and model.image_shape == (model.image_size,) * 2  # the model itself is unchanged
    assert view.vae is model.vae  # a view, not a copy of the weights
    x = from_pil(inp.image)
    z = view.encode(x)
    assert z.shape == (1, c * (h // f) * (w // f))
    assert view.generate(z).shape == (1, 3, h, w)
    *_, last = project(view, x, ProjectionConfig.for_model(view, "latent", steps=2, preview_every=1))
    assert last.latent.shape == z.shape and last.preview.shape == (1, 3, h, w)
    with pytest.raises(ValueError, match="shape"):
        model.encode(x)  # the square model does not take it


def test_sizes_that_are_not_multiples_are_refused_plainly(vaes, tmp_path):
    from plugins.diffusion import load_folder

    model = vaes["AutoencoderTiny"]
    with pytest.raises(ValueError, match="multiples of 8.*60×64"):
        model.at_size(64, 60)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.at_size(0, 64)
    assert model.at_size(model.image_size, model.image_size) is model
    unet = load_folder(save_pipeline(tmp_path / "pipe", 16), CARD)  # a pixel diffusion model has one size
    assert not unet.resizable and unet.at_size(16, 16) is unet
    with pytest.raises(ValueError, match="16×16 images only"):
        unet.at_size(16, 32)


def test_vae_cards_say_any_multiple_of_their_factor_works(vaes):
    from plugins.diffusion.catalog import CATALOG

    for model in vaes.values():
        side = model.image_size
        assert f"multiples of {model.size_multiple} ({side}×{side} by default)" in model.card.to_markdown()
    for name in ("diffusion/sd-vae-ft-mse", "diffusion/taesd"):  # shown before any download
        assert "any width and height that are multiples of 8" in CATALOG[name][1].to_markdown()
    assert "- **Resolution:** 256×256" in CATALOG["diffusion/ddpm-celebahq-256"][1].to_markdown()  # fixed size


def test_second_image_takes_the_first_ones_size(vaes):
    model = vaes["AutoencoderTiny"]
    first = input_for(model, _photo(203, 75), max_side=512)
    second = input_for(model, _photo(64, 64, 1), shape=first.shape)
    assert second.shape == first.shape and "centre-cropped" in second.note and "the first image's size" in second.note
    same = input_for(model, _photo(64, 64), align_face=False)  # neither a size nor a limit: the model's own square
    assert same.shape == (model.image_size, model.image_size) and same.note == ""


def test_channel_images_are_symmetric_around_zero():
    z = np.zeros((2, 3, 4), np.float32)
    z[0, 0, 0], z[0, 1, 1] = 2.0, -1.0
    z[1] = 0.5
    (a, s0), (b, s1) = channel_images(z.ravel(), (2, 3, 4))
    assert s0 == 2.0 and s1 == 0.5
    assert a[0, 0] == 255 and a[2, 2] in (127, 128) and 60 <= a[1, 1] <= 70  # -1 of ±2: a quarter of the way up
    assert (b == 255).all()
    assert channel_grid(z.ravel(), (2, 3, 4)).shape == (3, 4 + 1 + 4)


def test_cli_projects_a_photo_at_its_own_aspect(tmp_path, vaes):
    from app import main
    from core.export import load_latent

    folder = save_vae(tmp_path / "taesd", "AutoencoderTiny")
    _photo(203, 75).save(tmp_path / "wide.png")
    out = tmp_path / "p"
    assert main(["project", str(tmp_path / "wide.png"), "--model", str(folder), "--steps", "2", "--max-side", "96",
                 "--out", str(out)]) == 0
    assert Image.open(out / "reconstruction.png").size == (96, 32)  # 203×75 -> 96×35.5 -> sides rounded to 8
    lat, _ = load_latent(out / "latent.npz")
    assert lat.shape[-1] == 4 * (32 // 8) * (96 // 8)
    _photo(64, 64, 1).save(tmp_path / "square.png")
    assert main(["interpolate", str(tmp_path / "wide.png"), str(tmp_path / "square.png"), "--model", str(folder), "--frames",
                 "3", "--steps", "1", "--max-side", "96", "--out", str(tmp_path / "i")]) == 0
    assert {Image.open(p).size for p in (tmp_path / "i").glob("frames/*.png")} == {(96, 32)}

