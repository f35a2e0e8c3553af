"""Generators of any size with random but non-degenerate weights, for tests and benchmarks.

A freshly constructed generator is degenerate for testing (zero biases and noise strengths,
``w_avg = 0``, ``magnitude_ema = 1``, SG3 ``input.affine.weight = 0``): bugs in those paths
would not show. :func:`randomize_` redraws every tensor, as the shared fixtures do, and
:func:`calibrate_magnitudes_` sets each SG3 ``magnitude_ema`` to the mean square of that
layer's input, which is what training would have tracked, so activations stay O(1).
"""

from __future__ import annotations

import torch

from plugins.stylegan import networks_stylegan2 as sg2
from plugins.stylegan import networks_stylegan3 as sg3

PRESETS: dict[str, dict] = {
    # StyleGAN2 FFHQ 256x256 (stylegan2-ffhq-256x256.pkl): channel_base 16384, 512 max channels, 8 mapping layers
    "sg2-ffhq256": dict(family="stylegan2", img_resolution=256, channel_base=16384, channel_max=512, mapping_layers=8),
    "sg2-ffhq1024": dict(family="stylegan2", img_resolution=1024, channel_base=32768, channel_max=512, mapping_layers=8),
    # StyleGAN3 256x256 with the train.py T and R configs (tables in FORMAT.md, Appendix B)
    "sg3-t-256": dict(family="stylegan3", img_resolution=256, channel_base=32768, channel_max=512),
    "sg3-r-256": dict(
        family="stylegan3", img_resolution=256, channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True
    ),
}


def build_random(
    family: str = "stylegan2",
    img_resolution: int = 64,
    z_dim: int = 512,
    w_dim: int = 512,
    c_dim: int = 0,
    img_channels: int = 3,
    channel_base: int = 32768,
    channel_max: int = 512,
    mapping_layers: int | None = None,
    seed: int = 0,
    num_fp16_res: int = 4,
    conv_clamp: float | None = 256,
    calibrate: bool = True,
    **synthesis: object,
) -> torch.nn.Module:
    """A StyleGAN2 or StyleGAN3 generator of the given config with random, non-degenerate weights (eval mode)."""
    torch.manual_seed(seed)
    if family == "stylegan2":
        G = sg2.Generator(
            z_dim,
            c_dim,
            w_dim,
            img_resolution,
            img_channels,
            mapping_kwargs=dict(num_layers=mapping_layers or 8),
            synthesis_kwargs=dict(
                channels=sg2.channels_for(img_resolution, channel_base, channel_max),
                num_fp16_res=num_fp16_res,
                conv_clamp=conv_clamp,
                **synthesis,
            ),
        )
    elif family == "stylegan3":
        cfg = sg3.synthesis_config(
            img_resolution,
            img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=num_fp16_res,
            conv_clamp=conv_clamp,
            **synthesis,
        )
        G = sg3.Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, dict(num_layers=mapping_layers or 2), cfg)
    else:
        raise ValueError(f"family must be 'stylegan2' or 'stylegan3', not {family!r}.")
    G = G.eval().requires_grad_(False)
    randomize_(G, seed)
    if calibrate and family == "stylegan3":
        calibrate_magnitudes_(G, seed)
    return G


def build_preset(name: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    """One of :data:`PRESETS` (e.g. ``"sg2-ffhq256"``, ``"sg3-t-256"``, ``"sg3-r-256"``) with random weights."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose from {', '.join(PRESETS)}.")
    return build_random(**{**PRESETS[name], **overrides}, seed=seed)


@torch.no_grad()
def randomize_(G: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw every tensor except the designed filters and the identity ``input.transform``."""
    g = torch.Generator().manual_seed(seed + 1)

    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g)

    for name, p in list(G.named_parameters()) + list(G.named_buffers()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("resample_filter", "up_filter", "down_filter", "transform", "freqs", "phases", "magnitude_ema"):
            continue
        if leaf == "bias":
            new = (1 + 0.2 * randn(p)) if ".affine." in f".{name}" else 0.2 * randn(p)
            if name.endswith("input.affine.bias"):
                new = torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.1 * randn(p)
        elif leaf == "weight" and name.endswith("input.affine.weight"):
            new = 0.1 * randn(p)  # zero at init in the official code: makes the input transform depend on w
        elif leaf == "weight" and ".mapping." in f".{name}":
            new = randn(p) / 0.01 if name.split(".")[-2].startswith("fc") else randn(p)  # lr_multiplier 0.01
        elif leaf == "noise_strength":
            new = 0.1 * randn(p).abs()
        elif leaf == "w_avg":
            new = 0.5 * randn(p)
        else:  # conv / fc weights, const, noise_const, input.weight
            new = randn(p)
        p.copy_(new)
    return G


@torch.no_grad()
def calibrate_magnitudes_(G: torch.nn.Module, seed: int = 0, n: int = 4) -> torch.nn.Module:
    """SG3: set each layer's ``magnitude_ema`` to the mean square of its input (as training tracks it), in order."""

    def hook(layer, args):
        layer.magnitude_ema.copy_(args[0].float().square().mean())

    handles = [m.register_forward_pre_hook(hook) for m in G.modules() if isinstance(m, sg3.SynthesisLayer)]
    try:
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
        c = torch.eye(G.c_dim)[torch.arange(n) % G.c_dim] if G.c_dim else None
        G.synthesis(G.mapping(z, c), force_fp32=True)
    finally:
        for h in handles:
            h.remove()
    return G
