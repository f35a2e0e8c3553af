import math

import pytest
import torch

from core.projection import ProjectionConfig, learning_rate, noise_regularizer, project, run_projection
from tests.toy import ToyLinear


@pytest.fixture(scope="module")
def toy():
    return ToyLinear()


def test_recovers_a_sampled_latent_from_the_mean(toy):
    z = toy.sample(1, seed=3)
    target = toy.generate(z)
    res = run_projection(toy, target, ProjectionConfig(steps=300, lr=0.1, init="mean"))
    assert res.init == "mean"
    assert res.psnr > 40
    assert torch.allclose(res.latent, z.cpu(), atol=0.05)
    # history is monotone enough: the end is far better than the start
    assert res.history[-1][2] > res.history[0][2] + 10


def test_encoder_init_is_used_when_available(toy):
    z = toy.sample(2, seed=5)
    target = toy.generate(z)
    events = list(project(toy, target, ProjectionConfig(steps=3)))
    assert events[-1].done and events[-1].init == "encoder"
    assert events[0].psnr > 30  # the encoder already lands close


def test_bank_init_picks_the_closest_sample(toy):
    bank = toy.sample(64, seed=0)
    target = toy.generate(bank[17:18])
    ev = next(iter(project(toy, target, ProjectionConfig(steps=1, init="bank", bank_size=64, seed=0, lr=0.0))))
    assert ev.psnr > 60  # started exactly on the matching bank sample


def test_events_stream_and_cancel(toy):
    target = toy.generate(toy.sample(1, seed=1))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5

    events = list(project(toy, target, ProjectionConfig(steps=100, preview_every=2), should_stop=stop))
    assert [e.step for e in events[:-1]] == [1, 2, 3, 4, 5]
    assert events[0].preview is not None and events[1].preview is not None and events[2].preview is None
    assert events[-1].done and events[-1].preview.shape == (1, 3, 8, 8)
    assert events[-1].stopped and events[-1].step == 5  # "stopped at step 5", with the best latent so far
    assert not list(project(toy, target, ProjectionConfig(steps=3)))[-1].stopped


def test_generator_can_be_abandoned(toy):
    target = toy.generate(toy.sample(1, seed=1))
    gen = project(toy, target, ProjectionConfig(steps=1000))
    for ev in gen:
        if ev.step == 3:
            break
    gen.close()  # what a UI cancel does; must not raise


def test_final_latent_is_never_worse_than_its_last_step(toy):
    target = toy.generate(toy.sample(1, seed=9))
    events = list(project(toy, target, ProjectionConfig(steps=50, lr=0.05, init="mean", latent_noise=0.05)))
    final = events[-1]
    assert final.done
    assert final.psnr >= max(e.psnr for e in events[:-1] if e.step > 0.75 * 50) - 1e-3


def test_bad_inputs(toy):
    with pytest.raises(ValueError, match="shape"):
        next(project(toy, torch.zeros(1, 3, 16, 16)))
    with pytest.raises(ValueError, match="initialisation"):
        next(project(toy, torch.zeros(1, 3, 8, 8), ProjectionConfig(init="magic")))
    with pytest.raises(ValueError, match="loss"):
        next(project(toy, torch.zeros(1, 3, 8, 8), ProjectionConfig(loss="nope")))


def test_learning_rate_schedule():
    cfg = ProjectionConfig(lr=0.1, lr_rampup=0.05, lr_rampdown=0.25)
    assert learning_rate(cfg, 0.0) == 0.0
    assert math.isclose(learning_rate(cfg, 0.5), 0.1)
    assert learning_rate(cfg, 0.025) == pytest.approx(0.05)
    assert learning_rate(cfg, 0.999) < 0.001


def test_noise_regularizer_prefers_white_noise():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 1, 32, 32, generator=g)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 35, 35, generator=g), 4, stride=1)
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert noise_regularizer([smooth]) > 10 * noise_regularizer([white])


def test_steps_must_be_whole_and_defaults_must_be_config_fields(toy):
    assert ProjectionConfig(steps=30.0).steps == 30
    with pytest.raises(ValueError, match="whole number"):
        ProjectionConfig(steps=30.5)
    with pytest.raises(ValueError, match="Unknown projection setting.*stepz"):
        ProjectionConfig.for_model(toy, stepz=3)

    class Typo(ToyLinear):
        def projection_defaults(self, space):
            return {"learning_rate": 0.1}

    with pytest.raises(ValueError, match="Toy linear's projection_defaults: learning_rate"):
        ProjectionConfig.for_model(Typo())


def test_to_latent_encodes_or_projects(toy):
    from core.projection import to_latent

    z = toy.sample(1, seed=4)
    target = toy.generate(z)
    assert torch.allclose(to_latent(toy, target), toy.encode(target).cpu(), atol=1e-6)  # an encoder: no steps

    class NoEncoder(ToyLinear):
        has_encoder = False

    seen = []
    lat = to_latent(NoEncoder(), target, steps=200, lr=0.1, on_event=seen.append)
    assert len(seen) == 201 and seen[-1].done and torch.allclose(lat, z.cpu(), atol=0.1)


def test_model_says_where_to_edit(toy):
    assert toy.edit_space() == "latent" and toy.noise_shapes() == []  # (StyleGAN: w+, tests/test_family.py)
