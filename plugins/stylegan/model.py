"""StyleGAN2/3 generators as :class:`core.model.LatentModel` (spaces z, w and w+)."""

from __future__ import annotations

from pathlib import Path

import torch

from core.card import LatentSpace, ModelCard
from core.model import LatentModel
from plugins.stylegan.start import fast_grad_dtype

LAYER_SPREAD_PENALTY = 0.1  # W+ projection: weight of the layers' spread (core.projection.layer_spread)
BANK_SIZE = 128  # latents in the bank that projections start from (plugins.stylegan.start)
FACE_TUNING_STEPS = 10  # pivotal_tuning_steps of face models (set by prepare); few, as each step decodes at full size


def prepare(model: StyleGANModel, faces: bool = False, bank_dir: str | Path | None = None,
            warm: bool = False) -> StyleGANModel:
    """Set a loaded model up: face models get ``FACE_TUNING_STEPS`` of pivotal tuning by default (Family, Projection,
    Interpolation); ``bank_dir`` keeps the projection start's bank on disk; ``warm`` makes that bank now, in the
    background, so a visitor's first projection does not wait for it."""
    if faces:
        model.pivotal_tuning_steps = FACE_TUNING_STEPS
    model.bank_dir = bank_dir
    if warm:
        from plugins.stylegan.start import warm_bank

        warm_bank(model, BANK_SIZE)
    return model


