"""The built-in small diffusion model: reproducible training CLI, the shipped pipeline folder, DDIM inversion."""

from __future__ import annotations

import json

import pytest
import torch

from core.photo_to_latent import invert
from plugins.diffusion.ddim import Cancelled, ddim_inverse_scheduler, ddim_invert, ddim_sample, ddim_scheduler
from plugins.diffusion.train import digits_images, roundtrip_psnr
from plugins.diffusion.train import main as train_main
from plugins.small_ae.data import load_digits_dataset
from tests.conftest import ROOT

SHIPPED = ROOT / "plugins" / "diffusion" / "weights" / "digits"
# A little below what the committed weights measure on 64 held-out digits at 50 steps (bench.diffusion; the issue's
# target is 30 dB): 44.9 dB mean, 43.5 dB worst with one fixed-point correction per inversion step (35.7 / 28.3 without).
ROUNDTRIP_50_FLOOR_DB = 42.0


def _train(out, seed=0):
    assert train_main(["digits-tiny", "--out", str(out), "--seed", str(seed), "--eval-steps", "--quiet"]) == 0
    return (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_training_cli_writes_a_pipeline_folder_reproducibly(tmp_path):
    a = _train(tmp_path / "a")
    assert a == _train(tmp_path / "b"), "the same seed must give byte-identical weights"
    assert a != _train(tmp_path / "c", seed=1)
    folder = tmp_path / "a"
    assert json.loads((folder / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    assert (folder / "scheduler" / "scheduler_config.json").is_file()
    assert json.loads((folder / "training.json").read_text())["seed"] == 0


def test_training_cli_refuses_a_bad_step_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train_main(["digits-tiny", "--out", str(tmp_path), "--steps", "0"])
    assert info.value.code == 2 and "--steps must be at least 1" in capsys.readouterr().err


def test_inverse_timesteps_mirror_the_sampler():
    from diffusers import DDPMScheduler

    config = DDPMScheduler(clip_sample=True).config
    for steps in (1, 10, 50, 1000):
        assert torch.equal(ddim_inverse_scheduler(config, steps).timesteps, ddim_scheduler(config, steps).timesteps.flip(0))
    assert not ddim_scheduler(config, 10).config.clip_sample  # clipping would break the round trip
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(ValueError, match="whole number from 1 to 1000"):
            ddim_scheduler(config, bad)


# ----- the shipped model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(monkeypatch_module):
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(SHIPPED / "unet", low_cpu_mem_usage=False).eval()
    return unet, DDPMScheduler.load_config(SHIPPED / "scheduler")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched
        yield mp


def test_shipped_folder_is_small_and_safe():
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert {p.suffix for p in files} <= {".json", ".safetensors"}
    assert {p.relative_to(SHIPPED).as_posix() for p in files} >= {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    }


def test_shipped_model_inverts_held_out_digits(shipped):
    unet, config = shipped
    ds = load_digits_dataset()
    test = digits_images(ds, unet.config.sample_size)[torch.from_numpy(ds.heldout)][:16]
    psnr = roundtrip_psnr(unet, config, test, 50)
    assert psnr.mean() >= ROUNDTRIP_50_FLOOR_DB - 1.0, psnr
    # The inverted noise is noise-like (not the image itself): a round trip through x_T is a real test.
    xT = ddim_invert(unet, config, test[:4], 10)
    assert 0.6 < xT.std().item() < 1.5 and (xT - test[:4]).abs().mean() > 0.3


def test_ddim_reports_progress_and_stops(shipped):
    unet, config = shipped
    seen = []
    x = torch.zeros(1, 1, unet.config.sample_size, unet.config.sample_size)
    ddim_sample(unet, config, x, 5, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    with pytest.raises(Cancelled, match="stopped at step 2 of 5"):
        ddim_invert(unet, config, x, 5, progress=lambda i, n: seen.append(i), cancel=lambda: len(seen) >= 7)


@pytest.fixture(scope="module")
def app_model(monkeypatch_module):
    """The shipped model as users get it: through the registry, as the app's DiffusionModel."""
    from plugins.registry import Registry

    return Registry().discover(use_entry_points=False).get("diffusion/digits")


def _roughness(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image: speckle is rough, strokes are smooth."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))) / 2


def test_app_model_and_trainer_share_one_ddim(shipped, app_model):
    """The app's inversion is the trainer's (plugins.diffusion.ddim): same x_T, same round trip."""
    unet, config = shipped
    ds = load_digits_dataset()
    test = digits_images(ds, unet.config.sample_size)[torch.from_numpy(ds.heldout)][:2]
    ours = invert(app_model, test, "x_T", steps=5)
    assert torch.allclose(ours, ddim_invert(unet, config, test, 5).flatten(1), atol=1e-5)
    decoded = app_model.generate(ours, "x_T", **app_model.decode_options(5, inverted=True))
    assert torch.allclose(decoded, ddim_sample(unet, config, ours.reshape(test.shape), 5).clamp(-1, 1), atol=1e-5)


def test_shipped_model_samples_read_as_digits(app_model):
    """Fresh samples from the app's model (registry, default decoding) are digit strokes, not speckle: a classifier
    fitted on the real 8x8 training digits reads them about as confidently as real held-out digits (0.88 on average)
    and finds several different digits, and none is rougher than the roughest real digit. Without clipping x0 the
    same noises give speckle (7 of these 32 measured), which is why fresh samples are clipped."""
    from sklearn.linear_model import LogisticRegression

    ds = load_digits_dataset()
    x, y = ds.images.flatten(1).numpy(), ds.labels["digit"]
    clf = LogisticRegression(max_iter=2000).fit(x[~ds.heldout], y[~ds.heldout])
    z = app_model.sample(32, seed=5)
    samples = app_model.generate(z, steps=20)
    assert samples.shape == (32, 1, 16, 16)
    p = clf.predict_proba(torch.nn.functional.avg_pool2d(samples, 2).flatten(1).numpy())
    assert p.max(1).mean() >= 0.7 and len(set(p.argmax(1))) >= 6
    noise = torch.rand(32, 1, 8, 8) * 2 - 1  # the same check on noise fails
    assert clf.predict_proba(noise.flatten(1).numpy()).max(1).mean() < 0.7
    roughest_real = _roughness(digits_images(ds, 16)[torch.from_numpy(ds.heldout)]).max()
    assert (_roughness(samples) <= roughest_real).all()
    unclipped = app_model.generate(z, **app_model.decode_options(20, inverted=True))
    assert (_roughness(unclipped) > roughest_real).sum() >= 2


def test_trainer_sample_grid_is_clean(shipped):
    """The trainer's own preview grid (clipped, like the app's fresh samples) has no speckle either."""
    from plugins.diffusion.train import sample_grid

    unet, config = shipped
    ds = load_digits_dataset()
    roughest_real = _roughness(digits_images(ds, 16)[torch.from_numpy(ds.heldout)]).max()
    assert (_roughness(sample_grid(unet, config, 16, seed=5, steps=20)) <= roughest_real).all()
