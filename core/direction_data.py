"""Directions from a labelled folder of photos, for any model, and where users' directions live.

``fit_from_folder`` encodes (or projects) every listed image, then fits one
direction per label column: two distinct values -> logistic regression (a
yes/no attribute such as gender), numbers -> ridge regression (such as age).
Accuracy is measured on held-out people when a person column is given.
Columns about ethnicity or race are refused: Latent Lab never infers them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.directions import Direction, fit_binary_direction, fit_numeric_direction, load_directions, save_directions
from core.model import LatentModel

FILE_COLUMNS = ("file", "filename", "image", "path", "id", "face_id")
GROUP_COLUMNS = ("person", "person_id", "group", "subject", "identity", "face_id")
REFUSED = re.compile(r"(?:^|[_\W])(eth\w*|race|racial|skin\w*|nationality|origin)(?:$|[_\W])", re.I)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def user_directions_path(model_name: str) -> Path:
    """Where directions a user made for a model are kept (``python app.py directions``)."""
    from core.paths import cache_dir

    return cache_dir("directions", "user") / (re.sub(r"[^A-Za-z0-9._-]+", "_", model_name) + ".safetensors")


def directions_for(model_name: str, model: LatentModel) -> list[Direction]:
    """The model's shipped directions followed by the user's own (theirs win on a name clash)."""
    found = {d.name: d for d in model.directions()}
    path = user_directions_path(model_name)
    if path.is_file():
        try:
            found.update({d.name: d for d in load_directions(path)})
        except ValueError:
            pass  # an unreadable user file must not break the model
    return list(found.values())


@dataclass
class LabelledImages:
    paths: list[Path]
    labels: dict[str, list[str]]  # column -> raw text per image
    groups: list[str] | None


def read_labels(images_dir: str | Path, labels_csv: str | Path) -> LabelledImages:
    """Match CSV rows to image files by file name or stem (e.g. ``001`` matches ``001_03.jpg``)."""
    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    if not images_dir.is_dir():
        raise ValueError(f"The image folder {images_dir} does not exist.")
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{labels_csv.name} has no rows.")
    columns = list(rows[0])
    key = next((c for c in columns if c.strip().lower() in FILE_COLUMNS), columns[0])
    group = next((c for c in columns if c.strip().lower() in GROUP_COLUMNS), None)
    refused = [c for c in columns if REFUSED.search(c)]
    label_cols = [c for c in columns if c not in (key, group) and c not in refused]
    if not label_cols:
        raise ValueError(f"{labels_csv.name} has no label columns besides '{key}'.")
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    by_name = {p.name: p for p in files}
    paths, labels, groups = [], {c: [] for c in label_cols}, []
    for row in rows:
        ident = (row.get(key) or "").strip()
        matches = [by_name[ident]] if ident in by_name else [p for p in files if p.stem == ident or p.stem.startswith(ident + "_")]
        for p in matches:
            paths.append(p)
            for c in label_cols:
                labels[c].append((row.get(c) or "").strip())
            groups.append((row.get(group) or ident) if group else ident)
    if not paths:
        raise ValueError(f"No image in {images_dir} matches the '{key}' column of {labels_csv.name}.")
    return LabelledImages(paths, labels, groups)


def encode_images(model: LatentModel, paths: list[Path], space: str, align_faces: bool, steps: int = 200,
                  progress: Callable[[int, int, str], None] | None = None) -> tuple[np.ndarray, list[int]]:
    """Latents of the images that could be read (and whose face was found); returns them and their indices."""
    from core.image_input import load_image, model_input
    from core.images import from_pil
    from core.projection import ProjectionConfig, run_projection

    latents, kept = [], []
    for i, p in enumerate(paths):
        if progress:
            progress(i, len(paths), p.name)
        try:
            img, _ = model_input(load_image(p), model.image_size, model.channels, align_faces)
        except ValueError:
            continue  # unreadable image or no face: skipped, and counted in the report
        x = from_pil(img, model.channels)
        if model.has_encoder:
            with torch.no_grad():
                z = model.encode(x, space)
        else:
            cfg = ProjectionConfig(**{**model.projection_defaults(space), "space": space, "steps": steps, "preview_every": 0})
            z = run_projection(model, x, cfg).latent
        latents.append(z.detach().cpu().numpy()[0])
        kept.append(i)
    if not latents:
        raise ValueError("None of the images could be used (unreadable, or no face found).")
    return np.stack(latents), kept


def fit_from_folder(model: LatentModel, model_name: str, images_dir: str | Path, labels_csv: str | Path,
                    space: str | None = None, align_faces: bool = True, steps: int = 200,
                    progress: Callable[[int, int, str], None] | None = None) -> tuple[list[Direction], list[str]]:
    """Fit one direction per label column; returns the directions and notes (skipped columns, images)."""
    space = model.check_space(space or ("w" if "w" in model.spaces else model.default_space))
    data = read_labels(images_dir, labels_csv)
    latents, kept = encode_images(model, data.paths, space, align_faces, steps, progress)
    notes = [f"{len(kept)} of {len(data.paths)} images used" + ("" if len(kept) == len(data.paths) else " (others unreadable or no face)")]
    groups = [data.groups[i] for i in kept] if data.groups else None
    source = f"{len(kept)} labelled images from {Path(images_dir).name}"
    layers = None
    if model.spaces[space].per_layer is False and "w+" in model.spaces:
        groups_of_layers = model.layer_groups("w+")
        layers = groups_of_layers.get("coarse", []) + groups_of_layers.get("middle", [])  # attributes live in coarse/middle layers
    out = []
    for column, raw in data.labels.items():
        values = [raw[i] for i in kept]
        known = [(i, v) for i, v in enumerate(values) if v and v.lower() not in ("na", "nan", "none", "?")]
        idx = np.array([i for i, _ in known])
        vals = [v for _, v in known]
        g = [groups[i] for i in idx] if groups else None
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
    path = user_directions_path(model_name)
    old = {}
    if path.is_file():
        try:
            old = {d.name: d for d in load_directions(path)}
        except ValueError:
            old = {}
    old.update({d.name: d for d in directions})
    return save_directions(path, list(old.values()))
