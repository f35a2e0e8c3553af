"""StyleGAN3 generator (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"), configs T and R.

Our own implementation of the network in NVIDIA's stylegan3 network pickles, with the official
module and tensor names. The synthesis network is built from an explicit per-layer spec
(sizes, sampling rates, cutoffs, filter taps, padding): :func:`synthesis_config` derives it
from the paper's hyper-parameters, and the pickle loader reads it from the stored layer
attributes, so no default of the official code has to be guessed when loading.

Filters (``up_filter``/``down_filter``) are buffers; they are designed here (Kaiser-windowed
sinc, or jinc for R's radial down filters) only when building a new network, and taken from
the file otherwise.

Why ``synthesis_config`` is ~85 lines: it transcribes the paper's per-layer filter schedule step by step,
which is easier to check against the paper in one piece.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from plugins.stylegan import fast_ops, ops
from plugins.stylegan.networks_stylegan2 import FullyConnectedLayer, GeneratorBase, MappingNetwork, _check_noise_mode, _check_ws

LAYER_KEYS = (
    "name", "is_torgb", "is_critically_sampled", "use_fp16", "in_channels", "out_channels", "in_size", "out_size",
    "in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "in_cutoff", "out_cutoff", "in_half_width",
    "out_half_width", "conv_kernel", "conv_clamp", "up_factor", "up_taps", "down_factor", "down_taps", "down_radial", "padding",
)  # fmt: skip


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR: 1-D sinc (``firwin``) or, when ``radial``, a 2-D jinc with a separable window."""
    if numtaps == 1:
        return None
    import scipy.signal
    import scipy.special

    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs), dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    win = np.kaiser(numtaps, beta)
    f = f * np.outer(win, win)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)


def synthesis_config(
    img_resolution: int,
    img_channels: int = 3,
    channel_base: int = 32768,
    channel_max: int = 512,
    num_layers: int = 14,
    num_critical: int = 2,
    first_cutoff: float = 2,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
    output_scale: float = 0.25,
    num_fp16_res: int = 4,
    conv_kernel: int = 3,
    filter_size: int = 6,
    lrelu_upsampling: int = 2,
    use_radial_filters: bool = False,
    conv_clamp: float | None = 256,
) -> dict:
    """The per-layer schedule of the paper: cutoffs and stopbands grow geometrically to the last critically sampled layers.

    T config: ``channel_base=32768, channel_max=512, conv_kernel=3``; R: ``65536, 1024, conv_kernel=1, use_radial_filters=True``.
    """
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels

    layers = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        is_crit = idx >= num_layers - num_critical
        in_sr, out_sr = int(rates[prev]), int(rates[idx])
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else lrelu_upsampling)
        up = int(np.rint(tmp_sr / in_sr))
        down = int(np.rint(tmp_sr / out_sr))
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        k = 1 if is_torgb else conv_kernel
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        pad_total = (out_size - 1) * down + 1 - (in_size + k - 1) * up + up_taps + down_taps - 2
        lo = (pad_total + up) // 2
        hi = pad_total - lo
        layers.append(
            dict(
                name=f"L{idx}_{out_size}_{int(channels[idx])}",
                is_torgb=is_torgb,
                is_critically_sampled=bool(is_crit),
                use_fp16=bool(rates[idx] * 2**num_fp16_res > img_resolution),
                in_channels=int(channels[prev]),
                out_channels=int(channels[idx]),
                in_size=[in_size, in_size],
                out_size=[out_size, out_size],
                in_sampling_rate=in_sr,
                out_sampling_rate=out_sr,
                tmp_sampling_rate=tmp_sr,
                in_cutoff=float(cutoffs[prev]),
                out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]),
                out_half_width=float(half_widths[idx]),
                conv_kernel=k,
                conv_clamp=conv_clamp,
                up_factor=up,
                up_taps=up_taps,
                down_factor=down,
                down_taps=down_taps,
                down_radial=bool(use_radial_filters and not is_crit),
                padding=[int(lo), int(hi), int(lo), int(hi)],
            )
        )
    return dict(
        input=dict(
            channels=int(channels[0]), size=[int(sizes[0])] * 2, sampling_rate=float(rates[0]), bandwidth=float(cutoffs[0])
        ),
        layers=layers,
        output_scale=float(output_scale),
        num_fp16_res=int(num_fp16_res),
    )


