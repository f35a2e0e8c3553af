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
from core.projection import ProjectionConfig, layer_spread, noise_regularizer, project, run_projection
from plugins.stylegan.model import StyleGANModel
from plugins.stylegan.random_init import build_random

CARD = ModelCard(
    name="stylegan/test", title="Random StyleGAN", description="random weights", trained_on="nothing",
    resolution=32, licence="none", source="built-in",
)  # fmt: skip


@functools.cache
def _gen(kind: str = "sg2"):
    if kind == "sg2":
        return build_random("stylegan2", img_resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024, channel_max=64, seed=11)
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
    steps = list(zip(project(m, tgt[:1], a_cfg), project(m, tgt[1:], b_cfg), strict=True))
    ev_a, ev_b = steps[-1]
    assert ev_a.done and ev_b.done and len(steps) == 7
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


# ----- the StyleGAN projector ("ours") ------------------------------------------------------------------------------------


def test_projection_defaults_are_sane(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path))
    m = model()
    assert m.projection_defaults("w+")["loss"] == "ms-ssim+l1"  # offline: the documented substitute for LPIPS
    assert ProjectionConfig.for_model(m, "w", loss="auto", init=None, steps=7).loss == "ms-ssim+l1"  # "auto"/None: the model's choice
    assert ProjectionConfig.for_model(m, "w", loss="mse").loss == "mse"
    from plugins.stylegan import lpips

    lpips.weights_path().write_bytes(b"")
    assert m.projection_defaults("w+")["loss"] == "lpips"
    for space in ("z", "w", "w+"):
        d = m.projection_defaults(space)
        cfg = ProjectionConfig(**{**d, "space": space})  # every key is a ProjectionConfig field
        assert not cfg.optimize_noise and cfg.latent_noise == 0  # the saved latent alone reproduces the result
        assert cfg.init == "auto" and cfg.auto_init in ("mean", "samples", "bank") and 0 < cfg.lr <= 0.2
        assert 0 <= cfg.lr_rampup < 0.5 and 0 < cfg.lr_rampdown <= 1 and 0 < cfg.betas[0] < 1 and 0 < cfg.betas[1] < 1
        assert (cfg.layer_spread_penalty > 0) == (space == "w+")
    with pytest.raises(ValueError, match="no latent space"):
        m.projection_defaults("q")


def _ours(m: StyleGANModel, space: str, steps: int) -> ProjectionConfig:
    return ProjectionConfig.for_model(m, space, steps=steps, preview_every=0, noise_mode="none", loss="mse")  # as bench/projection.py


@pytest.mark.parametrize("space", ["w", "w+"])
def test_projection_recovers_a_latent(space):
    """Targets G(w*) (psi 0.7, no noise) of a small random SG2; 60 steps in W and in W+ (bar measured: ~23.5 / 24 dB)."""
    m = model()
    before = state_snapshot(m)
    _, tgt = targets(m, 2)
    start = float(psnr(m.decode(m.mean_latent(space).expand(2, *m.spaces[space].shape), space, noise_mode="none"), tgt).mean())
    res = run_projection(m, tgt, _ours(m, space, 60))
    assert res.latent.shape == (2, *m.spaces[space].shape) and res.init == "bank"  # the default start in W and W+
    assert res.psnr > 21 and res.psnr > start + 8
    assert torch.allclose(res.reconstruction, m.generate(res.latent, space, noise_mode="none"), atol=1e-4)  # the latent is all
    if space == "w+":  # the spread penalty keeps the layers closer together than free W+, at little cost in PSNR
        free = run_projection(m, tgt, ProjectionConfig(**{**_ours(m, space, 60).__dict__, "layer_spread_penalty": 0.0}))
        assert layer_spread(res.latent).mean() < 0.7 * layer_spread(free.latent).mean() and res.psnr > free.psnr - 1.5
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


# ----- LPIPS from a TorchScript archive, read without running it --------------------------------------------------------
# A module with the layout of NVIDIA's vgg16.pt as far as it is published (layers.conv1..13 with a ReLU each,
# layers.pool1..5, root parameters lpips0..4 of shape [C, 1, 1]; forward(x in [0, 255], resize_images, return_lpips)
# returning features whose squared distance is LPIPS). Narrow widths keep the test fast.

SMALL_WIDTHS = (8, 8, 16, 16, 24, 24, 24, 32, 32, 32, 32, 32, 32)


class _ConvReLU(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / (3 * cin**0.5))
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x):
        return F.relu(F.conv2d(x, self.weight, self.bias, padding=1))


class _Pool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 2)


