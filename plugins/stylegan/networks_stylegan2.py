"""StyleGAN2 generator (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Our own implementation of the network stored in NVIDIA's stylegan2-ada-pytorch and stylegan3
network pickles; module and tensor names follow the official attribute names, so a state dict
from those pickles loads by name. Only the 'skip' output architecture (the one every released
generator uses) is implemented.

Constructor arguments are the *normalised* config (see :meth:`Generator.config`), not the
official init kwargs: per-resolution channel counts are explicit, so no default of either
official file has to be guessed. ``Generator.set_impl`` selects the computation: ``"fast"``
(:mod:`plugins.stylegan.fast_ops`; the default) or ``"reference"`` (:mod:`plugins.stylegan.ops`,
the literal fused form, kept so benches and tests can compare both in one run).

Precision: float32 everywhere on the CPU; on CUDA the blocks flagged ``use_fp16`` run in half
precision unless ``force_fp32=True``, as in the official code.

Why one file of ~460 lines: like the paper and the official code, the whole StyleGAN2 generator (mapping,
modulated convolutions, synthesis blocks) reads best as one model file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from plugins.stylegan import fast_ops, fir, ops

IMPLS = ("fast", "reference")


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in ("const", "random", "none"):
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', not {noise_mode!r}.")


def _check_ws(ws, num_ws: int, w_dim: int) -> torch.Tensor:
    """``ws`` as a float32 tensor [N, num_ws, w_dim], or a plain error."""
    ws = torch.as_tensor(ws)
    if ws.ndim != 3 or ws.shape[1:] != (num_ws, w_dim):
        raise ValueError(f"ws must have shape [N, {num_ws}, {w_dim}], got {list(ws.shape)}.")
    return ws.to(torch.float32)


class FullyConnectedLayer(nn.Module):
    """``act(x @ (weight * weight_gain).T + bias * bias_gain)`` with the equalized learning rate gains."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float | list[float] = 0.0,
        weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.activation = int(in_features), int(out_features), activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_multiplier))
        self.bias = nn.Parameter(torch.broadcast_to(torch.as_tensor(bias_init, dtype=torch.float32), [out_features]).clone())
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = float(lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z (+ class label) -> w, broadcast to ``num_ws`` copies, with truncation towards ``w_avg``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        if z_dim <= 0:
            raise ValueError("z_dim must be positive.")
        embed_features = (w_dim if c_dim > 0 else 0) if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = int(z_dim), int(c_dim), int(w_dim), int(num_ws)
        self.num_layers, self.w_avg_beta = int(num_layers), w_avg_beta
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        features = [z_dim + (embed_features if c_dim > 0 else 0)] + [layer_features] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            self.add_module(f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation, lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        skip_w_avg_update: bool = True,
    ) -> torch.Tensor:
        if update_emas:
            raise NotImplementedError("This is an inference-only generator: it never updates w_avg.")
        z = torch.as_tensor(z, device=self.w_avg.device)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}.")
        x = ops.normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"This generator is class-conditional: pass c of shape [N, {self.c_dim}] (one-hot labels).")
            c = torch.as_tensor(c, device=x.device)
            if c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"c must have shape [{z.shape[0]}, {self.c_dim}], got {list(c.shape)}.")
            y = ops.normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        elif c is not None and torch.as_tensor(c).numel() > 0:
            raise ValueError("This generator is unconditional: pass c=None or an empty [N, 0] tensor.")
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            k = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            x[:, :k] = self.w_avg.lerp(x[:, :k], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+2x upsampling for ``conv0``), noise, bias, lrelu, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
        resample_filter: list[int] | tuple[int, ...] = (1, 3, 3, 1),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = int(in_channels), int(out_channels), int(w_dim)
        self.resolution, self.up, self.use_noise, self.activation = int(resolution), int(up), bool(use_noise), activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = ops.LRELU_GAIN if activation == "lrelu" else 1.0
        self.impl = "fast"
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", _make_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", noise_input: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``noise_input`` (broadcastable to [N, 1, res, res]) replaces ``noise_const`` for this call only."""
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_input is not None:
            noise = noise_input.to(x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        clamp = self.conv_clamp
        if self.impl == "reference":
            x = ops.modulated_conv2d_sg2(
                x, self.weight, styles, up=self.up, padding=self.padding, resample_filter=self.resample_filter, noise=noise
            )
            return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain, clamp=clamp)
        w = self.weight
        w_sq = fast_ops.derived(self, "w_sq", w, lambda w: w.square().sum(dim=[2, 3]))
        w_t = fast_ops.derived(self, "w_t", w, lambda w: w.transpose(0, 1).contiguous()) if self.up == 2 else None
        x = fast_ops.modulated_conv2d_sg2(
            x,
            w,
            styles,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            noise=noise,
            weight_sq=w_sq,
            weight_t=w_t,
        )
        return fast_ops.bias_act_(x, self.bias, act=self.activation, gain=self.act_gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, bias, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = int(in_channels), int(out_channels), int(w_dim)
        self.conv_clamp = conv_clamp
        self.impl = "fast"
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = float(1 / np.sqrt(in_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        if self.impl == "reference":
            x = ops.modulated_conv2d_sg2(x, self.weight, styles, demodulate=False)
            return ops.bias_act(x, self.bias, clamp=self.conv_clamp)
        x = fast_ops.modulated_conv2d_sg2(x, self.weight, styles, demodulate=False)
        return fast_ops.bias_act_(x, self.bias, clamp=self.conv_clamp)


def _make_filter(taps) -> torch.Tensor:
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' synthesis network: [conv0 (up)], conv1, torgb; the image is upsampled and summed."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: list[int] | tuple[int, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channels, self.w_dim, self.resolution, self.img_channels = (
            int(in_channels),
            int(w_dim),
            int(resolution),
            img_channels,
        )
        self.is_last, self.use_fp16, self.architecture = bool(is_last), bool(use_fp16), "skip"
        self.impl = "fast"
        self.register_buffer("resample_filter", _make_filter(resample_filter))
        layer_kw = dict(w_dim=w_dim, resolution=resolution, use_noise=use_noise, activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter, **layer_kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kw)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self, x, img, ws: torch.Tensor, noise_mode: str, dtype: torch.dtype, noise: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n0, n1 = (None, None) if noise is None else ((None, noise[0]) if self.in_channels == 0 else (noise[0], noise[1]))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode, n1)
        else:
            x = x.to(dtype)
            x = self.conv0(x, ws[:, 0], noise_mode, n0)
            x = self.conv1(x, ws[:, 1], noise_mode, n1)
        if img is not None:
            if self.impl == "reference":
                img = ops.upsample2d(img, self.resample_filter)
            else:  # the 1-D form of the separable filter, found once rather than on every call
                f1 = fast_ops.derived(self, "resample_1d", self.resample_filter, fir.separable)
                img = fast_ops.upsample2d(img, self.resample_filter if f1 is None else f1)
        y = self.torgb(x, ws[:, self.num_conv]).to(torch.float32)
        img = y if img is None else img.add_(y)
        return x, img


class SynthesisNetwork(nn.Module):
    """const 4x4 -> blocks b4 ... b{img_resolution}; block k uses ws[i : i + num_conv + 1]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channels: list[int],
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: list[int] | tuple[int, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        log2 = int(np.log2(img_resolution)) if img_resolution >= 4 else 0
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}.")
        self.w_dim, self.img_resolution, self.img_channels = int(w_dim), int(img_resolution), int(img_channels)
        self.img_resolution_log2 = log2
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        if len(channels) != len(self.block_resolutions):
            raise ValueError(f"channels must list one count per resolution {self.block_resolutions}, got {len(channels)}.")
        self.num_fp16_res = int(num_fp16_res)
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for i, res in enumerate(self.block_resolutions):
            block = SynthesisBlock(
                channels[i - 1] if i > 0 else 0,
                channels[i],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                use_fp16=res >= fp16_resolution and num_fp16_res > 0,
                conv_clamp=conv_clamp,
                use_noise=use_noise,
                activation=activation,
                resample_filter=resample_filter,
            )
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f"b{res}", block)

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(res, res) of every noise input, coarse to fine: the order of ``noise=`` and of the ``noise_const`` buffers."""
        layers = [m for m in self.modules() if isinstance(m, SynthesisLayer) and m.use_noise]
        return [(m.resolution, m.resolution) for m in layers]

    def _check_noise(self, noise: Any, n: int, device: torch.device) -> list[torch.Tensor]:
        shapes = self.noise_shapes()
        if not isinstance(noise, list | tuple) or len(noise) != len(shapes):
            count = len(noise) if isinstance(noise, list | tuple) else type(noise).__name__
            raise ValueError(f"noise must be a list of {len(shapes)} tensors (one per noise input, coarse to fine), got {count}.")
        out = []
        for i, (t, (h, w)) in enumerate(zip(noise, shapes, strict=True)):
            t = torch.as_tensor(t, device=device, dtype=torch.float32)
            t = t.reshape(1, 1, h, w) if t.ndim == 2 and tuple(t.shape) == (h, w) else t
            if t.ndim != 4 or tuple(t.shape[1:]) != (1, h, w) or t.shape[0] not in (1, n):
                raise ValueError(f"noise[{i}] must have shape [{h}, {w}] or [1 or {n}, 1, {h}, {w}], got {list(t.shape)}.")
            out.append(t)
        return out

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        noise: list[torch.Tensor] | None = None,
        **_ignored: Any,
    ) -> torch.Tensor:
        """``noise``: per-call noise maps (see :meth:`noise_shapes`) used instead of ``noise_mode``; the module is not changed.

        This is how a projector optimises noise maps while other threads render with the same generator.
        """
        _check_noise_mode(noise_mode)
        ws = _check_ws(ws, self.num_ws, self.w_dim)
        noise = None if noise is None else (self._check_noise(noise, ws.shape[0], ws.device) or None)  # [] when use_noise=False
        use_half = ws.device.type == "cuda" and not force_fp32
        x = img = None
        i = 0  # first ws index and first noise map of the block
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            dtype = torch.float16 if (block.use_fp16 and use_half) else torch.float32
            block_noise = None if noise is None else noise[i : i + block.num_conv]
            x, img = block(x, img, ws[:, i : i + block.num_conv + block.num_torgb], noise_mode, dtype, block_noise)
            i += block.num_conv
        return img.contiguous()


class GeneratorBase(nn.Module):
    """What both generators share: the official ``G(z, c, ...)`` call, ``config`` and ``set_impl``.

    Subclasses set ``family``, call ``super().__init__`` with the sizes, then build ``synthesis`` and ``mapping``.
    """

    family = ""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None, synthesis_kwargs: dict | None) -> None:  # fmt: skip
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        self.mapping_kwargs = dict(mapping_kwargs or {})
        self.synthesis_kwargs = dict(synthesis_kwargs or {})

    @property
    def config(self) -> dict:
        """JSON-able constructor arguments: ``Generator(**config)`` rebuilds this network (StyleGAN3 filters come from the weights)."""
        return {
            "family": self.family,
            "z_dim": self.z_dim,
            "c_dim": self.c_dim,
            "w_dim": self.w_dim,
            "img_resolution": self.img_resolution,
            "img_channels": self.img_channels,
            "mapping_kwargs": dict(self.mapping_kwargs),
            "synthesis_kwargs": dict(self.synthesis_kwargs),
        }

    def set_impl(self, impl: str) -> Generator:
        """Choose ``"fast"`` or ``"reference"`` computation for every layer."""
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}.")
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl
        return self

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)


class Generator(GeneratorBase):
    """StyleGAN2 generator with the official call signatures (``mapping``, ``synthesis``, ``G(z, c, ...)``)."""

    family = "stylegan2"

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ) -> None:
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)
        if "channels" not in self.synthesis_kwargs:
            raise ValueError("synthesis_kwargs needs 'channels' (one count per resolution); see channels_for().")
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **self.synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, **self.mapping_kwargs)


def channels_for(img_resolution: int, channel_base: int = 32768, channel_max: int = 512) -> list[int]:
    """Channel count per resolution as the official configs compute it: ``min(channel_base // res, channel_max)``."""
    log2 = int(math.log2(img_resolution))
    return [min(channel_base // 2**i, channel_max) for i in range(2, log2 + 1)]
