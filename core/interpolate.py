"""Paths between latents, and small latent arithmetic.

``slerp`` suits samples of an isotropic Gaussian prior (StyleGAN's z, a VAE):
their norms concentrate near sqrt(d), and a straight line between two of them
passes through low-norm, atypical latents. ``lerp`` suits learned spaces
(StyleGAN's w, an autoencoder's codes), where the data is not on a sphere.
"""

from __future__ import annotations

import torch

METHODS = ("lerp", "slerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """(1 - t) a + t b for batches a, b of shape (N, *S); ``t`` is a float or has shape (N,)."""
    t = _per_sample(t, a)
    return torch.lerp(a, b, t.reshape(-1, *([1] * (a.ndim - 1))))  # exact at t = 0 and t = 1


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of batches a, b (N, *S); each sample is one flattened vector.

    Moves along the great circle between the directions and interpolates the
    norms linearly. Exact at t = 0 and t = 1; falls back to lerp for parallel,
    antiparallel or zero vectors, where the great circle is undefined, so it
    never returns NaN.
    """
    if a.shape != b.shape:
        raise ValueError(f"Cannot interpolate between latents of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    t = _per_sample(t, a).reshape(-1, 1)
    af, bf = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    na, nb = af.norm(dim=1, keepdim=True), bf.norm(dim=1, keepdim=True)
    ua, ub = af / na.clamp_min(eps), bf / nb.clamp_min(eps)
    omega = torch.arccos((ua * ub).sum(1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    ok = (so > 1e-4) & (na > eps) & (nb > eps)
    so = torch.where(ok, so, torch.ones_like(so))
    on_circle = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so * (na + (nb - na) * t)
    out = torch.where(ok, on_circle, af + (bf - af) * t)
    # Pin the endpoints exactly (sin/arccos round-off would otherwise leave ~1e-7).
    out = torch.where(t == 0, af, torch.where(t == 1, bf, out))
    return out.reshape(a.shape)


def path(a: torch.Tensor, b: torch.Tensor, n: int, method: str = "lerp") -> torch.Tensor:
    """``n`` latents from ``a`` to ``b`` inclusive; a and b are single latents of shape S or (1, *S)."""
    if n < 2:
        raise ValueError("An interpolation needs at least 2 frames.")
    if method not in METHODS:
        raise ValueError(f"Unknown interpolation '{method}'; use one of {', '.join(METHODS)}.")
    if a.shape != b.shape:
        raise ValueError(f"Cannot interpolate between latents of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    a = a[0] if a.ndim > 1 and a.shape[0] == 1 else a
    b = b[0] if b.ndim > 1 and b.shape[0] == 1 else b
    t = torch.linspace(0, 1, n, dtype=a.dtype, device=a.device)
    fn = slerp if method == "slerp" else lerp
    return fn(a.expand(n, *a.shape), b.expand(n, *b.shape), t)


def _per_sample(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[0]) if t.ndim == 0 else t


# ----- latent arithmetic ------------------------------------------------------------


def analogy(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``c + strength (b - a)``: "a is to b as c is to ?"."""
    return c + strength * (b - a)


def truncate(latents: torch.Tensor, center: torch.Tensor, psi: float) -> torch.Tensor:
    """Move latents towards ``center`` (psi=1 keeps them, psi=0 gives the center)."""
    return center + psi * (latents - center)