class _Layers(nn.Module):
    def __init__(self, widths) -> None:
        super().__init__()
        cin = 3
        for i, c in enumerate(widths, 1):
            setattr(self, f"conv{i}", _ConvReLU(cin, c))
            cin = c
        for i in range(1, 6):
            setattr(self, f"pool{i}", _Pool())

    def forward(self, x) -> List[torch.Tensor]:  # noqa: UP006
        f = []
        x = self.conv2(self.conv1(x))
        f.append(x)
        x = self.conv4(self.conv3(self.pool1(x)))
        f.append(x)
        x = self.conv7(self.conv6(self.conv5(self.pool2(x))))
        f.append(x)
        x = self.conv10(self.conv9(self.conv8(self.pool3(x))))
        f.append(x)
        x = self.conv13(self.conv12(self.conv11(self.pool4(x))))
        f.append(x)
        return f


class _ScriptedVGG(nn.Module):
    def __init__(self, widths) -> None:
        super().__init__()
        self.layers = _Layers(widths)
        ch = [widths[i - 1] for i in (2, 4, 7, 10, 13)]
        self.lpips0, self.lpips1, self.lpips2, self.lpips3, self.lpips4 = (nn.Parameter(torch.rand(c, 1, 1)) for c in ch)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))

    def forward(self, x, resize_images: bool = True, return_lpips: bool = False):
        feats = self.layers((x / 255 - self.mean) / self.std)
        out = []
        for f, w in zip(feats, [self.lpips0, self.lpips1, self.lpips2, self.lpips3, self.lpips4]):  # noqa: B905 (TorchScript)
            f = f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10)
            out.append((f * (w / (f.shape[2] * f.shape[3])).sqrt()).flatten(1))
        return torch.cat(out, 1)


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.s:DeprecationWarning")


@pytest.fixture(scope="module")
def scripted_archive(tmp_path_factory):
    torch.manual_seed(0)
    scripted = torch.jit.script(_ScriptedVGG(SMALL_WIDTHS).eval())
    path = tmp_path_factory.mktemp("lpips") / "small_vgg.pt"
    torch.jit.save(scripted, str(path))
    return scripted, path


def test_lpips_from_archive_matches_the_scripted_module(scripted_archive):
    from plugins.stylegan.lpips import load_lpips

    scripted, path = scripted_archive
    ours = load_lpips(path, require_vgg16=False)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 48, 48, generator=g) * 2 - 1, torch.rand(3, 3, 48, 48, generator=g) * 2 - 1
    with torch.no_grad():
        ref = (scripted((a + 1) * 127.5, resize_images=False, return_lpips=True)
               - scripted((b + 1) * 127.5, resize_images=False, return_lpips=True)).square().sum(1)  # fmt: skip
        got = ours(a, b)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-6)
    assert torch.equal(ours(a, a), torch.zeros(3))
    with pytest.raises(Exception, match="not VGG16"):
        load_lpips(path)  # the real loader insists on VGG16's widths


def _zip_with(tmp_path, name: str, entries: dict[str, bytes]) -> str:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return str(path)


class _Exec:
    def __init__(self, fn, arg) -> None:
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def test_archive_reader_refuses_foreign_globals_and_never_runs_code(scripted_archive, tmp_path):
    import builtins
    import os

    from plugins.stylegan.lpips import load_lpips
    from plugins.stylegan.torchscript_reader import TorchScriptArchiveError, UnsafeArchiveError

    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w').write('x')"
    _, good = scripted_archive
    with zipfile.ZipFile(good) as z:
        entries = {i: z.read(i) for i in z.namelist()}
    root = next(k for k in entries if k.endswith("/data.pkl")).split("/")[0]
    attacks = {
        "exec.pt": pickle.dumps(_Exec(builtins.exec, payload), protocol=2),
        "system.pt": pickle.dumps(_Exec(os.system, f"touch {marker}"), protocol=2),
        "torch_load.pt": pickle.dumps(_Exec(torch.load, io.BytesIO(b"")), protocol=2),
    }
    for name, data_pkl in attacks.items():
        path = _zip_with(tmp_path, name, {**entries, f"{root}/data.pkl": data_pkl})
        with pytest.raises(UnsafeArchiveError, match="refused global"):
            load_lpips(path, require_vgg16=False)
    # the TorchScript code in the archive is never read: a payload there does nothing, and loading still works
    code = {k: f"import os\nopen({str(marker)!r}, 'w')\n".encode() if "/code/" in k and k.endswith(".py") else v for k, v in entries.items()}
    load_lpips(_zip_with(tmp_path, "code.pt", code), require_vgg16=False)
    # a storage key that is not an entry name, and a file that is no archive at all
    bad_key = entries[f"{root}/data.pkl"].replace(b"X\x01\x00\x00\x000", b"X\x01\x00\x00\x00/")
    with pytest.raises(UnsafeArchiveError, match="storage key"):
        load_lpips(_zip_with(tmp_path, "key.pt", {**entries, f"{root}/data.pkl": bad_key}), require_vgg16=False)
    not_zip = tmp_path / "plain.pt"
    not_zip.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(TorchScriptArchiveError, match="not a TorchScript archive"):
        load_lpips(not_zip)
    assert not marker.exists()


