"""The hub diffusers models Latent Lab lists by default, with their cards (licence, training data, resolution)."""

from __future__ import annotations

from core.card import ModelCard
from plugins.contract import FACES, ModelEntry

CATALOG: dict[str, tuple[str, ModelCard, tuple[str, ...]]] = {
    "diffusion/sd-vae-ft-mse": ("stabilityai/sd-vae-ft-mse", ModelCard(
        name="diffusion/sd-vae-ft-mse", title="SD VAE ft-MSE (AutoencoderKL)",
        description="Stable Diffusion's KL autoencoder with the decoder fine-tuned for MSE: an image becomes a "
                    "4 x H/8 x W/8 latent at the photo's own size (any multiple of 8; 256 px: 4 x 32 x 32). No prior: latents "
                    "come from images.",
        trained_on="OpenImages (the original SD VAE), decoder fine-tuned on LAION-Aesthetics and LAION-Humans subsets",
        resolution=256, licence="MIT", source="https://huggingface.co/stabilityai/sd-vae-ft-mse", size_multiple=8,
        extra={"Latent": "4 x H/8 x W/8 (posterior mode x 0.18215); 4 x 32 x 32 at 256 px"}), ()),
    "diffusion/taesd": ("madebyollin/taesd", ModelCard(
        name="diffusion/taesd", title="TAESD (AutoencoderTiny)",
        description="A tiny autoencoder distilled from the Stable Diffusion VAE: the same 4-channel latent at a "
                    "fraction of the cost, at the photo's own size (any multiple of 8). No prior: latents come from images.",
        trained_on="distilled from the SD VAE on LAION-derived images (see the repository)",
        resolution=256, licence="MIT", source="https://huggingface.co/madebyollin/taesd", size_multiple=8,
        extra={"Latent": "4 x H/8 x W/8; 4 x 32 x 32 at 256 px"}), ()),
    "diffusion/ddpm-celebahq-256": ("google/ddpm-ema-celebahq-256", ModelCard(
        name="diffusion/ddpm-celebahq-256", title="DDPM CelebA-HQ 256 (EMA)",
        description="Ho et al.'s unconditional diffusion model of celebrity faces; sampled and inverted with DDIM. "
                    "Its latent is the 3 x 256 x 256 noise x_T. Slow on a CPU (seconds per step).",
        trained_on="CelebA-HQ (30,000 celebrity photos; CelebA's terms: non-commercial research)",
        resolution=256, licence="Apache-2.0 (weights); CelebA-HQ data non-commercial",
        source="https://huggingface.co/google/ddpm-ema-celebahq-256", commercial_use=False,
        extra={"Latent": "x_T, 196,608 numbers; x_T+ one per sampling stage"}), (FACES,)),
    "diffusion/ddpm-cifar10-32": ("google/ddpm-cifar10-32", ModelCard(
        name="diffusion/ddpm-cifar10-32", title="DDPM CIFAR-10 32",
        description="Ho et al.'s unconditional diffusion model of CIFAR-10's 32 px images; sampled and inverted with DDIM.",
        trained_on="CIFAR-10 training set (50,000 images, 10 classes)", resolution=32, licence="Apache-2.0",
        source="https://huggingface.co/google/ddpm-cifar10-32", extra={"Latent": "x_T, 3,072 numbers"}), ()),
}


def by_repo(repo: str) -> str | None:
    return next((name for name, (r, _, _) in CATALOG.items() if r == repo), None)


def hub_entry(repo: str, card: ModelCard, tags: tuple[str, ...] = ()) -> ModelEntry:
    """An entry whose files live in the HF cache: "not downloaded" until ``download`` fetched them."""
    from plugins.diffusion import hub

    def status() -> str:
        return "ready" if hub.cached_folder(repo) is not None else "not downloaded"

    def load():
        from plugins.diffusion import load_folder

        folder = hub.cached_folder(repo)
        if folder is None:
            raise RuntimeError(hub.offline_message(repo) if hub.is_offline() else
                               f"{repo} is not downloaded yet: press Download weights in its model panel (or run python -m plugins.diffusion.download {repo}).")
        return load_folder(folder, card)

    return ModelEntry(card=card, load=load, status=status, download=lambda progress=None: hub.download(repo, progress),
                      tags=tuple(tags))


def entry(name: str) -> ModelEntry:
    repo, card, tags = CATALOG[name]
    return hub_entry(repo, card, tags)


def entries() -> list[ModelEntry]:
    return [entry(name) for name in CATALOG]
