"""Finding meaningful directions in a latent space (the type itself is ``core.direction``).

Two ways to find one:

* unsupervised, GANSpace-style (Härkönen et al. 2020): principal components
  of many sampled latents (StyleGAN's W). Each component comes with its
  explained-variance ratio and the spread of the latents along it (``std``),
  so a slider can move in standard deviations;
* supervised, InterFaceGAN-style (Shen et al. 2020): for a yes/no attribute the
  normal of a linear classifier's separating hyperplane (logistic regression);
  for a number such as age the weight vector of a ridge regression, with the
  scale in the number's units per unit step.

Accuracy is only ever reported on held-out data. With ``groups`` (e.g. person
ids) the folds keep each group on one side, so two photos of one person can
never make a direction look better than it is. The direction itself is then
fitted on all the data.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from core.direction import Direction, load_directions, save_directions
from core.paths import cache_dir as user_cache

# ----- helpers ----------------------------------------------------------------------------


def _as_matrix(latents) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, ...) latents (numpy or torch) -> float64 (N, D) and the shape of one latent."""
    x = latents.detach().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
    if x.ndim < 2:
        raise ValueError(f"Expected a batch of latents (N, ...), got an array of shape {x.shape}.")
    x = x.astype(np.float64).reshape(len(x), -1)
    if not np.all(np.isfinite(x)):
        raise ValueError("The latents contain NaN or infinite values.")
    shape = tuple(latents.shape[1:])
    return x, shape


def _unit(v: np.ndarray) -> tuple[np.ndarray, float]:
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("The fitted direction is zero: the labels carry no linear signal in these latents.")
    return v / norm, norm


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension z-scores (constant dimensions are left unscaled)."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (x - mu) / sd, mu, sd




