"""The two small autoencoders shipped with Latent Lab: handwritten digits and faces.

Their weights are committed under ``weights/<name>/`` (``model.safetensors``,
``config.json`` and ``latents.safetensors`` with the encoded training data),
so they work offline from the first start. Listing them imports no torch;
``load`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.card import ModelCard
from plugins.registry import ModelEntry

if TYPE_CHECKING:
    from core.model import LatentModel

WEIGHTS = Path(__file__).parent / "weights"
REQUIRED_FILES = ("config.json", "model.safetensors")

LONDON_ATTRIBUTION = (
    "DeBruine, L. & Jones, B. (2017). Face Research Lab London Set. doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0"
)
DIGITS_ATTRIBUTION = (
    "Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine Learning Repository; "
    "the copy bundled with scikit-learn (load_digits, BSD-3-Clause)."
)

CARDS = {
    "digits": ModelCard(
        name="small_ae/digits",
        title="Small AE — digits (8×8)",
        description=(
            "A small convolutional autoencoder for 8×8 greyscale handwritten digits with an 8-dimensional latent code. "
            "Samples come from a 10-component Gaussian mixture fitted to the codes of the training digits. "
            "Shown at its native 8×8 resolution."
        ),
        trained_on="scikit-learn's bundled UCI handwritten digits (1,797 images; 1,438 for training, 359 held out)",
        resolution=8,
        licence="MIT (weights)",
        source="built-in",
        attribution=DIGITS_ATTRIBUTION,
        extra={"Latent": "8-d, learned prior (Gaussian mixture)"},
    ),
    "faces": ModelCard(
        name="small_ae/faces",
        title="Small AE — London faces (64×64)",
        description=(
            "A small convolutional autoencoder for FFHQ-aligned 64×64 colour faces with a 64-dimensional latent code, "
            "trained on 87 people of the Face Research Lab London Set (neutral and smiling photos, with flips, shifts, "
            "small rotations and lighting changes). Photos are aligned the same way before encoding. Expect soft, "
            "blurry faces: it learned from under 200 photos."
        ),
        trained_on="Face Research Lab London Set: 174 photos of 87 adults; 30 photos of 15 further people held out",
        resolution=64,
        licence="CC BY 4.0 (weights derived from the London Set)",
        licence_url="https://creativecommons.org/licenses/by/4.0/",
        source="built-in",
        attribution=LONDON_ATTRIBUTION,
        extra={
            "Latent": "64-d, learned prior (Gaussian fitted to the training codes)",
            "Alignment": "dlib 68-point landmarks (that landmark model is for research use only)",
        },
    ),
}


def weights_dir(name: str) -> Path:
    return WEIGHTS / name


def _status(name: str) -> str:
    missing = [f for f in REQUIRED_FILES if not (weights_dir(name) / f).is_file()]
    return "ready" if not missing else f"missing weights ({', '.join(missing)} in {weights_dir(name)})"


def load_model(name: str) -> LatentModel:
    """Load a built-in autoencoder ("digits" or "faces")."""
    from plugins.small_ae.model import SmallAEModel

    if name not in CARDS:
        raise KeyError(f"There is no built-in autoencoder '{name}' (there are: {', '.join(CARDS)}).")
    return SmallAEModel.from_pretrained(weights_dir(name), CARDS[name])


def get_models() -> list[ModelEntry]:
    return [
        ModelEntry(
            name=card.name,
            card=card,
            load=lambda n=name: load_model(n),
            status=lambda n=name: _status(n),
            tags=("faces",) if name == "faces" else ("digits",),
        )
        for name, card in CARDS.items()
    ]
