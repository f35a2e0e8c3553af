import pytest
import torch

from core.interpolate import lerp, path, slerp


def test_lerp_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    assert torch.equal(lerp(a, b, 0.0), a)
    assert torch.equal(lerp(a, b, 1.0), b)
    # a + t (b - a) and (a + b) / 2 round differently: compare to float32 rounding, not relative to a midpoint near 0.
    torch.testing.assert_close(lerp(a, b, 0.5), (a + b) / 2, rtol=0, atol=1e-6)


def test_slerp_exact_endpoints_and_norms():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, generator=g), torch.randn(512, generator=g)
    p = path(a, b, 9, "slerp")
    assert p.shape == (9, 512)
    assert torch.equal(p[0], a) and torch.equal(p[-1], b)
    # Norms move linearly between the endpoint norms: no dip towards the origin as with lerp.
    expected = torch.linspace(float(a.norm()), float(b.norm()), 9)
    assert torch.allclose(p.norm(dim=1), expected, rtol=1e-5)
    assert p.norm(dim=1).min() > 0.9 * min(a.norm(), b.norm())
    assert path(a, b, 9, "lerp").norm(dim=1).min() < 0.8 * min(a.norm(), b.norm())


def test_slerp_keeps_constant_angle_steps():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    p = path(a, b, 5, "slerp")
    angles = torch.atan2(p[:, 1], p[:, 0])
    assert torch.allclose(angles.diff(), torch.full((4,), torch.pi / 8), atol=1e-6)


def test_slerp_degenerate_inputs_never_nan():
    a = torch.randn(64)
    for b in (a.clone(), 2 * a, -a, torch.zeros(64)):
        p = path(a, b, 7, "slerp")
        assert torch.isfinite(p).all()
        assert torch.equal(p[0], a) and torch.equal(p[-1], b)
    assert torch.isfinite(path(torch.zeros(4), torch.zeros(4), 3, "slerp")).all()


def test_slerp_flattens_per_layer_latents():
    a, b = torch.randn(1, 14, 32), torch.randn(1, 14, 32)
    p = path(a, b, 4, "slerp")
    assert p.shape == (4, 14, 32)
    assert torch.equal(p[0], a[0]) and torch.equal(p[-1], b[0])


def test_slerp_batch_with_per_sample_t():
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    out = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(out[0], a[0]) and torch.equal(out[2], b[2])
    assert torch.allclose(out[1], slerp(a[1:2], b[1:2], 0.5)[0])


def test_path_rejects_bad_arguments():
    a = torch.randn(4)
    for kwargs, msg in (({"n": 1}, "at least 2"), ({"n": 3, "method": "cubic"}, "Unknown interpolation")):
        try:
            path(a, a, **kwargs)
        except ValueError as e:
            assert msg in str(e)
        else:
            raise AssertionError("expected ValueError")
    try:
        path(a, torch.randn(5), 3)
    except ValueError as e:
        assert "shapes" in str(e)


# ----- the workflow: one set of rules for the tab, the CLI and the API ----------------------------------------------------


class _StyleSpaces:
    """Just enough of a StyleGAN-like model for the planning rules: z (Gaussian), w, w+ with 8 layers."""

    def __init__(self):
        from core.card import LatentSpace, ModelCard
        from core.model import LatentModel

        self.card = ModelCard("t/style", "Style toy", "d", "nothing", 8, "MIT", "tests")
        self.spaces = {"z": LatentSpace("z", (4,), prior="gaussian"), "w": LatentSpace("w", (4,)),
                       "w+": LatentSpace("w+", (8, 4), num_layers=8)}
        self.default_space = "z"
        self.check_space = LatentModel.check_space.__get__(self)
        self.layer_groups = LatentModel.layer_groups.__get__(self)


def test_plan_chooses_the_space_the_same_way_for_every_front_end():
    from core.interpolate import plan_interpolation

    m = _StyleSpaces()
    seeds = plan_interpolation(m, 5)
    assert (seeds.space, seeds.method, seeds.frames, seeds.notes) == ("z", "slerp", 5, ())
    images = plan_interpolation(m, 5, from_images=True)  # images cannot be projected into a Gaussian prior
    assert images.space == "w" and images.method == "lerp" and "not z" in images.notes[0]
    mixed = plan_interpolation(m, 5, "z", mixing=["fine", "coarse"], from_images=True)
    assert mixed.space == "w+" and mixed.mixing == ("fine", "coarse")
    assert mixed.layers == tuple(sorted(m.layer_groups("w+")["coarse"] + m.layer_groups("w+")["fine"]))
    assert plan_interpolation(m, 3, "w", "slerp").method == "slerp"


