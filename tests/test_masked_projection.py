"""Face-region projection: pixel weights, on-manifold penalties, colour matching and compositing (toy model, fast)."""

from __future__ import annotations

import pytest
import torch

from core import losses
from core.faces.colour import ColourMatch, region_stats
from core.faces.mask import composite
from core.images import psnr
from core.projection import ProjectionConfig, latent_gaussian, project, run_projection
from tests.toy import ToyLinear


@pytest.fixture(scope="module")
def toy():
    return ToyLinear()


def _face_and_two_backgrounds(toy):
    """A target, the same face on another background, and the face weights (1 inside a 4x4 centre)."""
    target = toy.generate(toy.sample(1, seed=4))
    w = torch.zeros(1, 1, 8, 8)
    w[..., 2:6, 2:6] = 1.0
    other = torch.where(w.bool(), target, torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert not torch.equal(target, other)
    return target, other, w


@pytest.mark.parametrize("loss", ["mse", "ms-ssim+l1"])
def test_masked_projection_ignores_the_background(toy, loss):
    target, other, w = _face_and_two_backgrounds(toy)
    cfg = ProjectionConfig(steps=15, init="mean", loss=loss, lr=0.05)
    a = run_projection(toy, target, cfg, weights=w)
    b = run_projection(toy, other, cfg, weights=w)
    assert torch.equal(a.latent, b.latent) and a.loss == b.loss and a.psnr == b.psnr
    # Without weights the background does drive the fit.
    assert not torch.equal(run_projection(toy, target, cfg).latent, run_projection(toy, other, cfg).latent)


def test_masked_loss_gradient_is_zero_outside_the_weights(toy):
    target, _, w = _face_and_two_backgrounds(toy)
    recon = torch.zeros(1, 3, 8, 8, requires_grad=True)
    loss_fn = losses.get_loss("ms-ssim+l1", torch.device("cpu"))
    loss_fn(w * recon, w * target).sum().backward()
    assert recon.grad[:, :, w[0, 0] == 0].abs().max() == 0
    assert recon.grad[:, :, w[0, 0] == 1].abs().max() > 0


def test_masked_psnr_is_the_psnr_inside_the_region(toy):
    target, other, w = _face_and_two_backgrounds(toy)
    assert psnr(other, target).item() < 40
    assert psnr(other, target, w).item() > 100  # identical inside the weights
    ev = list(project(toy, other, ProjectionConfig(steps=2, init="mean"), weights=w))[-1]
    assert ev.psnr == pytest.approx(float(psnr(ev.preview, other, w)), abs=1e-3)


def test_bad_weights_get_plain_errors(toy):
    target = toy.generate(toy.sample(2, seed=0))
    for bad, words in [(torch.ones(1, 1, 4, 4), "must be"), (torch.ones(3, 1, 8, 8), "must be"),
                       (torch.full((8, 8), 2.0), "between 0 and 1"), (torch.zeros(8, 8), "zero everywhere")]:
        with pytest.raises(ValueError, match=words):
            run_projection(toy, target, ProjectionConfig(steps=1), weights=bad)
    run_projection(toy, target, ProjectionConfig(steps=1), weights=torch.ones(8, 8))  # (H, W) is broadcast


def test_prior_weight_keeps_the_latent_typical(toy):
    z = toy.sample(1, seed=2) * 4  # far outside the prior
    target = toy.generate(z)
    mean, whiten = latent_gaussian(toy, "latent", 1000, 0)

    def maha(latent):
        return float(((latent.to(mean.device) - mean) @ whiten).square().sum())

    free = run_projection(toy, target, ProjectionConfig(steps=80, init="mean", lr=0.1))
    held = run_projection(toy, target, ProjectionConfig(steps=80, init="mean", lr=0.1, prior_weight=1.0))
    assert maha(held.latent) < 0.5 * maha(free.latent)
    assert free.psnr > held.psnr  # the price: a worse fit of the unusual target


def test_encoder_anchor_holds_the_latent_near_the_encoders_answer(toy):
    target = toy.generate(toy.sample(1, seed=3)) * 0.5  # not an image the model makes exactly
    start = toy.encode(target).cpu()
    free = run_projection(toy, target, ProjectionConfig(steps=60, lr=0.1, init="mean"))
    held = run_projection(toy, target, ProjectionConfig(steps=60, lr=0.1, init="mean", encoder_anchor=10.0))
    assert (held.latent - start).norm() < 0.5 * (free.latent - start).norm()


def test_encoder_anchor_needs_an_encoder(toy, monkeypatch):
    monkeypatch.setattr(toy, "has_encoder", False)
    target = toy.generate(toy.sample(1, seed=3))
    with pytest.raises(ValueError, match="no encoder"):
        run_projection(toy, target, ProjectionConfig(steps=1, init="mean", encoder_anchor=1.0))


def test_composite_keeps_the_photo_outside_the_mask():
    g = torch.Generator().manual_seed(0)
    crop = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    recon = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1  # the model's size: enlarged to the crop's
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1.0
    out = composite(recon, crop, mask)
    assert out.shape == crop.shape
    assert torch.equal(out[..., mask == 0], crop[..., mask == 0])
    assert not torch.allclose(out[..., mask == 1], crop[..., mask == 1])
    with pytest.raises(ValueError, match="crop's size"):
        composite(recon, crop, torch.ones(8, 8))


def test_colour_match_reaches_the_reference_and_undoes():
    g = torch.Generator().manual_seed(0)
    photo = (torch.rand(2, 3, 8, 8, generator=g) * 0.6 - 0.1)  # a warm, low-contrast face, away from the clamp
    w = torch.ones(1, 1, 8, 8)
    mean, std = region_stats(photo, w)
    ref_mean, ref_std = torch.tensor([0.1, -0.05, -0.2]).reshape(1, 3, 1, 1), torch.full((1, 3, 1, 1), 0.2)
    match = ColourMatch(mean, std, ref_mean, ref_std)
    m2, s2 = region_stats(match.apply(photo), w)
    torch.testing.assert_close(m2, ref_mean.expand_as(m2), atol=1e-5, rtol=0)
    torch.testing.assert_close(s2, ref_std.expand_as(s2), atol=1e-5, rtol=0)
    torch.testing.assert_close(match.undo(match.apply(photo)), photo, atol=1e-5, rtol=0)
    half = match.between(0.5)
    torch.testing.assert_close(half.mean, (mean[:1] + mean[1:]) / 2)
