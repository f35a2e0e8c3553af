"""Tiny random diffusers models written with save_pretrained, as a user's downloaded hub models would be.

Shared by the diffusion tests and bench/diffusion.py. Random weights: only shapes, plumbing and the
inversion's arithmetic are meaningful, never image quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VAE_LAYERS = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
              "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 4, "layers_per_block": 1}


def tiny_unet(size: int = 16, damp: float = 0.01, seed: int = 0):
    """A small UNet2DModel; ``damp`` scales its output layer so its noise predictions are small and smooth like a trained
    model's (a raw random UNet's are not, and nothing inverts well through them)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    with torch.no_grad():
        unet.conv_out.weight.mul_(damp)
        unet.conv_out.bias.mul_(damp)
    return unet


def save_pipeline(folder: Path, size: int = 16, card: dict | None = None, damp: float = 0.01) -> Path:
    """model_index.json + unet/ + scheduler/: a DDPMPipeline folder, as i8b's trainer and the hub write them."""
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=tiny_unet(size, damp), scheduler=DDPMScheduler()).save_pretrained(folder)
    if card is not None:
        (folder / "card.json").write_text(json.dumps(card))
    return folder


def save_bare_unet(folder: Path, size: int = 16) -> Path:
    """config.json + weights + scheduler_config.json in one folder (how google/ddpm-cifar10-32 is laid out)."""
    from diffusers import DDPMScheduler

    tiny_unet(size).save_pretrained(folder)
    DDPMScheduler().save_config(folder)
    return folder


def save_vae(folder: Path, kind: str, size: int = 32) -> Path:
    from diffusers import AutoencoderKL, AutoencoderTiny, VQModel

    torch.manual_seed(0)
    if kind == "AutoencoderKL":
        model = AutoencoderKL(latent_channels=4, sample_size=size, **VAE_LAYERS)
    elif kind == "VQModel":
        model = VQModel(latent_channels=3, num_vq_embeddings=16, sample_size=size, **VAE_LAYERS)
    else:
        model = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
    model.save_pretrained(folder)
    return folder
