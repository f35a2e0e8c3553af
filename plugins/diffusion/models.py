"""Latent Lab models over diffusers modules: VAEs (a spatial latent) and unconditional DDPM/DDIM UNets (x_T).

VAE (``AutoencoderKL``, ``AutoencoderTiny``, ``VQModel``): one space ``latent`` of C x H/f x W/f numbers
(stored flat, ``LatentSpace.spatial`` says the shape), no usable prior (``can_sample=False``: an SD VAE's
latents are only ever made by encoding), projection = the encoder (posterior mode) refined by Adam.

Diffusion (``UNet2DModel`` + a scheduler config): the latent is the noise x_T the deterministic DDIM
sampler turns into the image (3 x H x W numbers, Gaussian: slerp between them). Inversion runs the
sampler backwards (``DDIMInverseScheduler``); decoding runs it forwards, streaming progress and stopping
when cancelled. ``x_T+`` holds three noises, one per stage of sampling (coarse = the first third of the
steps, middle, fine = the last third): the timestep analogue of StyleGAN's per-layer W+, so a child's
early, coarse steps can follow one parent and its late, fine steps the other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import torch

from core.card import LatentSpace, ModelCard
from core.datasets import LatentDataset
from core.images import psnr
from core.model import CancelFn, LatentModel, ProgressFn
from core.projection import ProjectionConfig, ProjectionEvent
from plugins.diffusion import ddim

STAGES = 3  # x_T+: coarse / middle / fine thirds of the sampling steps
DEFAULT_STEPS = 50


class VAEModel(LatentModel):
    """A VAE at any size that is a multiple of its factor f (``at_size``); ``image_size`` is its default, square size
    (the card's resolution, else the config's ``sample_size``, else 256), used where one fixed size is needed (the
    latent map's encoded digits)."""

    has_encoder = True
    resizable = True
    default_space = "latent"

    def __init__(self, card: ModelCard, module: torch.nn.Module, kind: str, image_size: int | None = None) -> None:
        super().__init__()
        self.card, self.vae, self.kind = card, module, kind
        cfg = module.config
        blocks = cfg.encoder_block_out_channels if kind == "AutoencoderTiny" else cfg.block_out_channels
        self.factor = self.size_multiple = 2 ** (len(blocks) - 1)
        self.channels = int(cfg.in_channels)
        self.latent_channels = int(getattr(cfg, "vq_embed_dim", None) or cfg.latent_channels)
        size = int(image_size or card.resolution or getattr(cfg, "sample_size", 0) or 256)
        if size % self.factor:
            raise ValueError(f"{card.title} needs images whose side is a multiple of {self.factor}; got {size}.")
        self.image_size = size
        self.card = dataclasses.replace(card, resolution=size, size_multiple=self.factor)  # the card says any size works
        self.scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0) if kind == "AutoencoderKL" else 1.0
        self.spaces = self._resized(size, size)
        self.to(self.device)

    def _resized(self, height: int, width: int) -> dict[str, LatentSpace]:
        c, h, w = self.latent_channels, height // self.factor, width // self.factor
        return {"latent": LatentSpace(
            "latent", (c * h * w,), "learned", f"{c} x {h} x {w} latent of the {self.kind} (no prior: made by encoding)",
            can_sample=False, spatial=(c, h, w))}

    def modules(self) -> list[torch.nn.Module]:
        return [self.vae]

    def _sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        raise ValueError(f"{self.card.title} has no prior to sample from.")

    def _encode(self, images: torch.Tensor, space: str) -> torch.Tensor:
        if self.kind == "AutoencoderKL":
            z = self.vae.encode(images).latent_dist.mode() * self.scale  # posterior mode, unit-variance scale
        else:
            z = self.vae.encode(images).latents
        return z.reshape(len(z), -1)

    def _decode(self, latents: torch.Tensor, space: str, **kwargs) -> torch.Tensor:
        z = latents.reshape(len(latents), *self.spaces[space].spatial)
        return self.vae.decode(z / self.scale).sample.clamp(-1, 1)

    def projection_defaults(self, space: str) -> dict:
        return {"lr": 0.02, "lr_rampdown": 0.5}

    def datasets(self) -> dict[str, Callable[[], LatentDataset]]:
        return {"encoded digits (32)": self._digits}

    def _digits(self, n: int = 32) -> LatentDataset:
        """scikit-learn's digits, enlarged to the model's size and encoded: a labelled map that needs no download."""
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images[:n] / 8.0 - 1.0, dtype=torch.float32)[:, None]
        x = torch.nn.functional.interpolate(x, size=self.image_shape, mode="bilinear").repeat(1, self.channels, 1, 1)
        lat = self.encode_batched(x, "latent", batch_size=4).numpy()
        return LatentDataset(f"encoded digits ({n})", lat, "latent", {"digit": d.target[:n]},
                             f"The first {n} scikit-learn digits, enlarged to {self.image_shape[1]}×{self.image_shape[0]} px and encoded.")


