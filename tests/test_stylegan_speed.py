"""StyleGAN projection start (latent bank), bf16 gradient decodes and pivotal tuning of StyleGAN face models."""

from __future__ import annotations

import pytest
import torch

from core.card import ModelCard
from core.images import psnr
from core.projection import ProjectionConfig, run_projection
from plugins.stylegan import start
from plugins.stylegan.model import FACE_TUNING_STEPS, StyleGANModel, prepare
from tests.conftest import shared_path

CARD = ModelCard(name="stylegan/fixture", title="StyleGAN fixture", description="random weights", trained_on="nothing",
                 resolution=32, licence="none", source="built-in")  # fmt: skip


def _fixture(name: str = "ada_r32.pkl") -> StyleGANModel:
    from plugins.stylegan.pickle_loader import load_network_pickle

    return StyleGANModel(load_network_pickle(shared_path("fixtures", "stylegan", name)), CARD)


def _targets(m: StyleGANModel, n: int = 4) -> torch.Tensor:
    """Drawings of the model at known latents (psi 0.7), as in bench/projection.py."""
    z = torch.stack([torch.randn(m.G.z_dim, generator=torch.Generator().manual_seed(1000 + s)) for s in range(n)])
    with torch.no_grad():
        return m.G.synthesis(m.G.mapping(z, None, truncation_psi=0.7), noise_mode="none")


def _cfg(m: StyleGANModel, init: str, steps: int) -> ProjectionConfig:
    return ProjectionConfig.for_model(m, "w+", steps=steps, init=init, loss="mse", noise_mode="none", preview_every=0)


def test_bank_start_is_deterministic_and_nearer_than_the_mean(tmp_path):
    m, t = _fixture(), _targets(_fixture())
    assert m.projection_defaults("w+")["auto_init"] == "bank"
    cfg = _cfg(m, "bank", 1)
    first = m.bank_start(t, "w+", cfg)
    again = _fixture().bank_start(t, "w+", cfg)  # a fresh bank made from the same seed
    assert first.shape == (4, m.G.num_ws, m.G.w_dim) and torch.equal(first, again)
    m.bank_dir = tmp_path  # kept on disk, read back identical by another model object with the same weights
    m.__dict__.pop("_banks")
    saved = m.bank_start(t, "w+", cfg)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    other = _fixture()
    other.bank_dir = tmp_path
    other.G.synthesis.forward = None  # reading the bank must not draw anything
    assert torch.equal(other.bank_start(t, "w+", cfg), saved) and torch.equal(saved, first)
    with torch.no_grad():
        mean = m.mean_latent("w+").expand_as(first)
        at_bank, at_mean = (float(psnr(m.decode(x, "w+", noise_mode="none"), t).mean()) for x in (first, mean))
    assert at_bank > at_mean + 1.0


def test_bank_start_fits_better_in_few_steps():
    m = _fixture()
    t = _targets(m)
    from_bank = run_projection(m, t, _cfg(m, "bank", 15))
    from_mean = run_projection(m, t, _cfg(m, "mean", 15))
    assert from_bank.init == "bank" and from_mean.init == "mean"
    assert from_bank.psnr > from_mean.psnr + 0.5


def test_masked_bank_start_compares_inside_the_mask():
    m = _fixture()
    t = _targets(m, 2)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    cfg = _cfg(m, "bank", 1)
    noisy = t.clone()
    noisy[..., :8, :] = torch.randn(2, 3, 8, 32)  # outside the mask only
    assert torch.equal(m.bank_start(noisy, "w+", cfg, mask), m.bank_start(t, "w+", cfg, mask))


def test_inference_stays_float32_and_gradient_decodes_agree():
    m = _fixture()
    w = m.sample(2, seed=3, space="w+")
    with torch.no_grad():
        plain = m.decode(w, "w+")
        assert torch.equal(plain, m.G.synthesis(w, noise_mode="const"))  # no-grad decodes are the float32 network
    fast = m.decode(w.clone().requires_grad_(True), "w+")
    assert fast.dtype == torch.float32
    assert float((fast.detach() - plain).abs().mean()) < 0.05 * float(plain.abs().mean())


def test_prepare_gives_face_models_tuning_and_tuning_leaves_the_base_model_alone():
    from core.photo_to_latent import project_and_tune

    assert FACE_TUNING_STEPS > 0
    m = prepare(_fixture(), faces=True)
    assert m.pivotal_tuning_steps == FACE_TUNING_STEPS and prepare(_fixture()).pivotal_tuning_steps == 0
    before = {k: v.clone() for k, v in m.G.state_dict().items()}
    t = _targets(m, 2)
    events = list(project_and_tune(m, t, _cfg(m, "auto", 5)))
    last = events[-1]
    assert last.stage == "tuning" and last.done and last.model is not m and "tuned" in last.model.card.title
    assert all(torch.equal(before[k], v) for k, v in m.G.state_dict().items())  # the shared model is untouched
    changed = [k for k, v in last.model.G.state_dict().items() if not torch.equal(before[k], v)]
    assert changed  # the copy's weights moved
    projected = next(e for e in events if e.stage == "projecting" and e.done)
    with torch.no_grad():
        base = float(psnr(m.decode(projected.latent, "w+"), t).mean())
        tuned = float(psnr(last.model.decode(projected.latent, "w+"), t).mean())
    assert tuned > base  # the copy draws the photos better at the same latents


@pytest.mark.parametrize("path", ["family", "interpolation"])
def test_family_and_interpolation_tune_a_private_stylegan_copy(path):
    m = prepare(_fixture(), faces=True)
    before = {k: v.clone() for k, v in m.G.state_dict().items()}
    t = _targets(m, 2)
    if path == "interpolation":
        from core.interpolate import image_latents

        _, _, decoder = image_latents(m, t, "w+", 4, tuning=2)
    else:
        from core.family import Family

        photos = sorted(shared_path("data", "faces", "london", "neutral").glob("*.jpg"))[:2]
        fam = Family(m, "stylegan/fixture", ("faces",))
        fam.set_parent("father", photos[0])
        fam.set_parent("mother", photos[1])
        for _ in fam.project(4, tune_steps=2):
            pass
        decoder = fam.decoder
        assert all(p.tuned for p in fam.parents.values())
    assert decoder is not m and any(not torch.equal(before[k], v) for k, v in decoder.G.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in m.G.state_dict().items())


def test_bank_needs_a_sample():
    with pytest.raises(ValueError, match="at least one"):
        start.build_bank(_fixture(), 0)
