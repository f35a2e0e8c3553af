"""Polyphase / strided FIR resampling with the semantics of :func:`plugins.stylegan.ops.upfirdn2d`.

The reference inserts zeros before filtering and filters at full rate before dropping
samples; here each output is computed once from the inputs it depends on:

* upsampling by ``u`` is a transposed convolution with stride ``u`` (no multiplications by
  inserted zeros);
* downsampling by ``d`` is a convolution with stride ``d`` (no discarded outputs);
* separable filters run as two 1-D passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plugins.stylegan import ops


def _pad_axis(x: torch.Tensor, dim: int, lo: int, hi: int) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) one axis of an NCHW tensor."""
    if lo == 0 and hi == 0:
        return x
    if lo < 0 or hi < 0:
        n = x.shape[dim]
        x = x.narrow(dim, max(-lo, 0), n - max(-lo, 0) - max(-hi, 0))
        lo, hi = max(lo, 0), max(hi, 0)
    if lo or hi:
        pad = [0, 0, 0, 0]
        k = 0 if dim == 3 else 2
        pad[k], pad[k + 1] = lo, hi
        x = F.pad(x, pad)
    return x


def _kernel(f: torch.Tensor, C: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    shape = (1, 1, 1, -1) if dim == 3 else (1, 1, -1, 1)
    return f.to(dtype).reshape(shape).expand(C, 1, *[s if s != -1 else f.numel() for s in shape[2:]]).contiguous()


def fir1d(x: torch.Tensor, f: torch.Tensor, dim: int, up: int = 1, down: int = 1, pad0: int = 0, pad1: int = 0) -> torch.Tensor:
    """upfirdn along one axis (dim 2 = y, 3 = x) of an NCHW tensor with a 1-D filter ``f`` (gain included)."""
    C = x.shape[1]
    T = f.numel()
    L = x.shape[dim]
    n_full = L * up + pad0 + pad1 - T + 1
    if n_full <= 0:
        raise ValueError("The filter is longer than the padded signal.")
    stride = [1, 1]
    if up > 1:
        stride[dim - 2] = up
        y = F.conv_transpose2d(x, _kernel(f, C, dim, x.dtype), stride=tuple(stride), groups=C)
        off = T - 1 - pad0
        y = _pad_axis(y, dim, -off, n_full + off - y.shape[dim])
        if down > 1:
            y = y[:, :, ::down] if dim == 2 else y[:, :, :, ::down]
        return y
    x = _pad_axis(x, dim, pad0, pad1)
    stride[dim - 2] = down
    return F.conv2d(x, _kernel(f.flip(0), C, dim, x.dtype), stride=tuple(stride), groups=C)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] | list[int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Same result as :func:`ops.upfirdn2d` (flipped, i.e. true convolution), computing only what is kept."""
    px0, px1, py0, py1 = (int(p) for p in padding)
    if f is None:
        if up == 1 and down == 1:
            x = _pad_axis(_pad_axis(x, 3, px0, px1), 2, py0, py1)
            return x * gain if gain != 1 else x
        return ops.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain)
    if f.ndim == 2:
        a = separable(f)
        if a is None:
            return _fir2d(x, f * gain, up, down, (px0, px1, py0, py1))
        f = a
    f = f * (gain**0.5)
    x = fir1d(x, f, 3, up, down, px0, px1)
    return fir1d(x, f, 2, up, down, py0, py1)


def separable(f: torch.Tensor) -> torch.Tensor | None:
    """The 1-D filter ``a`` with ``outer(a, a) == f`` for a 2-D filter ``f``, or None when there is none."""
    s = f.sum()
    if s <= 0:
        return None
    a = f.sum(dim=1) / s.sqrt()
    return a if torch.allclose(torch.outer(a, a), f, rtol=1e-6, atol=1e-9) else None


def _fir2d(x: torch.Tensor, f: torch.Tensor, up: int, down: int, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """Non-separable filter (StyleGAN3-R's radial down filters)."""
    if up > 1:
        return ops.upfirdn2d(x, f, up=up, down=down, padding=padding)
    C = x.shape[1]
    px0, px1, py0, py1 = padding
    x = _pad_axis(_pad_axis(x, 3, px0, px1), 2, py0, py1)
    k = f.flip([0, 1]).to(x.dtype)[None, None].expand(C, 1, *f.shape).contiguous()
    return F.conv2d(x, k, stride=down, groups=C)


# ----- FIR resampling as banded matrix products (CPU) --------------------------------------------------------------------
#
# A 1-D upfirdn (zero insertion by `up`, pad, convolve with `f`, keep every `down`-th sample) is a linear map
# M [L_out, L_in] with M[m, j] = f[T - 1 - (up*j + pad0 - down*m)] (zero outside the filter): a band of width
# about T/up. On CPUs a depthwise convolution does far fewer MACs per second than a matrix product (docs/benchmarks.md); so the
# passes below multiply by blocks of M that cover the band, and never touch inserted zeros or dropped samples.


def fir_matrix(n_in: int, f: torch.Tensor, up: int = 1, down: int = 1, pad0: int = 0, pad1: int = 0) -> torch.Tensor:
    """The matrix of a 1-D upfirdn with the semantics of :func:`ops.upfirdn2d` (true convolution, gain in ``f``)."""
    f = f.detach().to("cpu", torch.float64)
    T = f.numel()
    n_full = n_in * up + pad0 + pad1 - T + 1
    if n_full <= 0:
        raise ValueError("The filter is longer than the padded signal.")
    m = torch.arange(0, n_full, down, dtype=torch.int64)[:, None]
    j = torch.arange(n_in, dtype=torch.int64)[None, :]
    k = T - 1 - (up * j + pad0 - m)
    valid = (k >= 0) & (k < T)
    return torch.where(valid, f[k.clamp(0, T - 1)], torch.zeros((), dtype=torch.float64)).to(torch.float32)


def band_blocks(M: torch.Tensor, rows: int, r_start: int = 0, r_stop: int | None = None) -> list[tuple[int, int, int, int]]:
    """Row blocks ``(r0, r1, c0, c1)`` of ``M[r_start:r_stop]`` with the column range that holds their non-zeros."""
    r_stop = M.shape[0] if r_stop is None else r_stop
    nz = M != 0
    out = []
    for r0 in range(r_start, r_stop, rows):
        r1 = min(r0 + rows, r_stop)
        out.append((r0, r1, *_col_range(nz, r0, r1)))
    return out


def _col_range(M: torch.Tensor, r0: int, r1: int) -> tuple[int, int]:
    """Columns ``[c0, c1)`` holding the non-zeros of rows ``r0:r1`` of ``M`` (a matrix or its ``!= 0`` mask)."""
    cols = (M[r0:r1] != 0).any(dim=0).nonzero()
    return (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)


def _separable_terms(f: torch.Tensor, rel_tol: float = 1e-6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(y filter, x filter) pairs whose outer products sum to ``f``: one pair for 1-D filters, SVD terms for 2-D ones.

    Terms with a singular value below ``rel_tol`` of the largest are dropped: they change outputs by
    less than float32 rounding of the filter taps themselves (StyleGAN3-R's jinc filters need 2-4 terms).
    """
    if f.ndim == 1:
        return [(f, f)]
    u, s, vh = torch.linalg.svd(f.detach().to("cpu", torch.float64))
    keep = int((s > s[0] * rel_tol).sum())
    return [(u[:, r] * s[r].sqrt(), vh[r] * s[r].sqrt()) for r in range(keep)]


class FilteredLreluPlan:
    """Matrices and blocks for one StyleGAN3 layer's filtered lrelu on an [H, W, C] (channels-last) image.

    Output rows are produced in stripes: up-filter the input rows a stripe needs (vertical, then
    horizontal), apply the nonlinearity, down-filter (vertical, then horizontal). Stripe temporaries
    stay small, so the full-resolution intermediate image is never allocated (allocating, i.e.
    page-faulting, hundreds of MB per layer costs as much as the filtering itself). The lrelu gain
    is folded into the vertical up matrix (``lrelu(g*x) == g*lrelu(x)`` for g > 0).
    """

    def __init__(self, H, W, fu, fd, up, down, padding, gain, stripe_rows=16, block_up=32, block_down=16):
        px0, px1, py0, py1 = (int(p) for p in padding)
        fu = torch.ones(1) if fu is None else fu.detach().float().cpu()
        fd = torch.ones(1) if fd is None else fd.detach().float().cpu()
        if fu.ndim != 1 or gain <= 0:
            raise ValueError("StyleGAN3 up filters are 1-D and its lrelu gain is positive.")
        self.Uy = fir_matrix(H, fu * up, up, 1, py0, py1) * gain  # [Ht, H]; up gain up**2 split over the two axes
        self.Ux = fir_matrix(W, fu * up, up, 1, px0, px1)  # [Wt, W]
        Ht, Wt = self.Uy.shape[0], self.Ux.shape[0]
        terms = _separable_terms(fd)
        Dy = [fir_matrix(Ht, a.float(), 1, down, 0, 0) for a, _ in terms]  # [Ho, Ht] each
        self.Dx = [fir_matrix(Wt, b.float(), 1, down, 0, 0) for _, b in terms]  # [Wo, Wt] each
        self.nterms = len(terms)
        self.H, self.W, self.Wt = H, W, Wt
        self.Ho, self.Wo = Dy[0].shape[0], self.Dx[0].shape[0]
        self.ux_blocks = band_blocks(self.Ux, block_up)
        self.dx_blocks = [band_blocks(D, block_down) for D in self.Dx]
        self.stripes = []
        for o0 in range(0, self.Ho, stripe_rows):
            o1 = min(o0 + stripe_rows, self.Ho)
            t0, t1 = 10**9, -1
            for D in Dy:
                a, b = _col_range(D, o0, o1)
                t0, t1 = min(t0, a), max(t1, b)
            uy = [(r0 - t0, r1 - t0, c0, c1) for r0, r1, c0, c1 in band_blocks(self.Uy, block_up, t0, t1)]
            # all terms' vertical down filters in one product; rows ordered (term, output row)
            dy = torch.cat([D[o0:o1, t0:t1] for D in Dy]).contiguous()
            self.stripes.append((o0, o1, t0, t1, uy, dy))
        self.max_t = max(t1 - t0 for _, _, t0, t1, _, _ in self.stripes)
        self.max_o = max(o1 - o0 for o0, o1, *_ in self.stripes)

    def __call__(self, y: torch.Tensor, out: torch.Tensor, slope: float, clamp: float | None) -> torch.Tensor:
        """y: [H, W, C] contiguous (bias already added); out: [Ho, Wo, C] to fill."""
        C = y.shape[2]
        W, Wt, K = self.W, self.Wt, self.nterms
        Y = y.view(self.H, W * C)
        s1 = torch.empty(self.max_t * W * C, dtype=y.dtype)
        s2 = torch.empty(self.max_t * Wt * C, dtype=y.dtype)
        s3 = torch.empty(K * self.max_o * Wt * C, dtype=y.dtype)
        for o0, o1, t0, t1, uy_blocks, dy in self.stripes:
            nt, no = t1 - t0, o1 - o0
            S1 = s1[: nt * W * C].view(nt, W * C)
            for r0, r1, c0, c1 in uy_blocks:  # vertical up: rows t0..t1 of the upsampled image
                torch.mm(self.Uy[t0 + r0 : t0 + r1, c0:c1], Y[c0:c1], out=S1[r0:r1])
            S1 = S1.view(nt, W, C)
            S2 = s2[: nt * Wt * C].view(nt, Wt, C)
            for r0, r1, c0, c1 in self.ux_blocks:  # horizontal up
                torch.matmul(self.Ux[r0:r1, c0:c1], S1[:, c0:c1], out=S2[:, r0:r1])
            if clamp is not None:  # clamp(lrelu(x)) == lrelu(clamp(x, -clamp/slope, clamp)) for 0 < slope <= 1
                S2.clamp_(-clamp / slope, clamp)
            torch.nn.functional.leaky_relu_(S2, slope)
            S3 = s3[: K * no * Wt * C].view(K * no, Wt * C)
            torch.mm(dy, S2.view(nt, Wt * C), out=S3)  # vertical down, every term at once
            S3 = S3.view(K, no, Wt, C)
            out_rows = out[o0:o1]
            for term in range(K):  # horizontal down, summed over terms
                for r0, r1, c0, c1 in self.dx_blocks[term]:
                    if term == 0:
                        torch.matmul(self.Dx[term][r0:r1, c0:c1], S3[term, :, c0:c1], out=out_rows[:, r0:r1])
                    else:
                        out_rows[:, r0:r1].baddbmm_(self.Dx[term][r0:r1, c0:c1].expand(no, -1, -1), S3[term, :, c0:c1])
        return out
