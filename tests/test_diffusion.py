"""Diffusion backends: users' diffusers folders (random tiny models) loaded, refused, inverted, and hub downloads offline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.images import psnr
from core.model import Cancelled, sample_budget
from core.photo_to_latent import invert
from plugins.registry import Registry
from tests.diffusion_fixtures import save_bare_unet, save_pipeline, save_vae

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers")
    return {
        "pipe": save_pipeline(root / "pipe"),
        "unet": save_bare_unet(root / "unet"),
        "kl": save_vae(root / "kl", "AutoencoderKL", 64),
        "tiny": save_vae(root / "tiny", "AutoencoderTiny"),
        "vq": save_vae(root / "vq", "VQModel"),
    }


@pytest.fixture(scope="module")
def registry():
    return Registry().discover(use_entry_points=False)


def _images(n: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear")
    return smooth * 1.6 - 0.8


@pytest.mark.parametrize("which,kind,spatial", [("kl", "AutoencoderKL", (4, 8, 8)), ("tiny", "AutoencoderTiny", (4, 32, 32)),
                                                ("vq", "VQModel", (3, 16, 16))])
def test_vaes_load_as_user_models(registry, folders, which, kind, spatial):
    name = registry.add_file(folders[which])
    model = registry.get(name)
    assert model.kind == kind and model.has_encoder
    sp = model.spaces["latent"]
    assert sp.can_sample is False and sp.spatial[0] == spatial[0]
    assert math.prod(sp.spatial) == sp.size
    x = _images(2, model.image_size)
    z = model.encode(x)
    assert z.shape == (2, sp.size)
    assert model.generate(z).shape == x.shape
    with pytest.raises(ValueError, match="no prior"):
        model.sample(1)
    assert model.datasets() and "samples" not in " ".join(model.datasets())  # no prior: encoded images only


def test_vae_refinement_improves_on_the_encoder(registry, folders):
    model = registry.get(registry.add_file(folders["kl"]))
    x = _images(1, model.image_size)
    encoded = float(psnr(model.generate(model.encode(x)), x).mean())
    refined = float(psnr(model.generate(invert(model, x, steps=30)), x).mean())
    assert refined > encoded + 0.5


def test_ddim_inversion_round_trip_and_refinement(registry, folders):
    model = registry.get(registry.add_file(folders["pipe"]))
    assert model.iterative_inversion and model.spaces["x_T"].prior == "gaussian"
    x = _images(2, model.image_size)
    seen = []
    lat = invert(model, x, "x_T", steps=20, progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (39, 40) and len(seen) == 39  # inversion + reconstruction steps, streamed
    rec = model.generate(lat, "x_T", steps=20)
    good = float(psnr(rec, x).mean())
    model.refine = 0  # the plain DDIMInverseScheduler
    try:
        plain = float(psnr(model.generate(invert(model, x, "x_T", steps=20), "x_T", steps=20), x).mean())
    finally:
        model.refine = 1
    noise = float(psnr(model.generate(model.sample(2, 5), "x_T", steps=20), x).mean())
    assert good > 25 and good > plain + 3 and noise < 15


def test_bare_unet_folder_and_stage_latents(registry, folders):
    model = registry.get(registry.add_file(folders["unet"]))
    z = model.sample(1, 0, "x_T")
    same = model.convert(z, "x_T", "x_T+")
    assert torch.allclose(model.generate(same, "x_T+", steps=6), model.generate(z, "x_T", steps=6), atol=1e-5)
    assert list(model.layer_groups("x_T+")) == ["coarse", "middle", "fine"]
    other = model.sample(1, 1, "x_T+")
    mixed = model.mix(same, other, model.layer_groups("x_T+")["fine"], "x_T+")  # late steps follow the other noise
    a, b = model.generate(same, "x_T+", steps=6), model.generate(mixed, "x_T+", steps=6)
    assert not torch.allclose(a, b)


def test_iterative_decode_streams_and_cancels(registry, folders):
    model = registry.get(registry.add_file(folders["pipe"]))
    steps = []
    model.generate(model.sample(3, 0), batch_size=2, steps=4, progress=lambda i, n: steps.append((i, n)))
    assert steps[-1] == (8, 8)  # 2 batches x 4 steps
    calls = []
    with pytest.raises(Cancelled):
        model.generate(model.sample(1, 0), steps=10, cancel=lambda: calls.append(1) or len(calls) > 3)


def test_inversion_stops_with_a_partial_latent(registry, folders):
    from core.projection import ProjectionConfig, project

    model = registry.get(registry.add_file(folders["pipe"]))
    x = _images(1, model.image_size)
    count = []
    events = list(project(model, x, ProjectionConfig(space="x_T", steps=10), should_stop=lambda: count.append(1) or len(count) > 4))
    assert events[-1].done and events[-1].stopped and events[-1].preview is not None and events[-1].step == 4


def test_streams_leave_the_threads_grad_mode_alone(registry, folders):
    """Gradio runs each step of a stream in a pool thread: a paused inversion must not leave grad off there,
    or the next user's projection in that thread fails (CI saw this), and a projection must not depend on it."""
    from core.projection import ProjectionConfig, project, run_projection

    pipe = registry.get(registry.add_file(folders["pipe"]))
    stream = project(pipe, _images(1, pipe.image_size), ProjectionConfig(space="x_T", steps=3))
    next(stream)
    assert torch.is_grad_enabled()
    kl = registry.get(registry.add_file(folders["kl"]))
    with torch.no_grad():  # as a thread left by some other library would be
        result = run_projection(kl, _images(1, 64), ProjectionConfig(steps=2))
    assert math.isfinite(result.psnr)
    stream.close()


