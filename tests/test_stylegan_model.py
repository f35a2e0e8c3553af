"""StyleGANModel: the LatentModel contract on small random StyleGAN2/3 generators (and one fixture)."""

from __future__ import annotations

import functools

import pytest
import torch

from core.card import ModelCard
from plugins.stylegan import fast_ops
from plugins.stylegan.model import StyleGANModel
from plugins.stylegan.random_init import build_random
from plugins.stylegan.weights import save_generator
from tests.conftest import shared_path

CARD = ModelCard(
    name="stylegan/test", title="Random StyleGAN", description="random weights", trained_on="nothing",
    resolution=32, licence="none", source="built-in",
)  # fmt: skip


@functools.cache
def _gen(kind: str):
    if kind == "sg2":
        return build_random("stylegan2", img_resolution=32, z_dim=16, w_dim=24, channel_base=512, channel_max=32, seed=1)
    if kind == "sg2cond":
        return build_random("stylegan2", img_resolution=16, z_dim=16, w_dim=16, c_dim=3, channel_base=256, channel_max=16, seed=2)
    if kind == "sg2_256":
        return build_random("stylegan2", img_resolution=256, z_dim=8, w_dim=8, channel_base=256, channel_max=8, seed=4)
    return build_random("stylegan3", img_resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16, seed=3)


def model(kind: str = "sg2", **kw) -> StyleGANModel:
    return StyleGANModel(_gen(kind), CARD, **kw)


def test_spaces_and_shapes():
    m = model()
    G = m.G
    assert m.default_space == "w" and m.image_size == 32 and m.channels == 3
    assert m.spaces["z"].shape == (16,) and m.spaces["z"].interpolation == "slerp"
    assert m.spaces["w"].shape == (24,) and m.spaces["w"].interpolation == "lerp"
    assert m.spaces["w+"].shape == (G.num_ws, 24) and m.spaces["w+"].num_layers == G.num_ws == 8
    for space in ("z", "w", "w+"):
        lat = m.sample(3, seed=7, space=space)
        assert lat.shape == (3, *m.spaces[space].shape)
        assert torch.equal(lat, m.sample(3, seed=7, space=space))
        img = m.generate(lat, space, batch_size=2)
        assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32 and img.std() > 0.05


def test_convert_matches_mapping_and_truncation():
    m = model()
    z = m.sample(4, seed=0, space="z")
    with torch.no_grad():
        ws = m.G.mapping(z, None)
        assert torch.allclose(m.convert(z, "z", "w"), ws[:, 0])
        assert torch.allclose(m.convert(z, "z", "w+"), ws)
        w = m.convert(z, "z", "w")
        assert torch.equal(m.convert(w, "w", "w+"), w.unsqueeze(1).repeat(1, m.G.num_ws, 1))
        m.truncation_psi = 0.0
        assert torch.allclose(m.convert(z, "z", "w"), m.mean_latent("w").expand(4, -1), atol=1e-6)
        m.truncation_psi, m.truncation_cutoff = 0.5, 3
        wp = m.convert(z, "z", "w+")
        assert torch.allclose(wp[:, 3:], ws[:, 3:]) and not torch.allclose(wp[:, :3], ws[:, :3])
    with pytest.raises(ValueError, match="cannot map"):
        m.convert(w, "w", "z")
    with pytest.raises(ValueError, match="expects"):
        m.convert(torch.zeros(2, 5), "w", "w+")


def test_decode_spaces_agree_and_are_deterministic():
    m = model()
    z = m.sample(2, seed=1, space="z")
    with torch.no_grad():
        w = m.convert(z, "z", "w")
        a = m.decode(z, "z")
        b = m.decode(w, "w")
        c = m.decode(m.convert(w, "w", "w+"), "w+")
        assert torch.allclose(a, b, atol=1e-5) and torch.equal(b, c)
        assert torch.equal(m.decode(w, "w"), b)  # const noise: deterministic
        r1, r2 = m.decode(w, "w", noise_mode="random"), m.decode(w, "w", noise_mode="random")
        assert (r1 - r2).abs().max() > 1e-3
        none = m.decode(w, "w", noise_mode="none")
        assert (none - b).abs().max() > 1e-3
        m.noise_mode = "none"
        assert torch.equal(m.decode(w, "w"), none)


def test_class_conditional_labels():
    m = model("sg2cond")
    z = m.sample(2, seed=0, space="z")
    with torch.no_grad():
        w0 = m.convert(z, "z", "w")
        m.class_index = 2
        w2 = m.convert(z, "z", "w")
        c = torch.zeros(2, 3)
        c[:, 2] = 1
        assert torch.allclose(w2, m.G.mapping(z, c)[:, 0]) and not torch.allclose(w0, w2)
        m.class_index = 3
        with pytest.raises(ValueError, match="class_index"):
            m.convert(z, "z", "w")
    with pytest.raises(ValueError, match="class-conditional"):
        m.G.mapping(z, None)