class SynthesisInput(nn.Module):
    """Fourier features: sinusoids of fixed frequencies, rotated/translated per sample by ``affine(w)``, then mixed."""

    def __init__(self, w_dim: int, channels: int, size: list[int], sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.w_dim, self.channels = int(w_dim), int(channels)
        self.size = [int(size[0]), int(size[1])]  # (width, height)
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        N = w.shape[0]
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # unit rotation (cos, sin), then translation
        rot = torch.eye(3, device=w.device).repeat(N, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        tra = torch.eye(3, device=w.device).repeat(N, 1, 1)
        tra[:, 0, 2], tra[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = rot @ tra @ self.transform.unsqueeze(0)
        phases = self.phases + (self.freqs @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = self.freqs @ m[:, :2, :2]  # [N, C, 2]
        amps = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * self.size[0] / self.sampling_rate
        theta[1, 1] = 0.5 * self.size[1] / self.sampling_rate
        grid = torch.nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, self.size[1], self.size[0]], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (2 * np.pi)) * amps.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated conv, then the filtered leaky ReLU (upsample, lrelu, downsample) of the layer's sampling rates."""

    def __init__(self, w_dim: int, spec: dict, design_filters: bool = True) -> None:
        super().__init__()
        for k in LAYER_KEYS[1:]:
            setattr(self, k, spec[k])
        self.w_dim = int(w_dim)
        self.impl = "fast"
        k, cin, cout = self.conv_kernel, self.in_channels, self.out_channels
        self.affine = FullyConnectedLayer(w_dim, cin, bias_init=1)
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("magnitude_ema", torch.ones([]))
        if design_filters:
            fu = design_lowpass_filter(self.up_taps, self.in_cutoff, self.in_half_width * 2, self.tmp_sampling_rate)
            fd = design_lowpass_filter(
                self.down_taps, self.out_cutoff, self.out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial
            )
        else:
            fu = torch.zeros(self.up_taps) if self.up_taps > 1 else None
            fd = torch.zeros([self.down_taps] * (2 if self.down_radial else 1)) if self.down_taps > 1 else None
        self.register_buffer("up_filter", fu)
        self.register_buffer("down_filter", fd)

    def forward(self, x: torch.Tensor, w: torch.Tensor, use_half: bool = False) -> torch.Tensor:
        input_gain = self.magnitude_ema.rsqrt()
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        dtype = torch.float16 if (self.use_fp16 and use_half) else torch.float32
        x = x.to(dtype)
        demod = not self.is_torgb
        gain, slope = (1.0, 1.0) if self.is_torgb else (ops.LRELU_GAIN, ops.LRELU_SLOPE)
        args = (
            self.up_filter,
            self.down_filter,
            self.bias.to(dtype),
            self.up_factor,
            self.down_factor,
            self.padding,
            gain,
            slope,
        )
        if self.impl == "reference":
            x = ops.modulated_conv2d_sg3(x, self.weight, styles, demod, self.conv_kernel - 1, input_gain)
            return ops.filtered_lrelu(x, *args, self.conv_clamp)
        norm = fast_ops.derived(self, "normalized", self.weight, fast_ops.sg3_normalize) if demod else None
        x = fast_ops.modulated_conv2d_sg3(x, self.weight, styles, demod, self.conv_kernel - 1, input_gain, norm)
        return fast_ops.filtered_lrelu(x, *args, self.conv_clamp)


class SynthesisNetwork(nn.Module):
    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        input: dict,
        layers: list[dict],
        output_scale: float = 0.25,
        num_fp16_res: int = 4,
        design_filters: bool = True,
    ) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = int(w_dim), int(img_resolution), int(img_channels)
        self.output_scale, self.num_fp16_res = float(output_scale), int(num_fp16_res)
        self.num_layers = len(layers) - 1
        self.num_ws = self.num_layers + 2
        self.input = SynthesisInput(w_dim, **input)
        self.layer_names = []
        for spec in layers:
            self.add_module(spec["name"], SynthesisLayer(w_dim, spec, design_filters))
            self.layer_names.append(spec["name"])
        last = layers[-1]
        if last["out_size"] != [img_resolution, img_resolution] or last["out_channels"] != img_channels:
            raise ValueError("The last synthesis layer must output the image (img_channels x img_resolution^2).")

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False, **_ignored: Any) -> torch.Tensor:
        _check_noise_mode(noise_mode)  # SG3 has no noise inputs; accepted for call compatibility
        ws = _check_ws(ws, self.num_ws, self.w_dim)
        use_half = ws.device.type == "cuda" and not force_fp32
        x = self.input(ws[:, 0])
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, i + 1], use_half)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32).contiguous()


class Generator(GeneratorBase):
    """StyleGAN3 generator with the official call signatures (``mapping``, ``synthesis``, ``G(z, c, ...)``)."""

    family = "stylegan3"

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
        design_filters: bool = True,
    ) -> None:
        mapping_kwargs = {"num_layers": 2, "w_avg_beta": 0.998, **dict(mapping_kwargs or {})}
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)
        if "layers" not in self.synthesis_kwargs:
            self.synthesis_kwargs = synthesis_config(img_resolution, img_channels, **self.synthesis_kwargs)
        self.synthesis = SynthesisNetwork(
            w_dim, img_resolution, img_channels, design_filters=design_filters, **self.synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, **self.mapping_kwargs)
