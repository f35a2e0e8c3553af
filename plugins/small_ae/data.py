"""Training data for the small autoencoders: scikit-learn's digits and folders of photos.

Held-out data is chosen without any random generator whose stream could change
between library versions: digits by a fixed hash of the sample index, photo
folders by a hash of the person (group) key, so both photos of a held-out
person stay out of training. Aligned face crops are cached in the user cache
(never in the repository: the London set's images may not be committed).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.image_input import fit_square, load_image
from core.labels import MISSING, list_images, read_labels, row_key

_ALIGN_CACHE_VERSION = "1"


@dataclass
class Dataset:
    """Images (N, C, H, W) in [-1, 1] with integer/float labels and a train/held-out split."""

    images: torch.Tensor
    heldout: np.ndarray  # bool (N,)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    label_maps: dict[str, list[str]] = field(default_factory=dict)  # code -> name for categorical labels
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files left out (e.g. no face found), with the reason
    name: str = ""

    @property
    def train_images(self) -> torch.Tensor:
        return self.images[torch.from_numpy(~self.heldout)]

    @property
    def heldout_images(self) -> torch.Tensor:
        return self.images[torch.from_numpy(self.heldout)]


def _hash_unit(key: str) -> float:
    """A stable number in [0, 1) for a key (same on every machine and Python version)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / 16**12


def holdout_by_key(keys: list[str], fraction: float) -> np.ndarray:
    """Hold out round(fraction * #unique keys) keys, those with the smallest hash; all their items go out."""
    unique = sorted(set(keys))
    n_out = int(round(fraction * len(unique)))
    out = set(sorted(unique, key=_hash_unit)[:n_out])
    return np.array([k in out for k in keys], dtype=bool)


# ----- digits --------------------------------------------------------------------------
def load_digits_dataset(heldout_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits (values 0-16) as (1797, 1, 8, 8) in [-1, 1]; labels ``digit`` and ``index``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1) / 8.0 - 1.0
    index = np.arange(len(images))
    heldout = holdout_by_key([f"digits-{i}" for i in index], heldout_fraction)
    return Dataset(images, heldout, {"digit": d.target.astype(np.int64), "index": index}, name="digits")


# ----- photo folders -------------------------------------------------------------------
@functools.cache
def _aligner_fingerprint() -> str:
    """Hash of the alignment code, so a change to it never serves stale cached crops."""
    import core.faces

    folder = Path(core.faces.__file__).parent
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(folder.glob("*.py")))).hexdigest()


def _aligned_cached(path: Path, size: int) -> np.ndarray | None:
    """FFHQ-aligned crop (uint8 H, W, 3) of one photo, or None when no face is found; cached by file content."""
    from core.paths import cache_dir

    raw = path.read_bytes()
    digest = hashlib.sha1(raw + _aligner_fingerprint().encode()).hexdigest()
    cache = cache_dir("small_ae", "aligned") / f"{digest}_{size}_v{_ALIGN_CACHE_VERSION}"
    png, none = cache.with_suffix(".png"), cache.with_suffix(".noface")
    if png.is_file():
        return np.asarray(Image.open(png).convert("RGB"))
    if none.is_file():
        return None
    from core.faces import NoFaceError, align_face

    try:
        crop = align_face(load_image(raw), size).image
    except NoFaceError:
        none.touch()
        return None
    crop.save(png)
    return np.asarray(crop)


