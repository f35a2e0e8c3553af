"""Teach the app a direction from examples of two sides, and keep what a session taught private to it.

A visitor gives examples "with" an attribute and "without" it: photos (put into the latent space by a function the
caller chooses: the encoder, or the same projection the Projection tab runs) or latents (points picked on the latent
map). The direction is fitted the way ``python app.py directions`` fits one (``core.direction_fit``: logistic
regression on standardised latents, accuracy only ever measured on held-out folds), and comes back with a verdict
that says how far to trust it.

What a session teaches lives in a :class:`SessionDirections` in memory only: nothing is written to disk, so nothing
outlives the session, and a taught direction named like a built-in one is listed beside it as "NAME (yours)".
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from core.direction import Direction
from core.direction_fit import fit_binary_direction
from core.user_directions import YOURS

if TYPE_CHECKING:
    from core.model import LatentModel

# Fewer than this many examples on a side cannot be held out in folds that still contain both sides.
MIN_PER_SIDE = 5
# Below this many a side, the held-out accuracy swings by more than 10 points with one example, so say so.
ADVISED_PER_SIDE = 20
# "reliable" from this held-out accuracy up. With 40 examples a measured 85 % has a 95 % interval of roughly
# 71-93 %, so even its low end is far above the 50 % of guessing; 90 % would turn away good directions whenever one
# or two of 40 held-out examples fall on the wrong side.
RELIABLE_ACCURACY = 0.85

ImageLike = Image.Image | str | Path
LatentFn = Callable[[Image.Image], "np.ndarray | torch.Tensor"]


@dataclass
class Taught:
    """A direction fitted from two sets of examples, with what a caption needs to say how good it is."""

    direction: Direction
    accuracy: float  # pooled held-out accuracy over folds that keep each person (group) on one side
    chance: float  # accuracy of always guessing the larger side
    verdict: str  # "reliable" or "weak: treat as a toy"
    n_with: int
    n_without: int
    seconds: float  # time to turn the examples into latents and fit
    notes: list[str] = field(default_factory=list)  # skipped photos, advice on the number of examples

    @property
    def reliable(self) -> bool:
        return self.verdict == "reliable"

    def describe(self) -> str:
        """One line for a caption: name, examples, held-out accuracy and verdict."""
        return (f"{self.direction.name}: taught from {self.n_with} with / {self.n_without} without; held-out accuracy "
                f"{self.accuracy:.0%} (chance {self.chance:.0%}) — {self.verdict}")

    def score(self, latents) -> np.ndarray:
        """Log-odds that each latent (N, ...) is on the "with" side (see :func:`direction_score`)."""
        return direction_score(self.direction, latents)


def verdict_for(accuracy: float, chance: float = 0.5) -> str:
    """The verdict shown beside a taught direction (the threshold is explained at ``RELIABLE_ACCURACY``)."""
    return "reliable" if accuracy >= RELIABLE_ACCURACY and accuracy > chance else "weak: treat as a toy"


def check_sides(n_with: int, n_without: int) -> None:
    """Refuse a one-sided or too-small pair of sets with a sentence that says how many examples are needed."""
    if n_with == 0 or n_without == 0:
        empty = "with" if n_with == 0 else "without"
        raise ValueError(f"The '{empty}' side has no examples: give at least {MIN_PER_SIDE} examples on each side "
                         f"(you gave {n_with} with and {n_without} without; {ADVISED_PER_SIDE} or more a side are better).")
    if min(n_with, n_without) < MIN_PER_SIDE:
        raise ValueError(f"Too few examples to hold any out: give at least {MIN_PER_SIDE} examples on each side "
                         f"(you gave {n_with} with and {n_without} without; {ADVISED_PER_SIDE} or more a side are better).")


def _as_array(latents) -> np.ndarray:
    if isinstance(latents, torch.Tensor):
        return latents.detach().cpu().numpy().astype(np.float64)
    if isinstance(latents, np.ndarray):
        return latents.astype(np.float64)
    items = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in latents]
    return np.stack(items).astype(np.float64) if items else np.empty((0,))


def teach_from_latents(
    with_latents,
    without_latents,
    name: str,
    *,
    space: str = "latent",
    per_layer: bool = False,
    groups_with: Sequence | None = None,
    groups_without: Sequence | None = None,
    layers: list[int] | None = None,
    source: str = "",
    folds: int = 5,
    seed: int = 0,
    population=None,
) -> Taught:
    """Fit a direction from latents of the two sides (each (N, *shape), or a list of latents).

    ``per_layer``: the latents are (N, layers, *layer shape) (StyleGAN's W+); they are averaged over their layers
    and the direction is one layer's vector applied to ``layers`` (None: all), as the built-in ones are.
    ``groups_*``: who each example shows (one id each), so no person is on both sides of a held-out fold.
    ``population``: latents whose spread along the direction defines one "std" of an edit (default: the examples').
    """
    t0 = time.perf_counter()
    name = (name or "").strip()
    if not name:
        raise ValueError("Give the direction a name (e.g. 'smile').")
    a, b = _as_array(with_latents), _as_array(without_latents)
    check_sides(len(a), len(b))
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"The two sides' latents have different shapes ({a.shape[1:]} and {b.shape[1:]}); "
                         "take both from the same model and space.")
    if per_layer:
        if a.ndim < 3:
            raise ValueError("Per-layer latents need a layer axis: (examples, layers, ...).")
        a, b = a.mean(1), b.mean(1)
    x = np.concatenate([a, b])
    labels = ["with"] * len(a) + ["without"] * len(b)
    groups = None
    if groups_with is not None or groups_without is not None:
        gw = list(groups_with) if groups_with is not None else [f"with-{i}" for i in range(len(a))]
        go = list(groups_without) if groups_without is not None else [f"without-{i}" for i in range(len(b))]
        if len(gw) != len(a) or len(go) != len(b):
            raise ValueError("Give one person (group) id per example on each side.")
        groups = [str(g) for g in gw + go]
    src = source or f"{len(a)} examples with and {len(b)} without, taught in this session"
    d = fit_binary_direction(x, labels, name, groups=groups, positive="with", space=space, source=src, folds=folds,
                             seed=seed, layers=layers)
    _calibrate(d, x, np.array([lab == "with" for lab in labels]))
    if population is not None:
        pop = _as_array(population)
        pop = pop.mean(1) if per_layer and pop.ndim == a.ndim + 1 else pop
        d.std = float((pop.reshape(len(pop), -1) @ d.vector.reshape(-1)).std())
    acc, chance = d.metrics["heldout_accuracy"], d.metrics["chance"]
    notes = []
    if min(len(a), len(b)) < ADVISED_PER_SIDE:
        notes.append(f"With fewer than {ADVISED_PER_SIDE} examples a side the held-out accuracy is rough: "
                     "one example more or less moves it by several points.")
    return Taught(d, acc, chance, verdict_for(acc, chance), len(a), len(b), time.perf_counter() - t0, notes)


def _calibrate(d: Direction, x: np.ndarray, y: np.ndarray) -> None:
    """Store a 1-D logistic fit along the direction in its metrics, so its classifier can score any latent later
    (log-odds = slope * (latent . vector) + intercept); plain numbers, so it survives save_directions."""
    from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn is slow to import

    p = (x.reshape(len(x), -1) @ d.vector.reshape(-1).astype(np.float64))[:, None]
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(p, y.astype(int))
    d.metrics["logit_slope"] = float(clf.coef_[0, 0])
    d.metrics["logit_intercept"] = float(clf.intercept_[0])


def direction_score(direction: Direction, latents) -> np.ndarray:
    """Where latents (N, *shape) lie along a direction: its classifier's log-odds when it has one (a taught
    direction), else the position along it in its std (built-in and PCA directions). Per-layer latents are
    averaged over the direction's layers (all when it names none)."""
    x = _as_array(latents)
    v = np.asarray(direction.vector, dtype=np.float64)
    if x.ndim == v.ndim + 2:  # (N, layers, *layer shape)
        chosen = direction.layers if direction.layers is not None else list(range(x.shape[1]))
        x = x[:, chosen].mean(1)
    if x.shape[1:] != v.shape:
        raise ValueError(f"Latents of shape {x.shape[1:]} do not fit the direction '{direction.name}' ({v.shape}).")
    p = x.reshape(len(x), -1) @ v.reshape(-1)
    m = direction.metrics
    if "logit_slope" in m:
        return m["logit_slope"] * p + m["logit_intercept"]
    return p / (direction.std or 1.0)


# ----- photos ---------------------------------------------------------------------------------


def encoder_latents(model: LatentModel, space: str | None = None, align_faces: bool = True,
                    steps: int = 50) -> LatentFn:
    """The default way a photo becomes a latent for teaching: aligned (faces), then the model's encoder, or a short
    projection of ``steps`` for a model without one. The Projection tab may pass its own projection instead."""
    from core.image_input import model_input  # deferred: image input pulls in face alignment
    from core.images import from_pil
    from core.projection import to_latent

    space = model.check_space(space or model.edit_space())

    def to(img: Image.Image) -> np.ndarray:
        inp = model_input(img, model.image_size, model.channels, align_faces)
        return to_latent(model, from_pil(inp.image, model.channels), space, steps=steps).detach().cpu().numpy()[0]

    return to


def _latents_of(images: Iterable[ImageLike], to_latent: LatentFn, side: str, notes: list[str],
                progress: Callable[[int, int, str], None] | None, done: int, total: int) -> tuple[np.ndarray, list[int]]:
    """Latents of the photos ``to_latent`` accepted, and their indices."""
    from core.image_input import load_image  # deferred: see encoder_latents

    out, kept, skipped = [], [], 0
    for i, item in enumerate(images):
        label = Path(item).name if isinstance(item, (str, Path)) else f"{side} photo {i + 1}"
        if progress:
            progress(done + i, total, label)
        try:
            img = item if isinstance(item, Image.Image) else load_image(item)
            z = to_latent(img)
        except ValueError:  # unreadable image or no face: skipped and counted
            skipped += 1
            continue
        out.append(z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z))
        kept.append(i)
    if skipped:
        notes.append(f"{skipped} '{side}' photo{'s' if skipped > 1 else ''} skipped (unreadable, or no face found).")
    return (np.stack(out) if out else np.empty((0,))), kept


