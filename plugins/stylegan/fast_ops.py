"""Fast forms of the StyleGAN ops (same math as :mod:`plugins.stylegan.ops`, less work; ~1e-6 apart).

* Modulated convolution: at batch 1 the modulated, demodulated weight is built in one pass
  (demodulation from a cached ``sum_k w**2``) and used by one plain convolution; at batch > 1
  the non-fused form (``conv(x * s, w) * d``) runs one convolution with the shared weight
  instead of a grouped one, which is slow on CPUs.
* CPU: activations channels-last from 16 px on (oneDNN is faster there, notably for the
  transposed convolutions); StyleGAN3's filtered lrelu as banded matrix products in row
  stripes (:class:`plugins.stylegan.fir.FilteredLreluPlan`): no zero insertion, no discarded
  samples, no full-resolution temporary.
* In-place element-wise steps on fresh tensors (allocating large temporaries costs page faults).
* CUDA: the same convolutions; StyleGAN3's filtered lrelu uses the reference formulation,
  which measured as fast or faster there (cuDNN, H200).

Functions here may modify their input activation in place when no gradient is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from plugins.stylegan import fir, ops


def bias_act_(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str = "linear",
    alpha: float = ops.LRELU_SLOPE,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """In-place :func:`ops.bias_act` on a freshly computed NCHW tensor (same order: bias, act, gain, clamp)."""
    if x.requires_grad:
        return ops.bias_act(x, b, act=act, alpha=alpha, gain=gain, clamp=clamp)
    if b is not None:
        x.add_(b.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2))))
    if act == "lrelu":
        F.leaky_relu_(x, alpha)
        gain = ops.LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"Activation '{act}' is not supported (only 'linear' and 'lrelu' occur in StyleGAN generators).")
    if gain is not None and gain != 1:
        x.mul_(float(gain))
    if clamp is not None and clamp >= 0:
        x.clamp_(-float(clamp), float(clamp))
    return x


CHANNELS_LAST_MIN_RES = 16  # from this input size on, channels-last convolutions are faster on CPU (oneDNN)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] >= CHANNELS_LAST_MIN_RES and not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def derived(module: torch.nn.Module, name: str, weight: torch.Tensor, fn):
    """``fn(weight)`` cached on ``module`` until the weight changes (new data, in-place update, device or dtype)."""
    if torch.is_grad_enabled() and weight.requires_grad:  # training the weights: stay differentiable, no cache
        return fn(weight)
    key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
    cache = module.__dict__.setdefault("_derived", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: usable later with or without autograd
            hit = cache[name] = (key, fn(weight))
    return hit[1]


def modulated_conv2d_sg2(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    weight_sq: torch.Tensor | None = None,
    weight_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, ``conv(x, weight * s) * d + noise``, computed as fast as the batch allows.

    Batch 1: modulate and demodulate the weight in one pass and run one plain convolution. Batch > 1:
    non-fused, ``conv(x * s, weight) * d``, i.e. one convolution with a shared weight instead of a
    grouped one. Activations go channels-last from 16 px on; the 2x upsampling is a transposed
    convolution followed by the 4x4 resample filter as one depthwise convolution. ``weight_sq``
    (``sum_k weight**2``, [out, in]) and ``weight_t`` (``weight`` as [in, out, k, k]) may be passed
    precomputed; the demodulation coefficients are ``rsqrt(s**2 @ weight_sq.T + 1e-8)``.
    """
    N = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    if x.device.type == "cpu":
        x = _channels_last(x)
    fused = N == 1
    if x.dtype == torch.float16 and demodulate and not fused:
        # official half-precision guard for x * s: rescaling weights and styles cancels under demodulation
        weight = weight * (1 / math.sqrt(c_in * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
        weight_sq = weight_t = None
    d = None
    if demodulate:
        if weight_sq is None:
            weight_sq = weight.square().sum(dim=[2, 3])
        d = (styles.square() @ weight_sq.t() + 1e-8).rsqrt()  # [N, out]
    if fused:  # one pass over the weight: w[o, i] * s[i] * d[o]
        scale = styles[0][None, :] if d is None else d[0][:, None] * styles[0][None, :]  # [out, in]
        if up == 2:
            wt = weight.transpose(0, 1) if weight_t is None else weight_t
            w = (wt * scale.t()[:, :, None, None]).contiguous()
        else:
            w = weight * scale[:, :, None, None]
        d = None
    else:
        x = x * styles.to(x.dtype).reshape(N, c_in, 1, 1)
        w = (weight.transpose(0, 1).contiguous() if weight_t is None else weight_t) if up == 2 else weight
    w = w.to(x.dtype)
    if up == 1:
        x = F.conv2d(x, w, padding=padding)
    elif up == 2:
        x = F.conv_transpose2d(x, w, stride=2)
        fw = resample_filter.shape[-1]
        p0 = padding + (fw + 1) // 2 - (kw - 1)
        p1 = padding + (fw - 2) // 2 - (kw - 2)
        if p0 == p1 >= 0 and resample_filter.ndim == 2:
            k = (resample_filter * 4).flip([0, 1]).to(x.dtype)  # gain up**2, true convolution
            x = F.conv2d(x, k[None, None].expand(c_out, 1, *k.shape).contiguous(), padding=p0, groups=c_out)
        else:
            x = fir.upfirdn2d(x, resample_filter, padding=(p0, p1, p0, p1), gain=4)
    else:
        raise ValueError(f"up={up} is not supported by the StyleGAN2 generator (only 1 and 2).")
    inplace = not x.requires_grad
    if d is not None:
        d = d.to(x.dtype).reshape(N, c_out, 1, 1)
        x = x.mul_(d) if inplace else x * d
    if noise is not None:
        x = x.add_(noise.to(x.dtype)) if inplace else x + noise.to(x.dtype)
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Same as :func:`ops.upsample2d`, polyphase."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return fir.upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def modulated_conv2d_sg3(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,
    normalized: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """StyleGAN3 modulated convolution (same normalisations as :func:`ops.modulated_conv2d_sg3`).

    Batch 1: the modulated weight is computed in one pass and used directly. Batch > 1: non-fused,
    one convolution with the shared weight between the style and demodulation scalings.
    ``normalized`` may pass the (constant) unit-RMS weight and its ``sum_k w**2`` precomputed.
    """
    N = x.shape[0]
    c_out, c_in, kh, kw = weight.shape
    d = None
    if demodulate:
        weight, weight_sq = normalized if normalized is not None else sg3_normalize(weight)
        styles = styles * styles.square().mean().rsqrt()
        d = (styles.square() @ weight_sq.t() + 1e-8).rsqrt()  # [N, out]
    scale = styles if input_gain is None else styles * input_gain
    if N == 1:
        outer = scale[0][None, :] if d is None else d[0][:, None] * scale[0][None, :]
        return F.conv2d(x, (weight * outer[:, :, None, None]).to(x.dtype), padding=padding)
    x = x * scale.to(x.dtype).reshape(N, c_in, 1, 1)
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if d is not None:
        d = d.to(x.dtype).reshape(N, c_out, 1, 1)
        x = x.mul_(d) if not x.requires_grad else x * d
    return x


def sg3_normalize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN3's unit-RMS weight (per output channel) and its ``sum_k w**2`` [out, in]."""
    wn = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
    return wn, wn.square().sum(dim=[2, 3])


_PLANS: dict[tuple, fir.FilteredLreluPlan] = {}


def _plan(H: int, W: int, fu, fd, up: int, down: int, padding, gain: float) -> fir.FilteredLreluPlan:
    def key(f):
        return None if f is None else (tuple(f.shape), f.detach().cpu().numpy().tobytes())

    k = (H, W, key(fu), key(fd), up, down, tuple(int(p) for p in padding), float(gain))
    plan = _PLANS.get(k)
    if plan is None:
        if len(_PLANS) > 256:
            _PLANS.clear()
        with torch.inference_mode(False):
            plan = _PLANS[k] = fir.FilteredLreluPlan(H, W, fu, fd, up, down, padding, float(gain))
    return plan


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
    """Same as :func:`ops.filtered_lrelu`, computing only the samples that are kept.

    CPU inference: banded matrix products in row stripes (:class:`fir.FilteredLreluPlan`) on a
    channels-last image; the output is channels-last. CPU with gradients: polyphase / strided
    convolutions. CUDA: the reference formulation. ``x`` may be modified in place.
    """
    if fu is None and fd is None and up == 1 and down == 1 and not any(padding):
        return bias_act_(x, b, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    grad = torch.is_grad_enabled() and (x.requires_grad or b.requires_grad)
    if x.device.type == "cpu" and not grad and x.dtype == torch.float32 and gain > 0 and 0 < slope <= 1:
        N, C, H, W = x.shape
        plan = _plan(H, W, fu, fd, up, down, padding, gain)
        xl = x.permute(0, 2, 3, 1)
        if not xl.is_contiguous():
            xl = xl.contiguous()
        xl.add_(b.to(xl.dtype))
        out = torch.empty(N, plan.Ho, plan.Wo, C, dtype=x.dtype)
        for n in range(N):
            plan(xl[n], out[n], float(slope), None if clamp is None else float(clamp))
        return out.permute(0, 3, 1, 2)
    if x.device.type != "cpu":  # on GPUs the zero-insertion form with cuDNN convolutions measured faster (H200)
        return ops.filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    x = bias_act_(x, b)
    x = fir.upfirdn2d(x, fu, up=up, padding=padding, gain=up * up)
    x = bias_act_(x, None, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return fir.upfirdn2d(x, fd, down=down)