def test_lpips_loss_is_registered_only_with_its_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path))
    assert "lpips" not in losses.available() and "ms-ssim+l1" in losses.available()
    with pytest.raises(ValueError, match="not available"):
        losses.get_loss("lpips", torch.device("cpu"))
    from plugins.stylegan import lpips

    lpips.weights_path().write_bytes(b"")
    assert "lpips" in losses.available()


def test_full_size_vgg16_archive_gives_a_working_lpips_loss(monkeypatch, tmp_path):
    """End to end with VGG16's real widths (random weights): archive -> cache -> losses.get_loss('lpips') -> gradients."""
    from plugins.stylegan import lpips

    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path))
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_ScriptedVGG(lpips.VGG16_WIDTHS).eval()), str(lpips.weights_path()))
    loss = lpips.build_loss(torch.device("cpu"))  # what get_loss("lpips") builds (get_loss caches per device)
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    x = (target + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).requires_grad_(True)
    d = loss(x, target)
    d.sum().backward()
    assert d.shape == (2,) and (d > 0).all() and x.grad.abs().sum() > 0
    assert torch.allclose(loss(target, target), torch.zeros(2), atol=1e-6)
    assert torch.allclose(loss(x.detach(), target), d.detach())  # second call: cached target features


def test_every_builtin_loss_broadcasts_a_one_image_target(monkeypatch, tmp_path):
    """The LossFn contract bank scoring relies on: loss(x, t[:1]) == loss(x, t[:1].expand_as(x))."""
    from plugins.stylegan import lpips

    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path))
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_ScriptedVGG(lpips.VGG16_WIDTHS).eval()), str(lpips.weights_path()))
    g = torch.Generator().manual_seed(3)
    x, t = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    fns = {"mse": losses.mse, "ms-ssim+l1": losses.ms_ssim_l1, "lpips": lpips.build_loss(torch.device("cpu"))}
    for name, fn in fns.items():
        torch.testing.assert_close(fn(x, t), fn(x, t.expand_as(x)), rtol=1e-5, atol=1e-6, msg=name)


# ----- offline perceptual loss -----------------------------------------------------------------------------------------


def _texture(n: int = 64) -> torch.Tensor:
    """A natural-ish test image: smooth shading, edges and fine stripes, in [-1, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    base = 0.4 * torch.sin(3 * x + 2 * y) + 0.3 * (x * x + y * y < 0.4).float() + 0.2 * torch.sin(25 * x) * (y > 0).float()
    return torch.stack([base, base.roll(5, 1), -base]).unsqueeze(0).clamp(-1, 1)


def test_ms_ssim_l1_basic_properties():
    img = _texture()
    loss = losses.get_loss("ms-ssim+l1", torch.device("cpu"))
    assert torch.allclose(loss(img, img), torch.zeros(1), atol=1e-6)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    value = loss(noisy, img)
    value.sum().backward()
    assert value.item() > 0.05 and noisy.grad.abs().sum() > 0
    assert torch.allclose(loss(noisy.detach(), img), loss(img, noisy.detach()), atol=1e-6)  # symmetric
    small = torch.rand(2, 1, 8, 8) * 2 - 1  # tiny, greyscale: one scale, narrow window
    assert loss(small, small.flip(0)).shape == (2,)


def test_ms_ssim_l1_penalises_blur_over_an_equal_mse_brightness_change():
    """Wang & Bovik's point: at equal MSE, a brightness shift keeps the structure, a blur destroys it; MSE cannot tell."""
    img = _texture()
    k = torch.ones(3, 1, 5, 5) / 25
    blurred = F.conv2d(F.pad(img, (2, 2, 2, 2), mode="reflect"), k, groups=3)
    shift = float((blurred - img).square().mean().sqrt())
    shifted = img + shift  # same MSE as the blur
    assert torch.allclose(losses.mse(blurred, img), losses.mse(shifted, img), rtol=1e-4)
    loss = losses.get_loss("ms-ssim+l1", torch.device("cpu"))
    assert loss(blurred, img) > 2 * loss(shifted, img)
    assert psnr(blurred, img).item() == pytest.approx(psnr(shifted, img).item(), abs=1e-3)