def heldout_folds(
    n: int, groups: Sequence | None = None, labels: Sequence | None = None, folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs; every sample is tested once, and a group never straddles train and test.

    ``labels`` (classes) keeps the class balance of the folds similar. The
    number of folds drops to what the data allows (at least 2 groups, and for
    classes at least 2 groups of each class); fewer raises ValueError.
    """
    # deferred: scikit-learn takes a second to import, and only fitting needs it
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    g = np.arange(n) if groups is None else np.asarray(groups)
    if len(g) != n:
        raise ValueError(f"Got {len(g)} group ids for {n} latents; give one per latent.")
    n_groups = len(np.unique(g))
    if labels is not None:
        y = np.asarray(labels)
        # Groups per class bound the folds: each test fold needs every class.
        per_class = min(len(np.unique(g[y == c])) for c in np.unique(y))
        k = min(folds, per_class)
        if k < 2:
            raise ValueError(
                "Too little data to hold any out: each class needs at least 2 different "
                f"{'groups' if groups is not None else 'samples'} (the rarest has {per_class})."
            )
        if groups is None:
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y, g))
    k = min(folds, n_groups)
    if k < 2:
        raise ValueError(f"Too little data to hold any out: need at least 2 {'groups' if groups is not None else 'samples'}.")
    if groups is None:
        return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)))
    return list(GroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), groups=g))


# ----- unsupervised ------------------------------------------------------------------------


def pca_directions(latents, n: int = 10, space: str = "w", source: str = "", layers: list[int] | None = None) -> list[Direction]:
    """GANSpace: the top ``n`` principal components of sampled latents, as unit vectors.

    Signs are fixed (largest coordinate positive) so a cached result is stable.
    ``std`` is the spread along each component, so ``amount = k * std`` moves
    k standard deviations.
    """
    from sklearn.decomposition import PCA  # deferred: scikit-learn takes a second to import, and only fitting needs it

    x, shape = _as_matrix(latents)
    limit = min(x.shape)
    if not 1 <= n <= limit:
        raise ValueError(f"Can compute 1 to {limit} principal components from {x.shape[0]} latents of size {x.shape[1]}, not {n}.")
    pca = PCA(n_components=n, svd_solver="full" if max(x.shape) <= 4096 else "randomized", random_state=0).fit(x)
    out = []
    for i, (comp, var, ratio) in enumerate(zip(pca.components_, pca.explained_variance_, pca.explained_variance_ratio_, strict=True)):
        comp = comp * np.sign(comp[np.argmax(np.abs(comp))])
        out.append(
            Direction(
                name=f"PC{i + 1}",
                vector=comp.reshape(shape),
                space=space,
                method="pca",
                source=source or f"{len(x)} sampled latents",
                metrics={"explained_variance_ratio": float(ratio), "n_samples": len(x), "component": i + 1},
                units="standard deviations = std",
                std=float(np.sqrt(var)),
                layers=layers,
            )
        )
    return out


_cache_lock = threading.Lock()


def cached_pca_directions(
    model_name: str,
    sample_fn: Callable[[int], object],
    n: int = 10,
    n_samples: int = 10_000,
    cache_dir: str | Path | None = None,
    space: str = "w",
    key: str = "",
    layers: list[int] | None = None,
) -> list[Direction]:
    """:func:`pca_directions` of ``sample_fn(n_samples)``, computed once per model and kept on disk.

    ``key`` should change whenever the model's weights do (e.g. a file hash).
    """
    if cache_dir is None:
        cache_dir = user_cache("directions")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model_name}_{key}_{space}_pca{n}_{n_samples}")
    path = Path(cache_dir) / f"{stem}.safetensors"
    with _cache_lock:
        if path.is_file():
            try:
                return load_directions(path)
            except ValueError:
                pass  # unreadable (e.g. an interrupted write by an older version): compute again
        dirs = pca_directions(sample_fn(n_samples), n=n, space=space, source=f"{n_samples} latents sampled from {model_name}", layers=layers)
        save_directions(path, dirs)
        return dirs


# ----- supervised --------------------------------------------------------------------------


def fit_binary_direction(
    latents,
    labels: Sequence,
    name: str,
    groups: Sequence | None = None,
    positive=None,
    space: str = "latent",
    source: str = "",
    folds: int = 5,
    C: float = 1.0,
    seed: int = 0,
    layers: list[int] | None = None,
) -> Direction:
    """InterFaceGAN: the unit normal of a logistic-regression hyperplane separating two classes.

    Latents are standardised per dimension for the fit (so the penalty treats
    dimensions alike) and the normal is mapped back to the raw latent space.
    Positive amounts move towards ``positive`` (default: the larger label).
    Metrics: pooled held-out accuracy over group-respecting folds, per-fold
    accuracies, and chance (the majority class share).
    """
    # deferred: scikit-learn takes a second to import, and only fitting needs it
    from sklearn.linear_model import LogisticRegression

    x, shape = _as_matrix(latents)
    y_raw = np.asarray(labels)
    if len(y_raw) != len(x):
        raise ValueError(f"Got {len(y_raw)} labels for {len(x)} latents; give one label per latent.")
    classes = np.unique(y_raw)
    if len(classes) != 2:
        found = ", ".join(map(str, classes[:5])) or "none"
        raise ValueError(f"A yes/no direction needs exactly two classes of label; got {len(classes)} ({found}).")
    positive = classes[1] if positive is None else positive
    if positive not in classes:
        raise ValueError(f"The positive class '{positive}' is not among the labels ({', '.join(map(str, classes))}).")
    y = (y_raw == positive).astype(int)

    def fit(idx: np.ndarray) -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
        z, mu, sd = _standardise(x[idx])
        return LogisticRegression(C=C, max_iter=5000).fit(z, y[idx]), mu, sd

    pred = np.empty(len(y), dtype=int)
    fold_acc = []
    for train, test in heldout_folds(len(x), groups, y, folds, seed):
        clf, mu, sd = fit(train)
        pred[test] = clf.predict((x[test] - mu) / sd)
        fold_acc.append(float(np.mean(pred[test] == y[test])))
    clf, mu, sd = fit(np.arange(len(x)))
    vec, norm = _unit(clf.coef_[0] / sd)
    proj = x @ vec
    metrics = {
        "heldout_accuracy": float(np.mean(pred == y)),
        "heldout_accuracy_folds": fold_acc,
        "chance": float(max(y.mean(), 1 - y.mean())),
        "folds": len(fold_acc),
        "n_samples": len(x),
        "n_groups": len(np.unique(groups)) if groups is not None else len(x),
        "positive_class": str(positive),
        "negative_class": str(classes[0] if classes[1] == positive else classes[1]),
        "C": C,
    }
    return Direction(
        name=name, vector=vec.reshape(shape), space=space, method="logistic", source=source, metrics=metrics,
        units="log-odds per unit", scale=norm, std=float(proj.std()), layers=layers,
    )


def fit_numeric_direction(
    latents,
    values: Sequence[float],
    name: str,
    groups: Sequence | None = None,
    unit: str = "",
    space: str = "latent",
    source: str = "",
    folds: int = 5,
    alphas: Sequence[float] = tuple(np.logspace(-2, 5, 15)),
    seed: int = 0,
    layers: list[int] | None = None,
) -> Direction:
    """A number (e.g. age) as a direction: ridge regression on standardised latents.

    ``scale`` = how much the number grows per unit step along the (unit)
    vector. The ridge penalty is chosen by efficient leave-one-out inside each
    training fold; R² and MAE are pooled over the held-out folds, next to the
    MAE of always guessing the training mean (``baseline_mae``).
    """
    from sklearn.linear_model import Ridge, RidgeCV  # deferred: scikit-learn takes a second to import, and only fitting needs it

    x, shape = _as_matrix(latents)
    v = np.asarray(values, dtype=np.float64).ravel()
    g_all = None if groups is None else np.asarray(groups)
    if len(v) != len(x):
        raise ValueError(f"Got {len(v)} values for {len(x)} latents; give one value per latent.")
    if not np.all(np.isfinite(v)):
        raise ValueError("The values contain NaN or infinite numbers.")
    if np.ptp(v) == 0:
        raise ValueError("All values are the same, so there is nothing to learn a direction from.")
    if len(x) < 4:
        raise ValueError(f"Need at least 4 labelled latents for a numeric direction, got {len(x)}.")

    def fit(idx: np.ndarray) -> tuple[Ridge | RidgeCV, np.ndarray, np.ndarray]:
        z, mu, sd = _standardise(x[idx])
        if g_all is None or len(np.unique(g_all[idx])) < 3:
            return RidgeCV(alphas=list(alphas)).fit(z, v[idx]), mu, sd
        # With groups, leave-one-out would pick the penalty on photos whose twin (same person) is in
        # the fit; choose it on inner folds that keep each person on one side instead.
        inner = heldout_folds(len(idx), g_all[idx], None, folds, seed)
        errors = [sum(np.sum((Ridge(alpha=a).fit(z[tr], v[idx][tr]).predict(z[te]) - v[idx][te]) ** 2) for tr, te in inner)
                  for a in alphas]
        best = float(alphas[int(np.argmin(errors))])
        reg = Ridge(alpha=best).fit(z, v[idx])
        reg.alpha_ = best
        return reg, mu, sd

    pred = np.empty(len(v))
    base = np.empty(len(v))
    splits = heldout_folds(len(x), groups, None, folds, seed)
    for train, test in splits:
        reg, mu, sd = fit(train)
        pred[test] = reg.predict((x[test] - mu) / sd)
        base[test] = v[train].mean()
    reg, mu, sd = fit(np.arange(len(x)))
    vec, norm = _unit(reg.coef_ / sd)
    ss_res, ss_tot = np.sum((v - pred) ** 2), np.sum((v - v.mean()) ** 2)
    metrics = {
        "heldout_r2": float(1 - ss_res / ss_tot),
        "heldout_mae": float(np.mean(np.abs(v - pred))),
        "baseline_mae": float(np.mean(np.abs(v - base))),
        "folds": len(splits),
        "n_samples": len(x),
        "n_groups": len(np.unique(groups)) if groups is not None else len(x),
        "alpha": float(reg.alpha_),
    }
    return Direction(
        name=name, vector=vec.reshape(shape), space=space, method="ridge", source=source, metrics=metrics,
        units=f"{unit or 'units'} per unit", scale=norm, std=float((x @ vec).std()), layers=layers,
    )
