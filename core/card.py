"""Model cards and latent-space descriptions.

Kept free of torch so the app can list models (and show their licences) before
any heavy library is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelCard:
    """What a user must know about a model before trusting its outputs."""

    name: str  # registry id, e.g. "small_ae/digits"
    title: str
    description: str
    trained_on: str
    resolution: int
    licence: str
    source: str  # URL, or "built-in"
    licence_url: str = ""
    attribution: str = ""
    size_multiple: int = 0  # a model that works at any size whose sides are multiples of this (VAEs); 0: ``resolution`` only
    commercial_use: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = [
            f"### {self.title}",
            self.description,
            "",
            f"- **Trained on:** {self.trained_on}",
            f"- **Resolution:** any width and height that are multiples of {self.size_multiple} "
            f"({self.resolution}×{self.resolution} by default)" if self.size_multiple
            else f"- **Resolution:** {self.resolution}×{self.resolution}",
            "- **Licence:** "
            + (f"[{self.licence}]({self.licence_url})" if self.licence_url else self.licence)
            + ("" if self.commercial_use else " — **non-commercial use only**"),
            f"- **Source:** {self.source}",
        ]
        if self.attribution:
            lines.append(f"- **Attribution:** {self.attribution}")
        lines += [f"- **{k}:** {v}" for k, v in self.extra.items()]
        return "\n".join(lines)

    def caption(self) -> str:
        """One line stamped on every output of this model."""
        nc = ", non-commercial" if not self.commercial_use else ""
        return f"{self.title} — {self.licence}{nc}"


LARGE_LATENT = 16_384  # numbers per latent above which samples are counted in megabytes, not thousands


@dataclass(frozen=True)
class LatentSpace:
    """One latent space a model offers.

    ``shape`` is per sample. ``prior="gaussian"`` means samples are i.i.d.
    N(0, I), so slerp is the natural path; any other prior interpolates with
    lerp. ``num_layers > 0`` marks a per-layer space (StyleGAN's W+), whose
    latents have shape ``(num_layers, dim)`` and can be mixed layer by layer.

    Capabilities, so a backend need not pretend: ``can_sample=False`` for a space
    without a usable prior (an SD VAE's latents: images only, by encoding);
    ``spatial`` is the (C, H, W) a flat latent really is (a VAE's 4 x H/8 x W/8,
    a diffusion model's noise image), shown as images and pooled for maps.
    """

    name: str
    shape: tuple[int, ...]
    prior: str = "learned"
    description: str = ""
    num_layers: int = 0
    can_sample: bool = True
    spatial: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Numbers in one latent (a 3 x 256 x 256 noise latent: 196,608)."""
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def large(self) -> bool:
        """Too large for dense statistics (thousands of samples, a covariance): bounded code paths apply."""
        return self.size > LARGE_LATENT

    @property
    def interpolation(self) -> str:
        return "slerp" if self.prior == "gaussian" else "lerp"

    @property
    def per_layer(self) -> bool:
        return self.num_layers > 0
