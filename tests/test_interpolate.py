import torch

from core.interpolate import analogy, lerp, path, slerp, truncate


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


def test_arithmetic():
    a, b, c = torch.zeros(2), torch.ones(2), torch.tensor([5.0, 5.0])
    assert torch.equal(analogy(a, b, c), torch.tensor([6.0, 6.0]))
    assert torch.equal(truncate(c, a, 0.5), torch.tensor([2.5, 2.5]))
