"""Diffusion models in every tab through gradio_client: a user's DDPM pipeline folder (tagged as faces, so Family offers
it) and a user's AutoencoderKL folder, both tiny random models written with save_pretrained."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.conftest import app_error, restore_env, shared_path, use_private_dirs
from tests.diffusion_fixtures import save_bare_unet, save_pipeline, save_vae

pytest.importorskip("diffusers")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dapp")
    old = use_private_dirs(tmp)  # nothing downloaded there: no StyleGAN, no LPIPS weights
    from demos.app import build_app, launch
    from plugins.registry import Registry

    reg = Registry().discover(None, use_entry_points=False)
    pipe = reg.add_file(save_pipeline(tmp / "pipe", 32, {"title": "Tiny DDPM", "tags": ["faces"], "licence": "MIT"}))
    vae = reg.add_file(save_vae(tmp / "kl", "AutoencoderKL", 64))
    (tmp / "models").mkdir()
    demo = build_app(reg, max_steps=300, models_dir=tmp / "models")  # the operator's --models-dir
    launch(demo, block=False)
    client = Client(demo.local_url, verbose=False)
    yield client, pipe, vae, tmp
    client.close()
    demo.close()
    restore_env(old)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "blob.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR).save(p)
    return str(p)


def test_projection_tab_inverts_and_shows_channels(served, photo):
    client, pipe, vae, _ = served
    *_, status, curve, files = client.predict(pipe, handle_file(photo), "x_T+", "auto", "auto", 4, False, 0, api_name="/project")
    assert "DDIM inversion" in status and "x_T+" in status and "Done" in status
    assert {Path(f).suffix for f in files} == {".npz", ".png"} and any("latent_channels" in f for f in files)
    *_, channels, status, curve, files = client.predict(vae, handle_file(photo), "latent", "auto", "auto", 3, False, 0,
                                                        api_name="/project")
    grid = Image.open(next(f for f in files if "latent_channels" in f))
    assert "encoder" in status and grid.size[0] > 3 * grid.size[1]  # four channels side by side
    assert [c["caption"].split(":")[0] for c in channels] == [f"channel {k}" for k in range(1, 5)]  # and as a panel


def test_projection_of_a_non_square_photo_at_its_own_size(served, tmp_path):
    """A visitor's TAESD-like VAE (factor 8) from --models-dir: a 203×75 photo is used at 200×72 (said so), its latent
    is 4 × 9 × 25 and shown as four channel images; a lower largest side shrinks it; interpolation keeps A's size."""
    import zipfile

    from core.export import load_latent

    client, _, _, tmp = served
    save_vae(tmp / "models" / "taesd", "AutoencoderTiny")
    name = client.predict(None, "taesd", "Tiny TAESD", False, api_name="/add_pickle").split("`")[1]
    wide, square = tmp_path / "wide.png", tmp_path / "square.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((203, 75), Image.BILINEAR).save(wide)
    Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR).save(square)
    _, _, channels, status, _, files = client.predict(name, handle_file(str(wide)), "latent", "encoder", "mse", 2, False, 0,
                                                      False, 512, api_name="/project")
    assert "used at 200×72 px" in status and "multiple of 8" in status and "latent 4 × 9 × 25" in status
    assert Image.open(next(f for f in files if "reconstruction" in f)).size == (200, 72)
    assert load_latent(next(f for f in files if f.endswith(".npz")))[0].shape[-1] == 4 * 9 * 25
    assert len(channels) == 4 and all(": ±" in c["caption"] for c in channels)
    assert Image.open(channels[0]["image"]).size[0] > Image.open(channels[0]["image"]).size[1]  # wide, like the photo
    *_, status, _, files = client.predict(name, handle_file(str(wide)), "latent", "encoder", "mse", 2, False, 0, False, 96,
                                          api_name="/project")
    assert "at most 96 px" in status and Image.open(next(f for f in files if "reconstruction" in f)).size == (96, 32)
    assert "must be from 64 to 2048" in app_error(lambda: client.predict(name, handle_file(str(wide)), "latent", "encoder", "mse", 2, False,
                                                            0, False, 4, api_name="/project"))
    *_, files, status = client.predict(name, "two images", 0, 0, handle_file(str(wide)), handle_file(str(square)), 3, "", "auto",
                                       [], 1, False, 8, False, api_name="/interpolate")
    with zipfile.ZipFile(next(f for f in files if f.endswith(".zip"))) as z:
        from io import BytesIO

        sizes = {Image.open(BytesIO(z.read(n))).size for n in z.namelist() if n.endswith(".png")}
    assert sizes == {(200, 72)}  # both endpoints at image A's size