@pytest.mark.parametrize("mutate,message", [
    (lambda f: (f / "pipeline.py").write_text("print('hi')"), "contains Python code"),
    (lambda f: _edit(f / "model_index.json", unet=["my_pipelines", "FancyUNet"]), "outside diffusers"),
    (lambda f: _edit(f / "unet" / "config.json", auto_map={"AutoModel": "x.Y"}), "trust_remote_code"),
    (lambda f: _edit(f / "model_index.json", _class_name="StableDiffusionPipeline"), "unconditional"),
    (lambda f: _edit(f / "unet" / "config.json", _class_name="UNet2DConditionModel"), "conditional"),
])
def test_folders_asking_for_code_are_refused(tmp_path, registry, mutate, message):
    folder = save_pipeline(tmp_path / "p")
    mutate(folder)
    with pytest.raises(ValueError, match=message):
        registry.add_file(folder)


def _edit(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_hub_file_choice():
    from plugins.diffusion.hub import choose_files

    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.safetensors",
             "scheduler/scheduler_config.json", "README.md", "vae.ckpt"]
    assert sorted(choose_files(files, "a/b")) == sorted(["model_index.json", "unet/config.json", "scheduler/scheduler_config.json",
                                                         "unet/diffusion_pytorch_model.safetensors"])
    assert choose_files(["config.json", "diffusion_pytorch_model.bin"], "a/b") == ["config.json", "diffusion_pytorch_model.bin"]
    with pytest.raises(ValueError, match="Python code"):
        choose_files([*files, "pipeline.py"], "a/b")


def test_offline_download_says_what_to_do_at_once(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    from plugins.diffusion import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConnectionError, match=r"google/ddpm-cifar10-32 is not in the Hugging Face cache.*offline.*download"):
        hub.download("google/ddpm-cifar10-32")
    reg = Registry().discover(use_entry_points=False)
    assert reg.status("diffusion/ddpm-cifar10-32") == "not downloaded"
    with pytest.raises(RuntimeError, match="google/ddpm-cifar10-32 is not in the Hugging Face cache"):
        reg.get("diffusion/ddpm-cifar10-32")
    name = reg.add_file("someone/some-unet")  # a hub id: listed, fetched on Download
    assert name == "someone/some-unet" and reg.status(name) == "not downloaded"


def test_large_latents_stay_bounded():
    from core.card import LatentSpace
    from core.latent_map import MAP_DIMS, Neighbours, reduce

    big = LatentSpace("x_T", (3 * 256 * 256,), "gaussian", spatial=(3, 256, 256))
    assert big.large and sample_budget(big) == 21  # 21 x 196,608 floats = 16 MB, not 1,000 samples
    lat = np.random.default_rng(0).normal(size=(12, 3 * 64 * 64)).astype(np.float32)
    m = reduce(lat, "pca", 2)
    assert "summarised" in m.info and m.coords.shape == (12, 2)
    back, how = m.latent_at(m.coords[3], lat, k=1)
    assert back.shape == (1, lat.shape[1]) and "nearest" in how and np.allclose(back[0], lat[3], atol=1e-4)
    assert Neighbours(lat).latents.shape == (12, MAP_DIMS)


def test_cli_projects_and_interpolates_a_folder(folders, tmp_path, capsys):
    from app import main

    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["project", str(img), "--model", str(folders["pipe"]), "--steps", "3", "--out", str(tmp_path / "p")]) == 0
    from core.export import load_latent

    lat, info = load_latent(tmp_path / "p" / "latent.npz")
    assert lat.shape[-1] == 768
    assert main(["interpolate", "--seeds", "1", "2", "--model", str(folders["pipe"]), "--frames", "3", "--out", str(tmp_path / "i"),
                 "--decode-steps", "4"]) == 0
    assert len(list((tmp_path / "i").glob("frames/*.png"))) == 3
    capsys.readouterr()
    assert main(["interpolate", "--seeds", "1", "2", "--model", str(folders["pipe"]), "--out", str(tmp_path / "j"),
                 "--decode-steps", "0"]) != 0
    assert "whole number from 1 to 1000" in capsys.readouterr().err and not (tmp_path / "j").exists()


def test_no_sampled_directions_for_large_or_priorless_spaces(registry, folders, tmp_path, monkeypatch):
    from core.user_directions import directions_for
    from plugins.diffusion import add_path

    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path))
    vae = registry.get(registry.add_file(folders["kl"]))
    assert directions_for("kl", vae) == []  # no prior: nothing to sample (and no error)
    big = add_path(save_pipeline(tmp_path / "big", 96)).load()  # 3 x 96 x 96 = 27,648 numbers: large
    assert big.spaces["x_T"].large
    monkeypatch.setattr(big, "sample", lambda *a, **k: pytest.fail("sampled a large space for directions"))
    assert directions_for("big", big) == []


def test_builtin_folders_are_discovered_like_any_folder(tmp_path, monkeypatch):
    import plugins.diffusion as plugin

    save_pipeline(tmp_path / "digits")
    (tmp_path / "notes").mkdir()  # not a diffusers folder: ignored
    monkeypatch.setattr(plugin, "WEIGHTS", tmp_path)
    entries = {e.name: e for e in plugin.get_models()}
    assert "diffusion/digits" in entries and "diffusion/notes" not in entries
    entry = entries["diffusion/digits"]
    assert entry.tags == ("digits",) and entry.card.source == "built-in" and entry.status() == "ready"
    assert entry.load().spaces["x_T"].spatial == (3, 16, 16)