def test_mean_latent():
    m = model()
    w_avg = m.G.mapping.w_avg
    assert torch.equal(m.mean_latent("w"), w_avg[None])
    assert torch.equal(m.mean_latent("w+"), w_avg.expand(1, m.G.num_ws, -1))
    assert torch.equal(m.mean_latent("z"), torch.zeros(1, 16))


def test_style_mixing_and_layer_groups():
    m = model()
    a, b = m.sample(1, seed=1, space="w+"), m.sample(1, seed=2, space="w+")
    with torch.no_grad():
        assert torch.equal(m.decode(m.mix(a, b, range(m.G.num_ws), "w+"), "w+"), m.decode(b, "w+"))
        fine = m.decode(m.mix(a, b, [m.G.num_ws - 1], "w+"), "w+")
        coarse = m.decode(m.mix(a, b, [0, 1], "w+"), "w+")
        base = m.decode(a, "w+")
    assert 0 < (fine - base).abs().mean() < (coarse - base).abs().mean()
    big = StyleGANModel(_gen("sg2_256"), CARD)
    assert big.layer_groups("w+") == {"coarse": [0, 1, 2, 3], "middle": [4, 5, 6, 7], "fine": list(range(8, 14))}
    groups = m.layer_groups("w+")  # 32 px: no 64+ px layers, falls back to the proportional split
    assert sorted(sum(groups.values(), [])) == list(range(8))
    assert m.layer_groups("w") == {}


@pytest.mark.parametrize("space", ["w", "w+"])
@pytest.mark.parametrize("kind", ["sg2", "sg3"])
def test_gradients_flow_through_decode(kind, space):
    m = model(kind)
    lat = m.sample(2, seed=3, space=space).clone().requires_grad_(True)
    img = m.decode(lat, space)
    target = torch.zeros_like(img)
    ((img - target) ** 2).mean().backward()
    assert lat.grad is not None and lat.grad.abs().sum() > 0 and torch.isfinite(lat.grad).all()
    assert all(p.grad is None for p in m.G.parameters())


@pytest.mark.parametrize("kind", ["sg2", "sg3"])
def test_inference_mode_then_autograd(kind):
    """Tensors cached by the fast path under inference_mode must not break a later differentiable decode."""
    m = model(kind)
    for mod in m.G.modules():  # start with empty caches, so they get filled under inference_mode
        mod.__dict__.pop("_derived", None)
    fast_ops._PLANS.clear()
    w = m.sample(1, seed=5, space="w")
    with torch.inference_mode():
        a = m.decode(w, "w")
    lat = w.clone().requires_grad_(True)
    b = m.decode(lat, "w")
    b.sum().backward()
    assert torch.allclose(a, b.detach(), atol=1e-5) and lat.grad.abs().sum() > 0


def test_noise_buffers_can_be_optimised_and_reset():
    m = model()
    bufs = m.noise_buffers()
    assert len(bufs) == 2 * 4 - 1 and bufs[0].shape == (4, 4) and bufs[-1].shape == (32, 32)
    w = m.sample(1, seed=0, space="w")
    before = m.decode(w, "w").detach()
    for b in bufs:
        b.requires_grad_(True)
    m.decode(w, "w").square().mean().backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in bufs)
    with torch.no_grad():
        for b in bufs:
            b.add_(1.0)
    assert (m.decode(w, "w") - before).abs().max() > 1e-3
    m.reset_noise()
    assert all(not b.requires_grad for b in m.noise_buffers())
    assert torch.equal(m.decode(w, "w").detach(), before)
    assert model("sg3").noise_buffers() == []


def test_from_folder_and_from_pickle(tmp_path):
    save_generator(_gen("sg3"), tmp_path / "g")
    m = StyleGANModel.from_folder(tmp_path / "g", CARD, truncation_psi=0.7)
    assert m.truncation_psi == 0.7 and m.G.family == "stylegan3"
    w = m.sample(1, seed=0)
    with torch.no_grad():
        assert torch.equal(m.decode(w), StyleGANModel(_gen("sg3"), CARD).decode(w))
    pkl = shared_path("fixtures", "stylegan", "ada_r32.pkl")
    m2 = StyleGANModel.from_pickle(pkl, CARD, cache_root=tmp_path / "cache")
    assert m2.image_size == 32 and m2.sample(2, seed=0, space="w+").shape == (2, 8, 64)
    assert any(p.is_dir() for p in (tmp_path / "cache").iterdir())


def test_bad_inputs_give_plain_errors():
    m = model()
    with pytest.raises(ValueError, match="no latent space"):
        m.decode(torch.zeros(1, 24), "s")
    with pytest.raises(ValueError, match="noise_mode"):
        m.decode(torch.zeros(1, 24), "w", noise_mode="loud")
    with pytest.raises(ValueError, match="z must have shape"):
        m.G.mapping(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="ws must have shape"):
        m.G.synthesis(torch.zeros(1, 3, 24))
