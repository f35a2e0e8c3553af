"""A small convolutional autoencoder with a Gaussian-mixture prior fitted to its latents.

A plain autoencoder has no prior to sample from, so training fits a Gaussian
mixture to the training latents and stores it beside the weights; sampling
then draws from it in torch (deterministic for a generator, no scikit-learn
at run time). Weights live in ``model.safetensors`` + ``config.json`` in the
diffusers style; loading never unpickles anything.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from core.card import LatentSpace, ModelCard
from core.model import LatentModel

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
LATENTS_NAME = "latents.safetensors"
DIRECTIONS_NAME = "directions.safetensors"


@dataclass(frozen=True)
class AEConfig:
    """Architecture of one autoencoder.

    ``widths[i]`` is the number of channels at resolution ``image_size / 2**i``;
    the last level is flattened into a linear layer to ``latent_dim``.
    """

    image_size: int = 64
    channels: int = 3
    latent_dim: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 192, 256)
    blocks_per_level: int = 1
    gmm_components: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.image_size % 2 ** (len(self.widths) - 1):
            raise ValueError(f"image_size {self.image_size} cannot be halved {len(self.widths) - 1} times.")

    @property
    def bottom_size(self) -> int:
        return self.image_size // 2 ** (len(self.widths) - 1)

    @classmethod
    def from_dict(cls, d: dict) -> AEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"_class_name", "training"}
        if unknown:
            raise ValueError(f"config.json has unknown fields: {', '.join(sorted(unknown))}.")
        return cls(**{k: v for k, v in d.items() if k in known})


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class ConvAutoencoder(nn.Module):
    """Encoder: conv stem, then per level residual blocks and a stride-2 conv; flatten -> linear -> latent.
    Decoder mirrors it with nearest-neighbour upsampling + conv (no checkerboard artefacts), ending in tanh."""

    def __init__(self, config: AEConfig) -> None:
        super().__init__()
        self.config = c = config
        w = c.widths
        enc: list[nn.Module] = [nn.Conv2d(c.channels, w[0], 3, padding=1)]
        for i in range(len(w) - 1):
            enc += [ResBlock(w[i]) for _ in range(c.blocks_per_level)]
            enc += [nn.SiLU(), nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1)]
        enc += [ResBlock(w[-1]) for _ in range(c.blocks_per_level)] + [nn.SiLU(), nn.Flatten()]
        self.encoder = nn.Sequential(*enc)
        flat = w[-1] * c.bottom_size**2
        self.to_latent = nn.Linear(flat, c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim, flat)
        dec: list[nn.Module] = [nn.Unflatten(1, (w[-1], c.bottom_size, c.bottom_size))]
        for i in reversed(range(len(w) - 1)):
            dec += [ResBlock(w[i + 1]) for _ in range(c.blocks_per_level)]
            dec += [nn.SiLU(), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w[i + 1], w[i], 3, padding=1)]
        dec += [ResBlock(w[0]) for _ in range(c.blocks_per_level)]
        dec += [nn.SiLU(), nn.Conv2d(w[0], c.channels, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)
        # The latent prior, filled in after training (see fit_prior).
        k, d = c.gmm_components, c.latent_dim
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("gmm_weights", torch.full((k,), 1.0 / k))
        self.register_buffer("gmm_means", torch.zeros(k, d))
        self.register_buffer("gmm_scale_tril", torch.eye(d).repeat(k, 1, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ----- the prior -------------------------------------------------------------------
    def fit_prior(self, latents: torch.Tensor, seed: int = 0) -> None:
        """Fit the Gaussian mixture (scikit-learn, at training time only) and store it in buffers."""
        from sklearn.mixture import GaussianMixture

        z = latents.detach().double().cpu().numpy()
        gmm = GaussianMixture(self.config.gmm_components, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=500)
        gmm.fit(z)
        self.latent_mean.copy_(torch.from_numpy(z.mean(0)).float())
        self.gmm_weights.copy_(torch.from_numpy(gmm.weights_).float())
        self.gmm_means.copy_(torch.from_numpy(gmm.means_).float())
        self.gmm_scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)).float())

    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n latents from the mixture, on the CPU; the same generator state gives the same latents."""
        weights, means, tril = (t.detach().cpu() for t in (self.gmm_weights, self.gmm_means, self.gmm_scale_tril))
        comp = torch.multinomial(weights, n, replacement=True, generator=generator) if n else torch.zeros(0, dtype=torch.long)
        eps = torch.randn(n, self.config.latent_dim, generator=generator)
        return means[comp] + torch.einsum("nij,nj->ni", tril[comp], eps)

    # ----- files ------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, training: dict | None = None) -> None:
        """Write ``model.safetensors`` and ``config.json`` (with optional training facts) into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = {"_class_name": "ConvAutoencoder", **asdict(self.config)}
        if training:
            cfg["training"] = training
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ConvAutoencoder:
        """Build from ``config.json`` and load ``model.safetensors``; a missing or broken file raises ValueError."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"The autoencoder folder '{folder}' has no {p.name}.")
        try:
            config = AEConfig.from_dict(json.loads(cfg_path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{cfg_path} is not a valid autoencoder config: {e}") from e
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{weights_path} is not a readable safetensors file ({e}).") from e
        model = cls(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{weights_path} does not match its config.json: {str(e).splitlines()[0]}") from e
        return model.eval()


class SmallAEModel(LatentModel):
    """A :class:`ConvAutoencoder` behind the latent-model interface: one space, ``"latent"``."""

    has_encoder = True
    default_space = "latent"
    pivotal_tuning_steps = 100  # ~5 MB decoder at 64 px: tuning to two photos takes seconds (bench/identity.py)

    def __init__(self, net: ConvAutoencoder, card: ModelCard, folder: str | Path | None = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.card = card
        self.folder = Path(folder) if folder else None
        c = net.config
        self.image_size, self.channels = c.image_size, c.channels
        self.spaces = {
            "latent": LatentSpace(
                "latent",
                (c.latent_dim,),
                prior="learned",
                description=f"{c.latent_dim}-d autoencoder code; samples come from a {c.gmm_components}-component "
                "Gaussian mixture fitted to the training codes.",
            )
        }
        self.net.to(self.device)

    @classmethod
    def from_pretrained(cls, folder: str | Path, card: ModelCard) -> SmallAEModel:
        return cls(ConvAutoencoder.from_pretrained(folder), card, folder)

    def modules(self) -> list[nn.Module]:
        return [self.net]

    def _sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        return self.net.sample_prior(n, generator), "latent"

    def _decode(self, latents: torch.Tensor, space: str, **kwargs) -> torch.Tensor:
        return self.net.decode(latents)

    def _encode(self, images: torch.Tensor, space: str) -> torch.Tensor:
        return self.net.encode(images)

    def mean_latent(self, space: str | None = None) -> torch.Tensor:
        """The mean of the training latents: the usual start of a projection."""
        self.check_space(space)
        return self.net.latent_mean.detach().clone().to(self.device).unsqueeze(0)

    def datasets(self) -> dict:
        """The encoded training data (shipped beside the weights) and fresh samples, for the latent map."""
        out = dict(super().datasets())
        if self.folder is not None and (self.folder / LATENTS_NAME).is_file():
            out = {"training data (encoded)": self._training_dataset, **out}
        return out

    def _training_dataset(self):
        import numpy as np

        from core.datasets import LatentDataset

        tensors, info = self.training_latents()
        maps = info.get("labels", {})
        labels = {}
        for key, value in tensors.items():
            if key in ("latents", "index"):
                continue
            v = value.numpy()
            if key == "split":
                labels[key] = np.array(info.get("split", ["train", "held-out"]))[v.astype(int)]
            elif key in maps:
                labels[key] = np.array(maps[key])[v.astype(int)]
            else:
                labels[key] = v
        images = None
        if info.get("dataset") == "digits" and "index" in tensors:
            index = tensors["index"].numpy()

            def images(idx):  # scikit-learn ships the digits, so the map can show the real ones
                pix = _digit_pixels()[index[np.asarray(idx)]] / 8.0 - 1.0
                return torch.from_numpy(pix).float().unsqueeze(1)

        what = f"{len(tensors['latents'])} training and held-out items of '{info.get('dataset', '?')}', encoded with this model."
        return LatentDataset("training data (encoded)", tensors["latents"].numpy(), "latent", labels, what, images)

    def directions(self) -> list:
        """Attribute directions fitted on the encoded training data at training time (``directions.safetensors``)."""
        from core.direction import load_directions

        path = self.folder / DIRECTIONS_NAME if self.folder is not None else None
        return load_directions(path) if path is not None and path.is_file() else []

    def training_latents(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The encoded training data with labels (``latents.safetensors`` beside the weights); see :func:`load_latents`."""
        if self.folder is None:
            raise FileNotFoundError(f"{self.card.title} was not loaded from a folder, so it has no stored latents.")
        return load_latents(self.folder)


def load_latents(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The encoded data stored beside a model's weights.

    Returns tensors (``latents`` [N, d]; ``split`` 0 = train, 1 = held-out; one tensor per label,
    e.g. ``digit``, or ``face_id``, ``age`` (NaN = unknown), ``gender``, ``expression``) and info:
    ``{"dataset": str, "split": ["train", "held-out"], "labels": {label: [name of code 0, name of code 1, ...]}}``
    for the categorical labels (faces: gender female/male, expression neutral/smiling).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / LATENTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"'{folder}' has no {LATENTS_NAME}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            info = json.loads((f.metadata() or {}).get("info", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable latents file ({e}).") from e
    return tensors, info


@functools.cache
def _digit_pixels():
    """scikit-learn's 8x8 digits (0-16), read once rather than on every neighbour lookup."""
    from sklearn.datasets import load_digits

    return load_digits().images