def test_plan_refuses_bad_settings_before_anything_runs():
    from core.interpolate import plan_interpolation
    from tests.toy import ToyLinear

    m = _StyleSpaces()
    for kwargs, message in [({"frames": 1}, "from 2 to"), ({"frames": 2.5}, "whole number"), ({"frames": "x"}, "whole number"),
                            ({"frames": 10**6}, "from 2 to 256"), ({"frames": 4, "space": "q"}, "no latent space 'q'"),
                            ({"frames": 4, "method": "cubic"}, "Unknown interpolation"),
                            ({"frames": 4, "mixing": ["tiny"]}, "Unknown layer group tiny")]:
        with pytest.raises(ValueError, match=message):
            plan_interpolation(m, **kwargs)
    with pytest.raises(ValueError, match="per-layer"):
        plan_interpolation(ToyLinear(), 4, mixing=["coarse"])


def test_walk_with_mixing_moves_only_the_chosen_layers():
    from core.card import LatentSpace
    from core.interpolate import InterpolationPlan, walk
    from tests.toy import ToyLinear

    m = ToyLinear()
    m.spaces = {"latent": LatentSpace("latent", (3, 2), num_layers=3)}
    a, b = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    frames = walk(m, InterpolationPlan("latent", "lerp", 3, ("fine",), (2,)), a, b)
    assert frames.shape == (3, 3, 2)
    assert torch.equal(frames[:, :2], torch.zeros(3, 2, 2)) and torch.equal(frames[:, 2, 0], torch.tensor([0.0, 0.5, 1.0]))


def test_image_endpoints_tune_a_decoder_that_draws_both_images():
    from core.images import psnr
    from core.interpolate import image_endpoints, plan_interpolation
    from core.pivotal import TuningConfig
    from tests.toy import ToyLinear

    model = ToyLinear()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8  # off the 6-d model's range
    plan = plan_interpolation(model, 5, None, "auto", [], True)
    stages = []
    a, b, plain, same, colour = image_endpoints(model, plan, images, 10, lambda *r: stages.append(r[3]),
                                                tuning=TuningConfig(steps=0))
    assert colour is None  # no face weights: the photos' colours are fitted as they are
    assert same is model and set(stages) == {"projecting"}
    a, b, tuned_psnr, decoder, _ = image_endpoints(model, plan, images, 10, lambda *r: stages.append(r[3]),
                                                   tuning=TuningConfig(steps=40, lr=1e-2, locality=0.0))
    assert decoder is not model and "tuning" in stages
    drawn = decoder.generate(torch.cat([a, b]))
    assert tuned_psnr == pytest.approx(float(psnr(drawn, images).mean()), abs=1e-4) and tuned_psnr > plain + 1.0


def test_render_walk_spaces_frames_evenly_by_what_they_show():
    """A decoder that holds a look and then flips within one step (as hair and background did between two photos):
    the straight line's frames have one jump; the walk's frames have none larger than twice the median step."""
    from core.interpolate import InterpolationPlan, path, render_walk
    from tests.toy import ToyLinear

    class Flip(ToyLinear):
        def _decode(self, latents, space, **kwargs):
            x = torch.sigmoid(25 * (latents.sum(-1, keepdim=True) - 0.5))  # flips around the middle of the line
            return (torch.linspace(-1, 1, 3 * 8 * 8) * (2 * x - 1)).reshape(-1, 3, 8, 8)

    model = Flip()
    a, b = torch.zeros(1, 6), torch.full((1, 6), 1 / 6)
    plan = InterpolationPlan("latent", "lerp", 16)
    jumps = lambda imgs: (imgs[1:] - imgs[:-1]).abs().flatten(1).mean(1)  # noqa: E731
    straight = jumps(model.decode(path(a, b, 16)))
    assert straight.max() > 3 * straight.median()  # the problem, on the plain line
    latents, frames = render_walk(model, plan, a, b)
    steps = jumps(frames)
    assert len(frames) == 16 and torch.allclose(latents[0], a[0]) and torch.allclose(latents[-1], b[0])
    assert steps.max() <= 2 * steps.median()
    assert torch.allclose(frames, model.decode(latents), atol=1e-6)  # the frames are what their latents draw


def test_two_face_photos_are_fitted_on_matched_colours_and_frames_get_theirs_back():
    from core.interpolate import image_endpoints, plan_interpolation, render_walk
    from core.pivotal import TuningConfig
    from tests.toy import ToyLinear

    model = ToyLinear()
    g = torch.Generator().manual_seed(2)
    pale = (torch.rand(1, 3, 8, 8, generator=g) * 0.2 + 0.6)
    dark = (torch.rand(1, 3, 8, 8, generator=g) * 0.2 - 0.7)
    images, weights = torch.cat([pale, dark]), torch.ones(2, 1, 8, 8)
    plan = plan_interpolation(model, 5, None, "auto", [], True)
    ends = image_endpoints(model, plan, images, 5, weights=weights, tuning=TuningConfig(steps=0))
    assert ends.colour is not None
    _, frames = render_walk(ends.decoder, plan, ends.a, ends.b, colour=ends.colour)
    tone = frames.mean((1, 2, 3))
    assert tone[0] > 0.4 and tone[-1] < -0.4 and bool((tone[1:] <= tone[:-1] + 1e-6).all())  # pale to dark, evenly