def test_interpolation_tab(served, photo):
    client, pipe, vae, _ = served
    gallery, gif, video, files, status = client.predict(pipe, "two seeds", 1, 2, None, None, 4, "", "auto", [], 3, False, 8, False,
                                                        api_name="/interpolate")
    assert len(gallery) == 4 and "slerp" in status
    gallery, *_, status = client.predict(vae, "two images", 0, 0, handle_file(photo), handle_file(photo), 3, "", "auto", [], 2, False,
                                         8, False, api_name="/interpolate")
    assert len(gallery) == 3


def test_diffusion_steps_setting_reaches_the_sampler(served):
    """The "Diffusion steps" input decides how many DDIM steps decode each frame or map point (other models ignore it)."""
    client, pipe, vae, _ = served

    def frames(steps):
        gallery, *_ = client.predict(pipe, "two seeds", 1, 2, None, None, 2, "", "auto", [], 3, False, 8, False, steps,
                                     api_name="/interpolate")
        return [np.asarray(Image.open(g["image"] if isinstance(g, dict) else g[0]), dtype=int) for g in gallery]

    two, two_again, five = frames(2), frames(2), frames(5)
    assert all((a == b).all() for a, b in zip(two, two_again, strict=True))
    assert any(np.abs(a - b).mean() > 1 for a, b in zip(two, five, strict=True))
    datasets, _ = client.predict(pipe, api_name="/map_datasets")
    ds = datasets["choices"][0][0] if isinstance(datasets["choices"][0], list | tuple) else datasets["choices"][0]
    one, _, _ = client.predict(pipe, ds, "pca", 2, None, 0, 2, api_name="/map_decode_point")
    other, _, _ = client.predict(pipe, ds, "pca", 2, None, 0, 5, api_name="/map_decode_point")
    assert np.abs(np.asarray(Image.open(one), dtype=int) - np.asarray(Image.open(other), dtype=int)).mean() > 1


def test_diffusion_steps_shown_only_for_iterative_models(served):
    from demos.common import decode_steps_view
    from plugins.registry import Registry

    _, _, _, tmp = served
    reg = Registry().discover(None, use_entry_points=False)
    pipe, vae = reg.add_file(tmp / "pipe"), reg.add_file(tmp / "kl")
    ctx = SimpleNamespace(registry=reg, model=reg.get)
    assert decode_steps_view(ctx, pipe)["visible"] is True
    assert decode_steps_view(ctx, vae)["visible"] is False
    assert decode_steps_view(ctx, None)["visible"] is False


def test_latent_map_tab_on_a_large_latent(served):
    client, _, vae, _ = served
    datasets, _ = client.predict(vae, api_name="/map_datasets")
    names = [c[0] if isinstance(c, list | tuple) else c for c in datasets["choices"]]
    assert names == ["encoded digits (32)"]
    colour = client.predict(vae, names[0], api_name="/map_labels")["value"]
    plot, info = client.predict(vae, names[0], "pca", 2, colour, api_name="/map")
    assert "32 points" in info and "block-averaged to 1024" in info
    img, text = client.predict(vae, names[0], "pca", 2, colour, 0.5, -0.5, 0, api_name="/map_decode_xy")
    assert "nearest" in text and Image.open(img).size[0] >= 64


def test_models_tab_lists_and_adds_folders(served):
    client, pipe, _, tmp = served
    table, _ = client.predict(api_name="/models")
    rows = {r[0]: r for r in table["data"]}
    assert pipe in rows and rows["diffusion/ddpm-cifar10-32"][2] == "not downloaded" and "Apache" in rows["diffusion/ddpm-cifar10-32"][4]
    save_bare_unet(tmp / "models" / "bare")  # a folder the operator put in --models-dir, named by visitors
    note = client.predict(None, "bare", "My UNet", False, api_name="/add_pickle")
    assert "Added **My UNet**" in note
    (tmp / "models" / "bare" / "pipeline.py").write_text("import os")
    assert "Python code" in app_error(lambda: client.predict(None, "bare", "", False, api_name="/add_pickle"))
    outside = save_bare_unet(tmp / "elsewhere")  # a folder outside --models-dir is never opened: "no such model"
    assert "no such model" in app_error(lambda: client.predict(None, str(outside), "", False, api_name="/add_pickle"))


def test_family_tab_with_stage_dominance(served):
    client, pipe, _, _ = served
    dad = handle_file(str(shared_path("data", "faces", "london", "neutral", "001_03.jpg")))
    mum = handle_file(str(shared_path("data", "faces", "london", "neutral", "002_03.jpg")))
    args = [pipe, dad, mum, 3, 0.5, "father", "blend", "mother", 0.0, 0.0, "", 0.0, 0.3, 1, 2, 1, 1, 4]  # faces 1, 4 diffusion steps
    gallery, files, status, fproj, mproj = client.predict(*args, api_name="/family_children")
    assert len(gallery) == 2 and len([f for f in files if f.endswith(".npz")]) == 2 and "not a prediction" in status
