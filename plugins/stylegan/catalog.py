"""NVIDIA's published StyleGAN2 / StyleGAN2-ADA / StyleGAN3 network pickles.

Torch-free and network-free, so the app can list the models (with their
licences) at start-up. URLs and file names come from the official READMEs
(NVlabs/stylegan3, NVlabs/stylegan2-ada-pytorch); see the shared
fixtures' FORMAT.md §1. File sizes and hashes were never measured here, so
they are left unknown (``None``) rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from core.card import ModelCard
from plugins.contract import FACES

NGC_STYLEGAN2 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
NGC_STYLEGAN3 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
ADA_CDN = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"


@dataclass(frozen=True)
class Licence:
    title: str
    url: str  # the link the official README gives
    commercial_use: bool = False


# Both are the non-commercial "NVIDIA Source Code License"; each repository links its own copy.
LICENCES: dict[str, Licence] = {
    "stylegan3": Licence("NVIDIA Source Code License for StyleGAN3", "https://github.com/NVlabs/stylegan3/blob/main/LICENSE.txt"),
    "stylegan2-ada": Licence(
        "NVIDIA Source Code License for StyleGAN2 with Adaptive Discriminator Augmentation (ADA)",
        "https://nvlabs.github.io/stylegan2-ada-pytorch/license.html",
    ),
}

PAPERS: dict[str, str] = {
    "stylegan2": "Karras et al., Analyzing and Improving the Image Quality of StyleGAN, CVPR 2020",
    "stylegan2-ada": "Karras et al., Training Generative Adversarial Networks with Limited Data, NeurIPS 2020",
    "stylegan3": "Karras et al., Alias-Free Generative Adversarial Networks, NeurIPS 2021",
}


@dataclass(frozen=True)
class Dataset:
    title: str
    description: str
    url: str
    faces: bool = False  # human faces: offered by the Family tab
    alignment: str = ""  # how faces are cropped; the Family tab aligns photos the FFHQ way


DATASETS: dict[str, Dataset] = {
    "ffhq": Dataset(
        "FFHQ",
        "Flickr-Faces-HQ: 70,000 face photos from Flickr, aligned and cropped.",
        "https://github.com/NVlabs/ffhq-dataset",
        True,
        "FFHQ (the same alignment as core.faces)",
    ),
    "ffhqu": Dataset(
        "FFHQ-U",
        "FFHQ-U: the FFHQ photos without the alignment step (faces not centred), made for StyleGAN3.",
        "https://github.com/NVlabs/stylegan3",
        True,
        "unaligned (FFHQ-aligned inputs still work, off-centre ones too)",
    ),
    "celebahq": Dataset(
        "CelebA-HQ",
        "CelebA-HQ: 30,000 high-quality crops of celebrity photos from CelebA.",
        "https://github.com/tkarras/progressive_growing_of_gans",
        True,
        "CelebA-HQ crop (differs from the FFHQ alignment)",
    ),
    "metfaces": Dataset(
        "MetFaces",
        "MetFaces: 1,336 faces from artworks (paintings, drawings, sculptures) of the Metropolitan Museum of Art.",
        "https://github.com/NVlabs/metfaces-dataset",
        True,
        "FFHQ (the same alignment as core.faces)",
    ),
    "metfacesu": Dataset(
        "MetFaces-U",
        "MetFaces-U: the MetFaces artworks without the alignment step, made for StyleGAN3.",
        "https://github.com/NVlabs/stylegan3",
        True,
        "unaligned",
    ),
    "afhqcat": Dataset("AFHQ Cat", "Animal Faces-HQ, cat class.", "https://github.com/clovaai/stargan-v2"),
    "afhqdog": Dataset("AFHQ Dog", "Animal Faces-HQ, dog class.", "https://github.com/clovaai/stargan-v2"),
    "afhqwild": Dataset("AFHQ Wild", "Animal Faces-HQ, wild-animal class.", "https://github.com/clovaai/stargan-v2"),
    "afhqv2": Dataset(
        "AFHQv2",
        "Animal Faces-HQ version 2: cats, dogs and wild animals together.",
        "https://github.com/clovaai/stargan-v2",
    ),
}


@dataclass(frozen=True)
class Checkpoint:
    """One published network pickle: where it is and what the user must know about it."""

    name: str  # registry id, e.g. "stylegan2/ffhq-256"
    family: str  # "stylegan2" or "stylegan3"; the loader itself tells T from R by structure
    url: str
    resolution: int
    dataset: str  # key of DATASETS
    release: str  # key of LICENCES: which official release published the file
    note: str = ""  # what the official README says about this file, if anything
    papers: tuple[str, ...] = ()  # keys of PAPERS to cite
    size_bytes: int | None = None  # unknown: never measured here
    sha256: str | None = None  # unknown: NVIDIA publishes none

    @property
    def filename(self) -> str:
        """The file name in the URL; the name a user downloading by hand will see."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    @property
    def config(self) -> str:
        """'T' / 'R' for StyleGAN3, '' otherwise (from the published name)."""
        return self.name.split("/")[0].rsplit("-", 1)[-1].upper() if self.family == "stylegan3" else ""

    @property
    def tags(self) -> tuple[str, ...]:
        return ((FACES,) if DATASETS[self.dataset].faces else ()) + (self.family,)

    @property
    def licence(self) -> Licence:
        return LICENCES[self.release]

    def card(self) -> ModelCard:
        ds = DATASETS[self.dataset]
        arch = {"stylegan2": "StyleGAN2", "stylegan3": f"StyleGAN3-{self.config}"}[self.family]
        via = {"stylegan3": "NVIDIA NGC (StyleGAN3 release)", "stylegan2-ada": "NVIDIA (StyleGAN2-ADA release)"}[self.release]
        extra = {"Dataset": f"[{ds.title}]({ds.url})", "File": f"`{self.filename}` (size unknown until downloaded)"}
        if ds.alignment:
            extra["Face alignment"] = ds.alignment
        cite = "; ".join(PAPERS[p] for p in self.papers)
        description = (
            f"{arch} generator, {self.resolution}×{self.resolution}, trained by NVIDIA on {ds.title}; published by {via}."
        )
        if self.note:
            description += f" {self.note}"
        return ModelCard(
            name=self.name,
            title=f"{arch} {ds.title} {self.resolution}" + (" (ADA release)" if self.release == "stylegan2-ada" else ""),
            description=description,
            trained_on=ds.description,
            resolution=self.resolution,
            licence=self.licence.title,
            source=self.url,
            licence_url=self.licence.url,
            attribution=f"© NVIDIA Corporation. {cite}.",
            commercial_use=self.licence.commercial_use,
            extra=extra,
        )