class StyleGANModel(LatentModel):
    """A generator from :mod:`plugins.stylegan.pickle_loader` / :mod:`plugins.stylegan.weights`.

    Knobs (plain attributes, read at every call): ``truncation_psi`` (1.0 = none) and
    ``truncation_cutoff`` (None = all layers) for z -> w / w+; ``class_index`` for
    class-conditional models; ``noise_mode`` ('const', 'random', 'none'); ``force_fp32``
    (on CUDA the layers flagged fp16 run in half precision unless this is set); ``fast_grad``
    (True: decodes that build a gradient, i.e. projection and decoder-tuning steps, run in bfloat16
    on CPUs with native bf16; inference and everything without a gradient stay float32); ``bank_dir``
    (a folder where the projection start's latent bank is kept between runs; None: memory only).

    Noise: with ``noise_mode='const'`` (the default) StyleGAN2 reads its per-layer
    ``noise_const`` buffers, listed by :meth:`noise_buffers`. One model object serves every
    user of the app, so nothing may change its state per request: a projector that optimises
    noise maps passes its own tensors with ``decode(..., noise=[...])`` (shapes from
    :meth:`noise_shapes`), which replace the buffers for that call only. Never optimise the
    buffers in place; :meth:`reset_noise` only repairs a model that someone changed anyway.
    """

    has_encoder = False
    wanted_losses = ("lpips",)

    def __init__(
        self,
        G: torch.nn.Module,
        card: ModelCard,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        class_index: int = 0,
        noise_mode: str = "const",
    ) -> None:
        super().__init__()
        self.card = card
        self.G = G.eval().requires_grad_(False).to(self.device)
        self.image_size, self.channels = int(G.img_resolution), int(G.img_channels)
        self.truncation_psi, self.truncation_cutoff = float(truncation_psi), truncation_cutoff
        self.class_index, self.noise_mode, self.force_fp32 = int(class_index), noise_mode, False
        self.fast_grad, self.bank_dir = False, None
        n = int(G.num_ws)
        self.spaces = {
            "z": LatentSpace("z", (G.z_dim,), prior="gaussian", description="Input noise, N(0, I)."),
            "w": LatentSpace("w", (G.w_dim,), description="Intermediate latent (mapping network output)."),
            "w+": LatentSpace("w+", (n, G.w_dim), description=f"One w per synthesis layer ({n} layers).", num_layers=n),
        }
        self.default_space = "w"
        self._noise_init = [b.detach().clone() for b in self.noise_buffers()]

    # ----- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def from_pickle(cls, path: str | Path, card: ModelCard, cache_root: str | Path | None = None, **kw) -> StyleGANModel:
        """Load an NVIDIA network pickle safely, through the safetensors cache (converted on first use)."""
        from plugins.stylegan.weights import load_cached

        return cls(load_cached(path, cache_root), card, **kw)

    @classmethod
    def from_folder(cls, folder: str | Path, card: ModelCard, **kw) -> StyleGANModel:
        """Load a generator saved as ``model.safetensors`` + ``config.json``."""
        from plugins.stylegan.weights import load_generator

        return cls(load_generator(folder), card, **kw)

    # ----- LatentModel --------------------------------------------------------------------------------------------
    def modules(self) -> list[torch.nn.Module]:
        return [self.G]

    def _sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        return torch.randn(n, self.G.z_dim, generator=generator), "z"

    def _labels(self, n: int) -> torch.Tensor | None:
        c_dim = int(self.G.c_dim)
        if c_dim == 0:
            return None
        if not 0 <= self.class_index < c_dim:
            raise ValueError(f"class_index must be in 0..{c_dim - 1} for {self.card.title}, got {self.class_index}.")
        c = torch.zeros(n, c_dim, device=self.device)
        c[:, self.class_index] = 1
        return c

    def _mapping(self, z: torch.Tensor, cutoff: int | None) -> torch.Tensor:
        return self.G.mapping(z, self._labels(z.shape[0]), truncation_psi=self.truncation_psi, truncation_cutoff=cutoff)

    def _convert(self, latents: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        if src == "z" and dst == "w":
            return self._mapping(latents, None)[:, 0]  # one w: truncation applies to it as a whole
        if src == "z" and dst == "w+":
            return self._mapping(latents, self.truncation_cutoff)
        return super()._convert(latents, src, dst)

    def _decode(
        self,
        latents: torch.Tensor,
        space: str,
        noise_mode: str | None = None,
        noise: list[torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """``noise``: per-call noise maps (StyleGAN2), one per :meth:`noise_shapes` entry, each [H, W] or [1 or N, 1, H, W]."""
        if noise is not None and len(noise) > 0:
            if not self.noise_shapes():
                raise ValueError(f"{self.card.title} has no noise inputs (StyleGAN3); do not pass noise maps.")
            kwargs["noise"] = list(noise)
        ws = latents if space == "w+" else self._convert(latents, space, "w+")
        kwargs.setdefault("force_fp32", self.force_fp32)
        if self.fast_grad and torch.is_grad_enabled() and fast_grad_dtype(ws.device) is not None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.G.synthesis(ws, noise_mode=noise_mode or self.noise_mode, **kwargs).float()
        return self.G.synthesis(ws, noise_mode=noise_mode or self.noise_mode, **kwargs)

    def mean_latent(self, space: str | None = None) -> torch.Tensor:
        space = self.check_space(space)
        w_avg = self.G.mapping.w_avg.detach().to(self.device, torch.float32)
        if space == "w":
            return w_avg.unsqueeze(0).clone()
        if space == "w+":
            return self._convert(w_avg.unsqueeze(0), "w", "w+")
        return torch.zeros(1, self.G.z_dim, device=self.device)

    def projection_defaults(self, space: str) -> dict:
        """How to project into StyleGAN (``bench/projection.py`` compares it with NVIDIA's recipe).

        Start from the latent bank (``plugins.stylegan.start``: the blend of the bank latents whose
        drawings look most like the target; ``init="mean"`` starts at ``w_avg``); Adam at lr 0.1 (betas 0.9, 0.999) ramped up over the first 20 % of
        the steps, so the first steps refine the bank's start instead of throwing it away, and down
        with a cosine over the last 25 % (``bench/projection.py --compare``); no latent noise and no noise maps, so the latent is all there
        is and the reconstruction is exactly what the saved latent gives later; in W+ the layers'
        spread around their mean is penalised lightly (``core.projection.layer_spread``). The loss is
        LPIPS once NVIDIA's vgg16.pt is downloaded, else the offline MS-SSIM + L1 (``core.losses``).
        """
        from core.losses import available, register_loss
        from plugins.stylegan import LPIPS

        register_loss(LPIPS)  # this default names it, so it must be there even for a model built without the registry
        space = self.check_space(space)
        return {
            "loss": "lpips" if "lpips" in available() else "ms-ssim+l1",
            "auto_init": "bank" if space in ("w", "w+") else "mean",
            "bank_size": BANK_SIZE,
            "lr": 0.1,
            "betas": (0.9, 0.999),
            "lr_rampup": 0.2,
            "lr_rampdown": 0.25,
            "latent_noise": 0.0,
            "optimize_noise": False,
            "layer_spread_penalty": LAYER_SPREAD_PENALTY if space == "w+" else 0.0,
        }

    def bank_start(self, target: torch.Tensor, space: str, cfg, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Starts (N, *shape) for ``init="bank"`` (core.projection_priors): nearest drawings in the cached bank."""
        from plugins.stylegan.start import bank_for

        if space not in ("w", "w+"):
            return self.mean_latent(space).expand(len(target), *self.spaces[space].shape).clone()
        bank = bank_for(self, cfg.bank_size, cfg.seed, cfg.noise_mode)
        w = bank.nearest(target.detach().cpu(), None if weights is None else weights.detach().cpu()).to(self.device)
        return w if space == "w" else self._convert(w, "w", "w+")

    def layer_groups(self, space: str | None = None) -> dict[str, list[int]]:
        """StyleGAN2: by the resolution each w+ layer drives (coarse 4-8 px, middle 16-32, fine 64+), as in the paper."""
        space = self.check_space(space)
        if not self.spaces[space].per_layer or getattr(self.G, "family", "") != "stylegan2":
            return super().layer_groups(space)
        n, R = self.G.num_ws, self.image_size
        res = [min(4 * 2 ** (i // 2), R) for i in range(n)]  # two w per resolution, as in the StyleGAN papers
        groups = {
            "coarse": [i for i in range(n) if res[i] <= 8],
            "middle": [i for i in range(n) if 16 <= res[i] <= 32],
            "fine": [i for i in range(n) if res[i] >= 64],
        }
        return groups if all(groups.values()) else super().layer_groups(space)

    # ----- noise ----------------------------------------------------------------------------------------------------
    def noise_buffers(self) -> list[torch.Tensor]:
        """The ``noise_const`` buffers of StyleGAN2 (coarse to fine; read-only by convention); empty for StyleGAN3."""
        return [b for name, b in self.G.named_buffers() if name.endswith("noise_const")]

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(H, W) of each noise input, coarse to fine: what ``decode(..., noise=[...])`` takes. Empty for StyleGAN3."""
        return [tuple(b.shape) for b in self.noise_buffers()]

    def reset_noise(self) -> None:
        """Restore the noise buffers to their loaded values, should anything have written to them."""
        with torch.no_grad():
            for b, b0 in zip(self.noise_buffers(), self._noise_init, strict=True):
                b.requires_grad_(False)
                b.copy_(b0.to(b.device))