def teach_from_images(
    with_images: Sequence[ImageLike],
    without_images: Sequence[ImageLike],
    name: str,
    to_latent: LatentFn,
    *,
    space: str = "latent",
    per_layer: bool = False,
    groups_with: Sequence | None = None,
    groups_without: Sequence | None = None,
    layers: list[int] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    folds: int = 5,
) -> Taught:
    """Fit a direction from photos of the two sides (paths or PIL images); ``to_latent(image) -> latent`` puts one
    photo into the space (:func:`encoder_latents`, or the tab's projection). Photos it refuses with a ValueError
    (no face) are skipped and noted. The sets are checked before any photo is read, and again after skipping."""
    t0 = time.perf_counter()
    with_images, without_images = list(with_images or []), list(without_images or [])
    check_sides(len(with_images), len(without_images))
    if groups_with is not None and len(groups_with) != len(with_images) or (
            groups_without is not None and len(groups_without) != len(without_images)):
        raise ValueError("Give one person (group) id per photo on each side.")
    notes: list[str] = []
    total = len(with_images) + len(without_images)
    kept_groups = []
    sides = []
    for side, imgs, groups, done in (("with", with_images, groups_with, 0),
                                     ("without", without_images, groups_without, len(with_images))):
        latents, keep = _latents_of(imgs, to_latent, side, notes, progress, done, total)
        sides.append(latents)
        kept_groups.append(None if groups is None else [groups[i] for i in keep])
    if progress:
        progress(total, total, "fitting")
    n_with, n_without = len(sides[0]), len(sides[1])
    if n_with < len(with_images) or n_without < len(without_images):
        check_sides(n_with, n_without)
    taught = teach_from_latents(sides[0], sides[1], name, space=space, per_layer=per_layer,
                                groups_with=kept_groups[0], groups_without=kept_groups[1], layers=layers,
                                source=f"{n_with} photos with and {n_without} without, taught in this session",
                                folds=folds)
    taught.notes = notes + taught.notes
    taught.seconds = time.perf_counter() - t0
    return taught