def _encode_column(values: list[str], universe: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """Numbers stay numbers (int when whole); text becomes codes 0..k-1 in the sorted order of all
    values in ``universe`` (the whole column, so a subset gets the same codes), with the names."""
    try:
        every = np.array([np.nan if v.lower() in MISSING else float(v) for v in universe])
        nums = np.array([np.nan if v.lower() in MISSING else float(v) for v in values])
        if np.all(np.isfinite(every)) and np.all(every == np.round(every)):
            return nums.astype(np.int64), None
        return nums, None  # float, NaN where missing
    except ValueError:
        names = sorted(set(universe))
        code = {n: i for i, n in enumerate(names)}
        return np.array([code[v] for v in values], dtype=np.int64), names


def load_folder(
    folder: str | Path,
    size: int = 64,
    align_faces: bool = False,
    labels_csv: str | Path | None = None,
    folder_label: str = "folder",
    heldout_fraction: float = 0.15,
    rename: dict[str, str] | None = None,
    progress: bool = True,
    only_heldout: bool = False,
) -> Dataset:
    """Every image under ``folder`` as (N, 3, size, size) in [-1, 1].

    With ``labels_csv`` the first column is a key matched to the file stem or to
    the stem's part before the first "_" (London: ``001`` <- ``001_03.jpg``);
    photos with the same key are held out together. Images in sub-folders get a
    categorical label ``folder_label`` (the sub-folder name). ``only_heldout`` reads just the
    held-out photos (for quick evaluation).
    """
    from tqdm import tqdm

    folder = Path(folder).expanduser()
    files = list_images(folder)
    _, rows = read_labels(labels_csv) if labels_csv else ("", {})
    rename = rename or {}
    skipped: list[str] = []
    keys = []
    for path in files:
        key = row_key(path, rows) if rows else path.stem
        if rows and key is None:
            skipped.append(f"{path.relative_to(folder)}: no row in {Path(labels_csv).name}")
            key = ""
        keys.append(key)
    # The split is decided from the file names alone, before any photo is read, so it never
    # depends on which photos the face detector happens to accept.
    labelled = [(p, k) for p, k in zip(files, keys, strict=True) if k]
    heldout_all = holdout_by_key([k for _, k in labelled], heldout_fraction)
    arrays, kept, heldout, label_rows, subfolders = [], [], [], [], []
    for (path, key), out in tqdm(list(zip(labelled, heldout_all, strict=True)), desc="reading images", disable=not progress):
        if only_heldout and not out:
            continue
        try:
            arr = _aligned_cached(path, size) if align_faces else np.asarray(fit_square(load_image(path), size))
        except (OSError, ValueError) as e:  # ValueError: core.image_input's plain-sentence refusals
            skipped.append(f"{path.relative_to(folder)}: unreadable ({e})")
            continue
        if arr is None:
            skipped.append(f"{path.relative_to(folder)}: no face found")
            continue
        arrays.append(arr)
        kept.append(path.relative_to(folder).as_posix())
        heldout.append(out)
        label_rows.append(rows.get(key, {}))
        subfolders.append(path.parent.relative_to(folder).as_posix())
    if not arrays:
        raise ValueError(f"No usable image in '{folder}' ({len(skipped)} skipped).")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    labels: dict[str, np.ndarray] = {}
    maps: dict[str, list[str]] = {}
    all_rows = [rows[k] for _, k in labelled] if rows else []
    for col in label_rows[0] if rows else []:
        values, names = _encode_column([r.get(col, "") for r in label_rows], [r.get(col, "") for r in all_rows])
        name = rename.get(col, col)
        labels[name] = values
        if names is not None:
            maps[name] = names
    all_subfolders = [p.parent.relative_to(folder).as_posix() for p, _ in labelled]
    if len(set(all_subfolders)) > 1:
        values, names = _encode_column(subfolders, all_subfolders)
        labels[folder_label], maps[folder_label] = values, names
    return Dataset(images, np.array(heldout, dtype=bool), labels, maps, kept, skipped, name=folder.name)


# ----- the London preset ---------------------------------------------------------------
def london_root(shared: str | Path | None = None) -> Path:
    """The London set in the developers' shared data (../shared beside the project, or $LATENT_LAB_SHARED)."""
    import os

    if shared is None:
        shared = os.environ.get("LATENT_LAB_SHARED", Path(__file__).resolve().parents[3] / "shared")
    return Path(shared) / "data" / "faces" / "london"


def load_london(size: int = 64, root: str | Path | None = None, progress: bool = True, only_heldout: bool = False) -> Dataset:
    """The 204 London photos, FFHQ-aligned; labels face_id, age, gender (0=female, 1=male), expression (0=neutral, 1=smiling)."""
    root = Path(root) if root else london_root()
    if not (root / "london_info.csv").is_file():
        raise FileNotFoundError(f"The London face set is not at '{root}' (it lives in the developers' shared data).")
    ds = load_folder(
        root,
        size,
        align_faces=True,
        labels_csv=root / "london_info.csv",
        folder_label="expression",
        heldout_fraction=0.15,
        rename={"face_age": "age", "face_gender": "gender"},
        progress=progress,
        only_heldout=only_heldout,
    )
    ds.name = "london"
    return ds



# ----- the mixed faces preset: London + selfies + Olivetti, with face masks --------------------
@dataclass
class FaceMix:
    """The London set (its split, labels and latents as before) plus training-only extra faces.

    ``masks`` (N, H, W) and ``extra_masks`` are the soft face regions (``core.faces.mask``) of every crop:
    training weighs the face in its loss and replaces the background outside it.
    """

    london: Dataset
    masks: torch.Tensor
    extra_images: torch.Tensor
    extra_masks: torch.Tensor
    extra_sources: dict[str, int]
    shared: str | Path | None = None

    @property
    def train_images(self) -> torch.Tensor:
        return torch.cat([self.london.train_images, self.extra_images])

    @property
    def train_masks(self) -> torch.Tensor:
        return torch.cat([self.masks[torch.from_numpy(~self.london.heldout)], self.extra_masks])


def _aligned_with_mask(raw: bytes, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """FFHQ-aligned crop (uint8 H, W, 3) and its face mask (float32 H, W) of one photo's largest face, or None;
    cached by content like :func:`_aligned_cached`."""
    from core.paths import cache_dir

    digest = hashlib.sha1(raw + _aligner_fingerprint().encode()).hexdigest()
    cache = cache_dir("small_ae", "aligned") / f"{digest}_{size}_masked_v{_ALIGN_CACHE_VERSION}"
    npz, none = cache.with_suffix(".npz"), cache.with_suffix(".noface")
    if npz.is_file():
        with np.load(npz) as f:
            return f["crop"], f["mask"]
    if none.is_file():
        return None
    from core.faces import NoFaceError, align_face, to_aligned
    from core.faces.mask import face_mask

    try:
        aligned = align_face(load_image(raw), size)
    except NoFaceError:
        none.touch()
        return None
    crop = np.asarray(aligned.image.convert("RGB"))
    mask = face_mask(to_aligned(aligned.face.landmarks, aligned.quad, size), size).astype(np.float32)
    np.savez(npz, crop=crop, mask=mask)
    return crop, mask


def _to_tensors(pairs: list[tuple[np.ndarray, np.ndarray]], size: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    if not pairs:
        return torch.zeros(0, channels, size, size), torch.zeros(0, size, size)
    images = torch.from_numpy(np.stack([c for c, _ in pairs])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images, torch.from_numpy(np.stack([m for _, m in pairs])).float()


def load_face_mix(size: int = 64, shared: str | Path | None = None, olivetti: bool = False, progress: bool = True) -> FaceMix:
    """London (neutral + smiling, the usual 15-person hold-out) for training and latents, plus the selfies
    and the Olivetti faces that the detector finds on a 4x enlarged copy (greyscale, as RGB) for training only."""
    import io

    from tqdm import tqdm

    london = load_london(size, london_root(shared), progress=progress)
    root = london_root(shared).parent
    pairs = []
    for name in tqdm(london.files, desc="face masks", disable=not progress):
        found = _aligned_with_mask((london_root(shared) / name).read_bytes(), size)
        if found is None:
            raise ValueError(f"London photo {name} lost its face between two alignments.")
        pairs.append(found)
    images, masks = _to_tensors(pairs, size)
    london.images = images  # the same alignment as load_london's crops, from the masked cache
    extra: list[tuple[np.ndarray, np.ndarray]] = []
    sources = {}
    selfies = list_images(root / "selfies") if (root / "selfies").is_dir() else []
    found = [_aligned_with_mask(p.read_bytes(), size) for p in selfies]
    extra += [f for f in found if f is not None]
    sources["selfies"] = sum(f is not None for f in found)
    oli = root / "olivetti" / "olivetti_faces.npz"
    if olivetti and oli.is_file():
        with np.load(oli) as f:
            grey = f["images"]
        n = 0
        for img in tqdm(grey, desc="olivetti", disable=not progress):
            buf = io.BytesIO()
            Image.fromarray(img).resize((4 * img.shape[1], 4 * img.shape[0]), Image.BICUBIC).convert("RGB").save(buf, "PNG")
            got = _aligned_with_mask(buf.getvalue(), size)
            if got is not None:
                extra.append(got)
                n += 1
        sources["olivetti"] = n
    extra_images, extra_masks = _to_tensors(extra, size)
    return FaceMix(london, masks, extra_images, extra_masks, sources, shared)


def load_backgrounds(size: int, shared: str | Path | None = None) -> torch.Tensor:
    """The free-licence background photos (``../shared/data/backgrounds``), shortest side resized to 2 x ``size``,
    centre-cropped square: (B, 3, 2 size, 2 size) in [-1, 1]; training cuts random windows from them."""
    folder = london_root(shared).parents[1] / "backgrounds"
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"No background photos in '{folder}'.")
    out = [np.asarray(fit_square(load_image(p), 2 * size)) for p in files]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
