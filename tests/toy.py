"""A tiny linear latent model for fast tests of model-independent code."""

from __future__ import annotations

import torch

from core.card import LatentSpace, ModelCard
from core.model import LatentModel


class ToyLinear(LatentModel):
    """x = tanh(A z + b) on 8x8 RGB images, z ~ N(0, I) in 6 dims (has an approximate encoder)."""

    image_size = 8
    channels = 3
    default_space = "latent"
    has_encoder = True

    def __init__(self, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.card = ModelCard("toy/linear", "Toy linear", "test model", "nothing", 8, "MIT", "tests")
        self.spaces = {"latent": LatentSpace("latent", (dim,), prior="gaussian")}
        self.net = torch.nn.Linear(dim, 3 * 8 * 8)
        with torch.no_grad():
            self.net.weight.copy_(torch.randn(3 * 64, dim, generator=g) * 0.3)
            self.net.bias.copy_(torch.randn(3 * 64, generator=g) * 0.1)
        self.net.to(self.device)

    def modules(self):
        return [self.net]

    def _sample(self, n, generator):
        return torch.randn(n, self.spaces["latent"].shape[0], generator=generator), "latent"

    def _decode(self, latents, space, **kwargs):
        return torch.tanh(self.net(latents)).reshape(-1, 3, 8, 8)

    def _encode(self, images, space):
        y = torch.atanh(images.reshape(len(images), -1).clamp(-0.999, 0.999)) - self.net.bias
        return torch.linalg.lstsq(self.net.weight, y.T).solution.T
