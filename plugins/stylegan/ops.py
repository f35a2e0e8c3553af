"""Reference tensor ops of the StyleGAN2/3 generators, written literally from the math.

These are the straightforward forms (zero-insertion upsampling, full-rate filtering then
picking every ``down``-th sample, grouped "fused" modulated convolution). They define what
the fast paths in :mod:`plugins.stylegan.fast_ops` must reproduce, and they are the
``impl="reference"`` path of the networks, so benches and tests can compare both in one run.

Conventions: images/activations are NCHW; ``padding`` is ``(x0, x1, y0, y1)`` (negative
values crop); FIR filters are applied as true convolutions (flipped), 1-D filters
separably with ``sqrt(gain)`` per pass, 2-D filters with ``gain``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (StyleGAN's pixel norm on z and on the class embedding)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    alpha: float = LRELU_SLOPE,
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain)``: the order used by both official repos.

    ``gain`` defaults to the activation's own gain (sqrt(2) for lrelu, 1 for linear).
    """
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"Activation '{act}' is not supported (only 'linear' and 'lrelu' occur in StyleGAN generators).")
    gain = 1.0 if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-float(clamp), float(clamp))
    return x


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | tuple[int, int] = 1,
    down: int | tuple[int, int] = 1,
    padding: tuple[int, int, int, int] | list[int] = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Upsample (zero insertion), pad/crop, FIR filter, downsample: the reference semantics.

    ``f`` is 2-D ``[fh, fw]``, 1-D ``[taps]`` (separable, applied along x then y), or None (identity).
    ``up``/``down`` are per axis ``(x, y)`` when given as pairs.
    """
    N, C, H, W = x.shape
    ux, uy = _pair(up)
    dx, dy = _pair(down)
    px0, px1, py0, py1 = (int(p) for p in padding)
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    # 1. zero insertion
    if ux > 1 or uy > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, ux - 1, 0, 0, 0, uy - 1])
        x = x.reshape(N, C, H * uy, W * ux)
    # 2. pad, then crop for negative values
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # 3. true convolution = correlation with the flipped filter
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(C, 1, 1, 1), groups=C)
    else:
        x = F.conv2d(x, f.reshape(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
        x = F.conv2d(x, f.reshape(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)
    # 4. keep every down-th sample
    if dx > 1 or dy > 1:
        x = x[:, :, ::dy, ::dx]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """2x upsampling of the skip image, ``upfirdn2d(x, f, up=2, pad=(2,1,2,1), gain=4)`` for a 4-tap filter."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def modulated_conv2d_sg2(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, fused form (one grouped conv over the batch).

    up=2: transposed conv (stride 2, kernel not flipped) then the resample filter with pad 1 and gain 4.
    """
    N = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # what the official code does before a half-precision modconv: rescale to avoid overflow
        weight = weight * (1 / math.sqrt(c_in * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = weight.unsqueeze(0) * styles.reshape(N, 1, -1, 1, 1)  # [N, c_out, c_in, kh, kw]
    if demodulate:
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * d.reshape(N, -1, 1, 1, 1)
    x = x.reshape(1, N * c_in, *x.shape[2:])
    if up == 1:
        w = w.reshape(N * c_out, c_in, kh, kw).to(x.dtype)
        x = F.conv2d(x, w, padding=padding, groups=N)
    elif up == 2:
        wt = w.transpose(1, 2).reshape(N * c_in, c_out, kh, kw).to(x.dtype)
        x = F.conv_transpose2d(x, wt, stride=2, padding=0, groups=N)
        # padding=1 for a 3x3 kernel: the filter pad that restores 2*H outputs
        fw = resample_filter.shape[-1]
        p0 = padding + (fw + 1) // 2 - (kw - 1)
        p1 = padding + (fw - 2) // 2 - (kw - 2)
        x = upfirdn2d(x, resample_filter, padding=(p0, p1, p0, p1), gain=4)
    else:
        raise ValueError(f"up={up} is not supported by the StyleGAN2 generator (only 1 and 2).")
    x = x.reshape(N, c_out, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x


def modulated_conv2d_sg3(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN3 modulated convolution, fused form; weights and styles pre-normalised when demodulating."""
    N = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(N, 1, c_in, 1, 1)
    if demodulate:
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * d.reshape(N, c_out, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(N, c_in).reshape(N, 1, c_in, 1, 1)
    x = x.reshape(1, N * c_in, *x.shape[2:])
    x = F.conv2d(x, w.reshape(N * c_out, c_in, kh, kw).to(x.dtype), padding=padding, groups=N)
    return x.reshape(N, c_out, *x.shape[2:])


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor,
    up: int,
    down: int,
    padding: tuple[int, int, int, int] | list[int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """StyleGAN3's alias-free nonlinearity: bias, upsample with ``fu``, lrelu, downsample with ``fd``."""
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up * up)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down)
