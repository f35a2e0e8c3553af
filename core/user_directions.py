"""Directions from a labelled folder of photos, for any model, and where users' directions live.

``fit_from_folder`` encodes (or projects) every listed image, then fits one
direction per label column: two distinct values -> logistic regression (a
yes/no attribute such as gender), numbers -> ridge regression (such as age).
Accuracy is measured on held-out people when a person column is given.
Columns about ethnicity or race are dropped (core.labels): Latent Lab never infers them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.direction import Direction, load_directions, save_directions
from core.direction_fit import cached_pca_directions, fit_binary_direction, fit_numeric_direction
from core.image_input import load_image, model_input
from core.images import from_pil
from core.labels import MISSING, list_images, read_labels, row_key
from core.model import LatentModel
from core.paths import cache_dir
from core.projection import to_latent

if TYPE_CHECKING:
    from core.executor import Executor

YOURS = "(yours)"  # how a user's direction named like a shipped one is listed beside it
GROUP_COLUMNS = ("person", "person_id", "group", "subject", "identity", "face_id")


def user_directions_path(model_name: str) -> Path:
    """Where directions a user made for a model are kept (``python app.py directions``)."""
    return cache_dir("directions", "user") / (re.sub(r"[^A-Za-z0-9._-]+", "_", model_name) + ".safetensors")


def directions_for(model_name: str, model: LatentModel, unsupervised: int = 10) -> list[Direction]:
    """The model's shipped directions, the user's own (one named like a shipped one is listed beside it as
    "NAME (yours)": a direction fitted on a few photos must never silently replace one fitted on many), then the top
    ``unsupervised`` principal components of sampled latents (GANSpace), computed once per model and cached
    (none for a space without a prior or a large one)."""
    found = {d.name: d for d in model.directions()}
    for name, d in _user_directions(model_name).items():
        if name in found:
            d = dataclasses.replace(d, name=f"{name} {YOURS}")
        found[d.name] = d
    space = "w" if "w" in model.spaces else model.default_space
    # No principal components of a space without a prior (an SD VAE's) or of a large one (a 196,608-d noise latent:
    # 10,000 samples would be 8 GB, and the components of an isotropic Gaussian are arbitrary anyway).
    if unsupervised and model.spaces[space].can_sample and not model.spaces[space].large:
        dim = int(np.prod(model.spaces[space].shape))

        def sample(n: int) -> np.ndarray:
            with torch.no_grad():
                return np.concatenate([model.sample(1000, seed=i, space=space).cpu().numpy() for i in range(n // 1000)])

        n = min(unsupervised, dim)
        for d in cached_pca_directions(model_name, sample, n=n, n_samples=10_000, space=space):
            found.setdefault(d.name, d)
    return list(found.values())


@dataclass
class LabelledImages:
    paths: list[Path]
    labels: dict[str, list[str]]  # column -> raw text per image
    groups: list[str]  # the person column, else each row's own key


def read_labelled_folder(images_dir: str | Path, labels_csv: str | Path) -> LabelledImages:
    """Photos of ``images_dir`` with their CSV rows (see :mod:`core.labels` for the matching rule)."""
    key, rows = read_labels(labels_csv)
    columns = list(next(iter(rows.values())))
    group = next((c for c in columns if c.strip().lower() in GROUP_COLUMNS), None)
    label_cols = [c for c in columns if c not in (key, group)]
    if not label_cols:
        raise ValueError(f"{Path(labels_csv).name} has no label columns besides '{key}'.")
    paths, labels, groups = [], {c: [] for c in label_cols}, []
    for p in list_images(images_dir):
        k = row_key(p, rows)
        if k is None:
            continue
        paths.append(p)
        for c in label_cols:
            labels[c].append(rows[k].get(c, ""))
        groups.append(rows[k].get(group, k) if group else k)
    if not paths:
        raise ValueError(f"No image in {images_dir} matches the '{key}' column of {Path(labels_csv).name}.")
    return LabelledImages(paths, labels, groups)


def encode_images(model: LatentModel, paths: list[Path], space: str, align_faces: bool, steps: int = 200,
                  progress: Callable[[int, int, str], None] | None = None, executor: Executor | None = None
                  ) -> tuple[np.ndarray, list[int]]:
    """Latents of the images that could be read (and whose face was found); returns them and their indices.

    ``executor`` encodes or projects them (``core.executor``; default: in this process)."""
    latents, kept = [], []
    for i, p in enumerate(paths):
        if progress:
            progress(i, len(paths), p.name)
        try:
            img = model_input(load_image(p), model.image_size, model.channels, align_faces).image
        except ValueError:
            continue  # unreadable image or no face: skipped, and counted in the report
        z = to_latent(model, from_pil(img, model.channels), space, executor=executor, steps=steps)
        latents.append(z.detach().cpu().numpy()[0])
        kept.append(i)
    if not latents:
        raise ValueError("None of the images could be used (unreadable, or no face found).")
    return np.stack(latents), kept


def fit_from_folder(model: LatentModel, model_name: str, images_dir: str | Path, labels_csv: str | Path,
                    space: str | None = None, align_faces: bool = True, steps: int = 200,
                    progress: Callable[[int, int, str], None] | None = None,
                    executor: Executor | None = None) -> tuple[list[Direction], list[str]]:
    """Fit one direction per label column; returns the directions and notes (skipped columns, images)."""
    space = model.check_space(space or ("w" if "w" in model.spaces else model.default_space))
    data = read_labelled_folder(images_dir, labels_csv)
    latents, kept = encode_images(model, data.paths, space, align_faces, steps, progress, executor)
    notes = [f"{len(kept)} of {len(data.paths)} images used" + ("" if len(kept) == len(data.paths) else " (others unreadable or no face)")]
    groups = [data.groups[i] for i in kept]
    source = f"{len(kept)} labelled images from {Path(images_dir).name}"
    layers = None
    if model.spaces[space].per_layer is False and "w+" in model.spaces:
        groups_of_layers = model.layer_groups("w+")
        layers = groups_of_layers.get("coarse", []) + groups_of_layers.get("middle", [])  # attributes live in coarse/middle layers
    out = []
    for column, raw in data.labels.items():
        values = [raw[i] for i in kept]
        known = [(i, v) for i, v in enumerate(values) if v.lower() not in MISSING]
        idx = np.array([i for i, _ in known])
        vals = [v for _, v in known]
        g = [groups[i] for i in idx]
        try:
            numbers = np.array(vals, dtype=float)
        except ValueError:
            numbers = None
        try:
            if len(set(vals)) == 2:
                d = fit_binary_direction(latents[idx], vals, column, groups=g, space=space, source=source, layers=layers)
            elif numbers is not None:
                d = fit_numeric_direction(latents[idx], numbers, column, groups=g, space=space, source=source, layers=layers,
                                          unit="years" if column.lower() == "age" else column)
            else:
                notes.append(f"'{column}': skipped (neither two classes nor numbers)")
                continue
        except ValueError as e:
            notes.append(f"'{column}': skipped ({e})")
            continue
        out.append(d)
        notes.append(d.describe())
    return out, notes


def save_user_directions(model_name: str, directions: list[Direction]) -> Path:
    """Merge with the user's earlier directions for this model (same names are replaced)."""
    found = _user_directions(model_name)
    found.update({d.name: d for d in directions})
    return save_directions(user_directions_path(model_name), list(found.values()))


def _user_directions(model_name: str) -> dict[str, Direction]:
    """The user's saved directions for a model by name; none when there are none or the file is unreadable
    (a broken user file must not break the model)."""
    path = user_directions_path(model_name)
    if path.is_file():
        try:
            return {d.name: d for d in load_directions(path)}
        except ValueError:
            pass
    return {}
