"""Workflows hand front ends finished results: a projection's outcome, an interpolation's result, one face-model
refusal; the model travels as one handle that carries its tags."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.checks import whole_number
from core.export import load_latent, save_latent
from core.handle import ModelHandle, NotAFaceModelError
from core.image_input import ModelInput
from core.images import psnr, to_pil
from core.interpolate import describe, interpolate_images, interpolate_seeds, plan_interpolation
from core.photo_to_latent import project_and_tune
from core.pivotal import TuningConfig
from core.projection import ProjectionConfig
from core.projection_outcome import finish_projection
from core.tags import DIGITS, FACES
from tests.toy import ToyLinear


def _photo(model: ToyLinear) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(1, 3, 8, 8, generator=g) * 1.6 - 0.8).to(model.device)  # off the model's manifold


def _run(model, target, tune_steps: int):
    events = list(project_and_tune(model, target, ProjectionConfig(steps=15, init="mean", lr=0.05, preview_every=0),
                                   TuningConfig(steps=tune_steps, lr=1e-2, locality=0.0)))
    projected = next(e for e in events if e.stage == "projecting" and e.done)
    tuned = events[-1] if events[-1].stage == "tuning" else None
    return projected, tuned


def test_projection_outcome_without_tuning_carries_the_npz_fields(tmp_path):
    model = ToyLinear()
    target = _photo(model)
    projected, tuned = _run(model, target, 0)
    assert tuned is None
    handle = ModelHandle("toy/linear", (DIGITS,), model)
    outcome = finish_projection(handle, ModelInput(to_pil(target)[0]), projected)
    assert outcome.psnr == projected.psnr and outcome.projection_alone is None and outcome.composite is None
    assert outcome.identity_sentence() == "" and outcome.tuning_sentence() == "" and not outcome.inside_face
    path = save_latent(tmp_path / "latent.npz", **outcome.latent_fields())
    latent, info = load_latent(path)
    assert torch.allclose(torch.as_tensor(latent), projected.latent)
    assert info["model"] == "toy/linear" and info["licence"] == "MIT" and info["steps"] == 15 and "decoder" not in info


def test_projection_outcome_with_tuning_says_what_the_tuned_copy_drew():
    model = ToyLinear()
    target = _photo(model)
    projected, tuned = _run(model, target, 20)
    outcome = finish_projection(ModelHandle("toy/linear", (), model), ModelInput(to_pil(target)[0]), projected, tuned)
    assert torch.equal(outcome.shown, tuned.preview) and torch.equal(outcome.projection_alone, projected.preview)
    assert outcome.psnr == tuned.psnr > projected.psnr
    fields = outcome.latent_fields()
    assert fields["decoder"] == "toy/linear+tuned" and fields["projection_psnr"] == round(projected.psnr, 3)
    assert "20 steps" in outcome.tuning_sentence() and not outcome.tuning_stopped
    with pytest.raises(ValueError, match="final events"):
        finish_projection(ModelHandle("toy/linear", (), model), ModelInput(to_pil(target)[0]), replace(projected, preview=None))


def test_one_refusal_for_a_face_only_workflow():
    from core.family import Family

    digits = ModelHandle("toy/linear", (DIGITS,), ToyLinear())
    with pytest.raises(NotAFaceModelError, match="Toy linear is not a face model; Family needs one") as refused:
        Family(digits)
    with pytest.raises(NotAFaceModelError) as again:
        digits.require_faces("Family")
    assert str(refused.value) == str(again.value)
    assert ModelHandle("toy/faces", (FACES,), ToyLinear()).is_face_model


def test_interpolation_results_from_seeds_and_from_images():
    model = ToyLinear()
    handle = ModelHandle("toy/linear", (), model)
    plan = plan_interpolation(model, 5)
    seeds = interpolate_seeds(handle, plan, 1, 2)
    assert seeds.frames.shape == (5, 3, 8, 8) and not seeds.tuned and seeds.endpoints_sentence() == ""
    assert seeds.summary() == describe(plan) and "decoder" not in seeds.latent_fields()
    assert torch.allclose(seeds.latents[0], model.sample(1, 1, plan.space)[0].cpu())
    with pytest.raises(ValueError, match="seed A must be a whole number"):
        interpolate_seeds(handle, plan, 1.5, 2)
    images = torch.cat([_photo(model), -_photo(model)])
    walked = interpolate_images(handle, plan, images, 10, tuning=TuningConfig(steps=5, lr=1e-2, locality=0.0))
    assert walked.tuned and walked.latent_fields()["decoder"] == "toy/linear+tuned"
    assert "Endpoints projected (10 steps), then the decoder tuned" in walked.endpoints_sentence()
    ends = walked.frames[[0, -1]]  # A and B as the tuned copy draws them: the PSNR the result reports
    assert float(psnr(ends, images.cpu()).mean()) == pytest.approx(walked.psnr, abs=0.01)


def test_whole_number_refuses_fractions_and_bounds():
    assert whole_number(3.0, "number of frames", 2, 9) == 3
    for bad in (2.5, 1, 10, None, True, "x", float("nan")):
        with pytest.raises(ValueError, match="number of frames"):
            whole_number(bad, "number of frames", 2, 9)


def test_projection_config_uses_the_whole_number_check():
    with pytest.raises(ValueError, match="number of steps must be a whole number"):
        ProjectionConfig(steps=2.5)
    assert ProjectionConfig(steps=4.0).steps == 4