def _ngc2(ds: str, res: int) -> Checkpoint:
    url = f"{NGC_STYLEGAN2}stylegan2-{ds}-{res}x{res}.pkl"
    return Checkpoint(f"stylegan2/{ds}-{res}", "stylegan2", url, res, ds, "stylegan3", papers=("stylegan2", "stylegan3"))


def _ngc3(cfg: str, ds: str, res: int) -> Checkpoint:
    url = f"{NGC_STYLEGAN3}stylegan3-{cfg}-{ds}-{res}x{res}.pkl"
    return Checkpoint(f"stylegan3-{cfg}/{ds}-{res}", "stylegan3", url, res, ds, "stylegan3", papers=("stylegan3",))


def _ada(file: str, ds: str, res: int, note: str, papers: tuple[str, ...] = ("stylegan2-ada",)) -> Checkpoint:
    return Checkpoint(f"stylegan2-ada/{ds}-{res}", "stylegan2", f"{ADA_CDN}{file}", res, ds, "stylegan2-ada", note, papers)


# Smallest first: the 256 px models are the practical ones on a CPU.
CHECKPOINTS: tuple[Checkpoint, ...] = (
    _ngc2("ffhq", 256),
    _ngc2("ffhqu", 256),
    _ngc2("celebahq", 256),
    _ngc3("t", "ffhqu", 256),
    _ngc3("r", "ffhqu", 256),
    _ngc2("ffhq", 512),
    _ngc2("afhqv2", 512),
    _ngc2("afhqcat", 512),
    _ngc2("afhqdog", 512),
    _ngc2("afhqwild", 512),
    _ngc3("t", "afhqv2", 512),
    _ngc3("r", "afhqv2", 512),
    _ngc2("ffhq", 1024),
    _ngc2("ffhqu", 1024),
    _ngc2("metfaces", 1024),
    _ngc2("metfacesu", 1024),
    _ngc3("t", "ffhq", 1024),
    _ngc3("t", "ffhqu", 1024),
    _ngc3("t", "metfaces", 1024),
    _ngc3("t", "metfacesu", 1024),
    _ngc3("r", "ffhq", 1024),
    _ngc3("r", "ffhqu", 1024),
    _ngc3("r", "metfaces", 1024),
    _ngc3("r", "metfacesu", 1024),
    _ada(
        "ffhq.pkl",
        "ffhq",
        1024,
        "The README says it was trained with the original StyleGAN2 (TensorFlow) and converted.",
        ("stylegan2",),
    ),
    _ada("metfaces.pkl", "metfaces", 1024, "The README says: transfer learning from FFHQ with ADA."),
    _ada("afhqcat.pkl", "afhqcat", 512, "The README says: trained from scratch with ADA."),
    _ada("afhqdog.pkl", "afhqdog", 512, "The README says: trained from scratch with ADA."),
    _ada("afhqwild.pkl", "afhqwild", 512, "The README says: trained from scratch with ADA."),
)

DEFAULT = "stylegan2/ffhq-256"

_BY_NAME = {c.name: c for c in CHECKPOINTS}


def checkpoint(name: str) -> Checkpoint:
    """The catalog entry called ``name`` (KeyError with the list of names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"No StyleGAN checkpoint called '{name}'. Known: {', '.join(_BY_NAME)}.") from None
