"""Pivotal tuning (core.pivotal): a tuned copy draws the targets at their pivots; the model itself never changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.images import psnr
from core.pivotal import TuningConfig, tune_decoder
from tests.conftest import shared_path
from tests.toy import ToyLinear


def _off_manifold_targets(model: ToyLinear, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Images the 6-d model cannot draw exactly (random pixels), and their best latents (the encoder's answer)."""
    g = torch.Generator().manual_seed(1)
    targets = torch.rand(n, 3, 8, 8, generator=g) * 1.6 - 0.8
    return targets, model.encode(targets).detach()


def _final(events):
    *steps, last = list(events)
    assert last.done and last.model is not None and all(not e.done for e in steps)
    return steps, last


def test_tuning_draws_the_targets_and_leaves_the_model_alone():
    model = ToyLinear()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    targets, pivots = _off_manifold_targets(model)
    plain = float(psnr(model.generate(pivots), targets).mean())
    steps, last = _final(tune_decoder(model, pivots, targets, "latent", config=TuningConfig(steps=150, lr=1e-2, locality=0.0)))
    assert len(steps) == 150 and steps[-1].psnr > steps[0].psnr
    tuned = float(psnr(last.model.generate(pivots), targets).mean())
    assert tuned > plain + 3.0  # the tuned copy draws what the model could not
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())  # the shared model is untouched
    assert last.model.card.name == "toy/linear+tuned" and "tuned" in last.model.card.title
    assert not any(p.requires_grad for m in last.model.modules() for p in m.parameters())


def test_locality_keeps_the_rest_of_the_model_where_it_was():
    model = ToyLinear()
    targets, pivots = _off_manifold_targets(model)
    others = model.sample(64, seed=7)
    drift = {}
    for locality in (0.0, 10.0):
        _, last = _final(tune_decoder(model, pivots, targets, "latent",
                                      config=TuningConfig(steps=100, lr=1e-2, locality=locality, locality_samples=8)))
        drift[locality] = float((last.model.generate(others) - model.generate(others)).pow(2).mean())
    assert drift[10.0] < 0.5 * drift[0.0]


def test_path_term_keeps_blends_of_two_pivots_between_what_they_draw():
    """Between two parents' pivots the tuned faces decoder draws the base model's blend plus the blend of the
    corrections each pivot needs, instead of whatever tuning made of the space between (a pale and a dark face)."""
    from core.faces.mask import as_weights
    from core.image_input import load_image, model_input
    from core.images import from_pil
    from plugins.small_ae import load_model

    model = load_model("faces")
    photos = [shared_path("data", "faces", "photos", n) for n in ("singnet_model_face.jpg", "singnet_woman_portrait.jpg")]
    ins = [model_input(load_image(p), model.image_size, 3, align_face=True) for p in photos]
    targets = torch.cat([from_pil(i.image, 3) for i in ins])
    w = as_weights(np.stack([i.mask for i in ins]))
    space = model.edit_space()
    pivots = model.encode(targets, space).detach()
    t = torch.linspace(0.1, 0.9, 9).reshape(-1, 1)
    middle = torch.lerp(pivots[:1], pivots[1:2], t)
    with torch.no_grad():
        fix = (targets - model.decode(pivots, space)) * w
        goal = model.decode(middle, space) + torch.lerp(fix[:1], fix[1:2], t.reshape(-1, 1, 1, 1))
    off = {}
    for path in (0.0, 3.0):
        _, last = _final(tune_decoder(model, pivots, targets, space, w, TuningConfig(steps=60, path=path)))
        with torch.no_grad():
            off[path] = float((last.model.decode(middle, space) - goal).pow(2).mean())
        assert last.psnr > float(psnr(model.decode(pivots, space), targets, w).mean())  # the pivots are still fitted
    assert off[3.0] < 0.5 * off[0.0]


def test_weights_limit_the_fit_and_stop_and_bad_steps():
    model = ToyLinear()
    targets, pivots = _off_manifold_targets(model, 1)
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4] = 1.0
    _, last = _final(tune_decoder(model, pivots, targets, "latent", half, TuningConfig(steps=150, lr=1e-2, locality=0.0)))
    out = last.model.generate(pivots)
    assert psnr(out, targets, half).item() > psnr(out, targets, 1 - half).item() + 3.0  # only the weighted half is fitted
    calls = iter(range(100))
    steps, last = _final(tune_decoder(model, pivots, targets, "latent", config=TuningConfig(steps=50),
                                      should_stop=lambda: next(calls) >= 3))
    assert len(steps) == 3 and last.model is not None and last.step == 3 < last.steps  # says it was stopped
    with pytest.raises(ValueError, match="negative"):
        list(tune_decoder(model, pivots, targets, "latent", config=TuningConfig(steps=-1)))


def test_family_tuned_to_two_strangers_draws_them_recognisably():
    """The built-in faces model on two 3DSK people (never trained on): tuning takes both parents below 0.6."""
    from core.family import ChildSettings, Family
    from plugins.registry import Registry

    man = sorted(shared_path("data", "faces", "3dsk", "male").glob("*.jpg"))[0]
    woman = sorted(shared_path("data", "faces", "3dsk", "female").glob("*.jpg"))[0]
    reg = Registry().discover(None, use_entry_points=False)
    model = reg.get("small_ae/faces")
    fam = Family(model, "small_ae/faces", reg.entry("small_ae/faces").tags)
    fam.set_parent("father", man)
    fam.set_parent("mother", woman)
    for _ in fam.project(60, tune_steps=0):
        pass
    plain = [p.identity for p in fam.parents.values()]
    for _ in fam.project(60, tune_steps=100):
        pass
    tuned = [p.identity for p in fam.parents.values()]
    assert all(p.tuned for p in fam.parents.values()) and fam.decoder is not model
    assert max(tuned) < 0.6 and np.mean(tuned) < np.mean(plain) - 0.1
    kids = fam.children(ChildSettings(children=2))
    assert all(d < kids.parents_distance for d in np.mean(kids.identity, axis=0))  # closer to each parent than they are


def test_project_and_tune_is_one_stream_and_skips_tuning_when_stopped():
    from core.photo_to_latent import project_and_tune
    from core.projection import ProjectionConfig

    model = ToyLinear()
    targets, _ = _off_manifold_targets(model, 1)
    cfg = ProjectionConfig(steps=20, init="mean", lr=0.05)
    tuning = TuningConfig(steps=30, lr=1e-2, locality=0.0)
    events = list(project_and_tune(model, targets, cfg, tuning))
    stages = [e.stage for e in events]
    assert stages == ["projecting"] * 21 + ["tuning"] * 31 and events[20].done and events[-1].done
    projected = float(psnr(events[20].preview, targets))
    tuned = float(psnr(events[-1].model.generate(events[20].latent), targets))
    assert tuned > projected + 1.0  # the tuned copy draws the photo better at the same latent
    calls = iter(range(100))
    stopped = list(project_and_tune(model, targets, cfg, tuning, should_stop=lambda: next(calls) >= 5))
    assert stopped[-1].stopped and all(e.stage == "projecting" for e in stopped)
    assert [e.stage for e in project_and_tune(model, targets, cfg, TuningConfig(steps=0))][-1] == "projecting"