class DiffusionModel(LatentModel):
    iterative_decode = True
    iterative_inversion = True
    default_space = "x_T"

    def __init__(self, card: ModelCard, unet: torch.nn.Module, scheduler_config: dict | None, steps: int = DEFAULT_STEPS,
                 refine: int = 1) -> None:
        super().__init__()
        self.card, self.unet = card, unet
        cfg = unet.config
        size = cfg.sample_size
        self.image_size = int(size[0] if isinstance(size, list | tuple) else size)
        self.channels = int(cfg.in_channels)
        spatial = (self.channels, self.image_size, self.image_size)
        d = math.prod(spatial)
        # Both directions of DDIM are built from this config by plugins.diffusion.ddim (the betas are what matter).
        self.scheduler_config = {k: v for k, v in (scheduler_config or {}).items() if not k.startswith("_")}
        self.steps = ddim.check_steps(steps, self.scheduler_config)  # decoding's default
        self.refine = refine  # fixed-point corrections per inversion step (0: plain DDIMInverseScheduler)
        self.spaces = {
            "x_T": LatentSpace("x_T", (d,), "gaussian", "the noise image DDIM turns into this picture", spatial=spatial),
            "x_T+": LatentSpace("x_T+", (STAGES, d), "gaussian",
                                "one noise per stage of sampling (coarse, middle, fine thirds of the steps)",
                                num_layers=STAGES, spatial=spatial),
        }
        self.to(self.device)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet]

    def _sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        return torch.randn(n, self.spaces["x_T"].shape[0], generator=generator), "x_T"

    def mean_latent(self, space: str | None = None) -> torch.Tensor:
        space = self.check_space(space)
        return torch.zeros(1, *self.spaces[space].shape, device=self.device)  # a Gaussian's centre, exactly

    def blend(self, a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Slerp per noise (row): a lerp of two Gaussian noises has too small a norm and samples to a blur."""
        from core.interpolate import slerp

        d = a.shape[-1]
        a2, b2 = a.reshape(-1, d), b.expand_as(a).reshape(-1, d)
        t = alpha.to(a.device, a.dtype).reshape(-1)
        t = t.repeat(len(a2) // len(t)) if len(t) != len(a2) else t
        return slerp(a2, b2, t).reshape(a.shape)

    def decode_options(self, steps: float | None = None, inverted: bool = False) -> dict:
        """DDIM steps (checked here: a plain sentence before any work) and clipping for fresh samples only.

        Clipping keeps fresh samples free of speckle but spoils the round trip of inverted photos, and slerp midpoints
        of inverted latents are clean either way (docs/benchmarks.md, *Diffusion*), so everything derived from inverted
        photos (interpolation from images, Family) decodes unclipped and its endpoints stay the photos."""
        return {"steps": ddim.check_steps(self.steps if steps is None else steps, self.scheduler_config), "clip": not inverted}

    @property
    def _eps(self):
        return ddim.noise_predictor(self.unet)

    def _decode(self, latents: torch.Tensor, space: str, steps: int | None = None, progress: ProgressFn | None = None,
                cancel: CancelFn | None = None, clip: bool = True, **kwargs) -> torch.Tensor:
        """DDIM sampling from x_T (per stage for x_T+), ``steps`` steps (default: the model's).

        ``clip`` clamps the predicted x0 at every step: what keeps fresh noise from sampling to speckle. Decoding an
        inverted latent to check the round trip needs ``clip=False`` (clipping is not invertible); see docs/diffusion.md."""
        n = ddim.check_steps(self.steps if steps is None else steps, self.scheduler_config)
        return ddim.drive(self.sampling(latents, space, n, clip), n, "sampling", progress, cancel).clamp(-1, 1)

    def sampling(self, latents: torch.Tensor, space: str, steps: int | None = None,
                 clip: bool = True) -> Iterator[tuple[int, int, torch.Tensor]]:
        """DDIM sampling as a stream of (step, steps, x_t); the last x is the image (``plugins.diffusion.ddim.sampling``)."""
        z = latents.reshape(len(latents), -1, *self.spaces[space].spatial)  # (N, stages, C, H, W)
        return ddim.sampling(self._eps, self.scheduler_config, z, self.steps if steps is None else steps, clip)

    @torch.no_grad()  # not `with no_grad(): ... yield`: that would leave grad off in the thread that ran the step
    def inversion_events(self, images: torch.Tensor, cfg: ProjectionConfig,
                         should_stop: CancelFn | None = None) -> Iterator[ProjectionEvent]:
        """DDIM inversion to x_T, then DDIM sampling back (unclipped: the mirror) to measure it: 2 x steps events,
        previews of x_t."""
        space = self.check_space(cfg.space)
        steps = ddim.check_steps(cfg.steps, self.scheduler_config)
        total = 2 * steps
        x = images.to(self.device, torch.float32)
        every = cfg.preview_every

        def event(i: int, img: torch.Tensor | None, **kw) -> ProjectionEvent:
            show = kw.pop("show", every > 0 and (i % every == 0 or i == 1))
            lat = self._as_space(x if img is None else kw.pop("latent"), space)
            preview = (img if img is not None else x).clamp(-1, 1).detach().cpu() if show else None
            return ProjectionEvent(i, total, kw.pop("loss", math.nan), kw.pop("psnr", math.nan), lat, space, preview,
                                   loss_name="mse", init="DDIM inversion", **kw)

        stream = ddim.inversion(self._eps, self.scheduler_config, x, steps, self.refine)
        for i in range(steps):
            if should_stop is not None and should_stop():
                stream.close()
                yield event(i, None, done=True, stopped=True, show=True)  # the noisier image reached so far
                return
            _, _, x = next(stream)
            yield event(i + 1, None)
        stream.close()
        x_t = x
        recon = x
        for i, _, recon in self.sampling(self._as_space(x_t, space).to(self.device), space, steps, clip=False):
            if should_stop is not None and should_stop() and i < steps:
                yield event(steps + i, recon, latent=x_t, done=True, stopped=True, show=True)
                return
            if i < steps:
                yield event(steps + i, recon, latent=x_t)
        mse = float((recon - images.to(recon.device)).square().mean())
        yield event(total, recon.clamp(-1, 1), latent=x_t, done=True, show=True, loss=mse,
                    psnr=float(psnr(recon.clamp(-1, 1), images.to(recon.device)).mean()))

    def _as_space(self, x: torch.Tensor, space: str) -> torch.Tensor:
        flat = x.reshape(len(x), -1).detach()
        return flat.unsqueeze(1).repeat(1, STAGES, 1).cpu() if self.spaces[space].per_layer else flat.cpu()

    def datasets(self) -> dict[str, Callable[[], LatentDataset]]:
        """Noise samples only (labels would need images inverted at minutes each): the map of a Gaussian."""
        from core.datasets import sample_dataset
        from core.model import sample_budget

        n = sample_budget(self.spaces["x_T"], 256)
        return {f"noise samples ({n})": lambda: sample_dataset(self, n)}