# ----- the session's own directions -------------------------------------------------------------


class SessionDirections:
    """Directions one session taught, per model, in memory only (nothing on disk: nothing outlives the session).

    Thread-safe. A taught direction named like a built-in (or the operator's) direction is stored as
    "NAME (yours)" and listed beside it, never in its place; teaching a name again replaces the session's own.
    """

    def __init__(self) -> None:
        self._by_model: dict[str, dict[str, Taught]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def add(self, model_name: str, taught: Taught, builtin_names: Iterable[str] = ()) -> Direction:
        """Keep ``taught`` for ``model_name``; returns its direction under the name it is listed by."""
        name = taught.direction.name
        if name in set(builtin_names) and not name.endswith(YOURS):
            name = f"{name} {YOURS}"
        kept = dataclasses.replace(taught, direction=dataclasses.replace(taught.direction, name=name))
        with self._lock:
            if self.closed:
                raise ValueError("This session has ended; its taught directions are gone.")
            self._by_model.setdefault(model_name, {})[name] = kept
        return kept.direction

    def taught(self, model_name: str) -> list[Taught]:
        with self._lock:
            return list(self._by_model.get(model_name, {}).values())

    def directions(self, model_name: str) -> list[Direction]:
        return [t.direction for t in self.taught(model_name)]

    def merged(self, model_name: str, builtin: Sequence[Direction]) -> list[Direction]:
        """The built-in directions (unchanged, first), then this session's (renamed "NAME (yours)" on a clash
        with one added since it was taught)."""
        names = {d.name for d in builtin}
        own = [d if d.name not in names else dataclasses.replace(d, name=f"{d.name} {YOURS}")
               for d in self.directions(model_name)]
        return list(builtin) + own

    def remove(self, model_name: str, name: str) -> None:
        with self._lock:
            if self._by_model.get(model_name, {}).pop(name, None) is None:
                raise ValueError(f"No direction '{name}' was taught in this session for {model_name}.")

    def close(self) -> None:
        """Forget everything (call when the session ends)."""
        with self._lock:
            self._by_model.clear()
            self.closed = True


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """A 95 % Wilson interval of an accuracy measured on ``n`` held-out examples (for a caption's "±")."""
    if n <= 0:
        return 0.0, 1.0
    z = 1.96
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
