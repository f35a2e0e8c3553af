"""GAN projection: per-call noise maps, the StyleGAN projector defaults, LPIPS archive reading, the offline loss."""

from __future__ import annotations

import copy
import functools
import io
import pickle
import threading
import zipfile
from typing import List  # noqa: UP035 (TorchScript needs typing.List)

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import losses
from core.card import ModelCard
from core.images import psnr
from core.projection import ProjectionConfig, noise_regularizer, project, run_projection
from plugins.stylegan.model import StyleGANModel
from plugins.stylegan.random_init import build_random

CARD = ModelCard(
    name="stylegan/test", title="Random StyleGAN", description="random weights", trained_on="nothing",
    resolution=32, licence="none", source="built-in",
)  # fmt: skip


@functools.cache
def _gen(kind: str = "sg2"):
    if kind == "sg2":
        return build_random("stylegan2", img_resolution=32, z_dim=32, w_dim=32, channel_base=1024, channel_max=64, seed=11)
    return build_random("stylegan3", img_resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16, seed=3)


def model(kind: str = "sg2") -> StyleGANModel:
    return StyleGANModel(_gen(kind), CARD)


def targets(m: StyleGANModel, n: int, seed: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Target images G(w*) with w* = mapping(z, psi=0.7), rendered without noise (as in bench/projection.py)."""
    z = torch.randn(n, m.G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = m.G.mapping(z, None, truncation_psi=0.7)
        return ws[:, 0], m.G.synthesis(ws, noise_mode="none")


def state_snapshot(m: StyleGANModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.G.state_dict().items()}


def assert_unchanged(m: StyleGANModel, before: dict[str, torch.Tensor]) -> None:
    after = m.G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in m.G.parameters()) and not any(b.requires_grad for b in m.G.buffers())


# ----- per-call noise -------------------------------------------------------------------------------------------------


def test_noise_maps_replace_the_buffers_for_one_call_only():
    m = model()
    before = state_snapshot(m)
    w = m.sample(3, seed=1, space="w")
    shapes = m.noise_shapes()
    assert shapes == [tuple(b.shape) for b in m.noise_buffers()] and shapes[0] == (4, 4) and shapes[-1] == (32, 32)
    maps = [torch.randn(3, 1, *s, generator=torch.Generator().manual_seed(i)) for i, s in enumerate(shapes)]
    out = m.decode(w, "w", noise=maps)
    # reference: a private copy whose const buffers hold the same maps, image by image
    for i in range(3):
        G2 = copy.deepcopy(m.G)
        with torch.no_grad():
            for b, t in zip([b for n, b in G2.named_buffers() if n.endswith("noise_const")], maps, strict=True):
                b.copy_(t[i, 0])
        ref = StyleGANModel(G2, CARD).decode(w[i : i + 1], "w")
        assert torch.allclose(out[i : i + 1], ref, atol=1e-5)
    # (H, W) maps broadcast over the batch; const buffers passed explicitly reproduce noise_mode='const'
    assert torch.allclose(m.decode(w, "w", noise=[b.clone() for b in m.noise_buffers()]), m.decode(w, "w"), atol=1e-6)
    assert (out - m.decode(w, "w")).abs().max() > 1e-2  # the maps mattered
    assert_unchanged(m, before)


def test_noise_maps_get_gradients_and_bad_maps_are_refused():
    m = model()
    maps = [torch.randn(1, 1, *s).requires_grad_(True) for s in m.noise_shapes()]
    m.decode(m.sample(2, seed=0, space="w+"), "w+", noise=maps).square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in maps)
    with pytest.raises(ValueError, match="list of 7"):
        m.decode(m.sample(1, space="w"), "w", noise=maps[:-1])
    with pytest.raises(ValueError, match=r"noise\[0\]"):
        m.decode(m.sample(1, space="w"), "w", noise=[torch.zeros(5, 5)] + maps[1:])
    with pytest.raises(ValueError, match="no noise inputs"):
        model("sg3").decode(model("sg3").sample(1, space="w"), "w", noise=[torch.zeros(4, 4)])
    assert model("sg3").noise_shapes() == []


def _noise_projection_cfg(seed: int) -> ProjectionConfig:
    return ProjectionConfig(space="w", steps=6, lr=0.05, init="mean", optimize_noise=True, latent_noise=0.05,
                            stats_samples=64, preview_every=0, seed=seed)


def test_interleaved_and_threaded_projections_match_sequential_ones():
    m = model()
    before = state_snapshot(m)
    _, tgt = targets(m, 2)
    a_cfg, b_cfg = _noise_projection_cfg(1), _noise_projection_cfg(2)
    seq_a = list(project(m, tgt[:1], a_cfg))[-1]
    seq_b = list(project(m, tgt[1:], b_cfg))[-1]
    # interleaved step by step on the same model object
    ga, gb = project(m, tgt[:1], a_cfg), project(m, tgt[1:], b_cfg)
    ev_a = ev_b = None
    for ev_a, ev_b in zip(ga, gb, strict=True):
        pass
    assert ev_a.done and ev_b.done
    assert torch.allclose(ev_a.latent, seq_a.latent, atol=1e-5) and torch.allclose(ev_b.latent, seq_b.latent, atol=1e-5)
    # two threads at once
    out = {}

    def work(key, t, cfg):
        out[key] = list(project(m, t, cfg))[-1]

    threads = [threading.Thread(target=work, args=("a", tgt[:1], a_cfg)), threading.Thread(target=work, args=("b", tgt[1:], b_cfg))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert torch.allclose(out["a"].latent, seq_a.latent, atol=1e-4) and torch.allclose(out["b"].latent, seq_b.latent, atol=1e-4)
    assert_unchanged(m, before)


def test_batched_projection_equals_one_by_one():
    m = model()
    _, tgt = targets(m, 2)
    cfg = ProjectionConfig(**{**m.projection_defaults("w+"), "steps": 8, "preview_every": 0})
    both = run_projection(m, tgt, cfg)
    one = [run_projection(m, tgt[i : i + 1], cfg) for i in range(2)]
    assert torch.allclose(both.latent, torch.cat([r.latent for r in one]), atol=1e-4)


def test_noise_regularizer_per_image():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 1, 32, 32, generator=g)
    smooth = F.avg_pool2d(torch.randn(1, 1, 35, 35, generator=g), 4, stride=1)
    smooth = (smooth - smooth.mean()) / smooth.std()
    both = torch.cat([white, smooth])
    per = noise_regularizer([both], per_image=True)
    assert per.shape == (2,) and per[1] > 10 * per[0]
    assert torch.allclose(per, torch.stack([noise_regularizer([white]), noise_regularizer([smooth])]))
