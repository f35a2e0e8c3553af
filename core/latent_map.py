"""2-D / 3-D maps of latent spaces, and nearest neighbours in them.

"Similar things lie close": encode a labelled dataset, reduce the latents with
PCA, UMAP or t-SNE, colour by label. PCA is exact and instant; UMAP and t-SNE
keep local neighbourhoods but take seconds to minutes, so results are cached
per (model, dataset, method, dims) in memory and on disk (keyed by a hash of
the latents, so changed data is never served a stale map).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METHODS = ("pca", "umap", "tsne")
MAP_DIMS = 1024  # latents longer than this are block-averaged to this many numbers before mapping


def summarise(latents: np.ndarray) -> np.ndarray:
    """(N, ...) latents as (N, <= MAP_DIMS): flattened and averaged over contiguous blocks when longer.

    A large latent (a VAE's 4 x 32 x 32, a diffusion model's 3 x 256 x 256 noise) is flattened row by row,
    so a block is a run of neighbouring positions in one channel: the summary is a low-pass copy of the latent,
    and PCA / UMAP / t-SNE and neighbours work on N x 1024 numbers, never on a covariance of the full latent.
    """
    x = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
    d = x.shape[1]
    if d <= MAP_DIMS:
        return x
    block = -(-d // MAP_DIMS)
    pad = block * MAP_DIMS - d
    if pad:
        x = np.concatenate([x, np.repeat(x[:, -1:], pad, axis=1)], axis=1)
    return x.reshape(len(x), MAP_DIMS, block).mean(axis=2)


@dataclass
class LatentMap:
    coords: np.ndarray  # (N, dims)
    method: str
    dims: int
    seconds: float
    info: dict = field(default_factory=dict)
    reducer: object | None = None  # fitted PCA / UMAP (None for t-SNE), for mapping new points
    cached: bool = False

    def locate(self, latents: np.ndarray, train_latents: np.ndarray, k: int = 5) -> np.ndarray:
        """Map coordinates for new latents (an upload's, say).

        PCA and a freshly fitted UMAP transform them; t-SNE cannot embed new
        points (nor can a UMAP map read back from disk), so they are placed at
        the distance-weighted mean of their k nearest data points.
        """
        latents = summarise(latents)
        if self.reducer is not None:
            return np.asarray(self.reducer.transform(latents))
        return _idw(self.coords, summarise(train_latents), latents, k)

    def latent_at(self, point: np.ndarray, train_latents: np.ndarray, k: int = 5) -> tuple[np.ndarray, str]:
        """A latent for an arbitrary map coordinate, and how it was obtained.

        PCA inverts exactly (within the kept components); UMAP and t-SNE have
        no faithful inverse, so the latent is the distance-weighted mean of the
        k data points nearest to the coordinate on the map. So is PCA's for a
        summarised (block-averaged) large latent, whose inverse is only the summary.
        """
        point = np.asarray(point, dtype=np.float64).reshape(1, -1)
        flat = train_latents.reshape(len(train_latents), -1)
        if self.method == "pca" and self.reducer is not None and not self.info.get("summarised"):
            lat = self.reducer.inverse_transform(point)
            return lat.reshape(1, *train_latents.shape[1:]).astype(np.float32), "inverse PCA"
        lat = _idw(flat, self.coords, point, k)
        return lat.reshape(1, *train_latents.shape[1:]).astype(np.float32), f"weighted mean of the {k} nearest points"


def _idw(values: np.ndarray, keys: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Inverse-distance-weighted mean of ``values`` at the k ``keys`` nearest to each query."""
    from sklearn.neighbors import NearestNeighbors  # deferred: scikit-learn takes a second to import, and only a map needs it

    k = min(k, len(keys))
    nn = NearestNeighbors(n_neighbors=k).fit(keys)
    dist, idx = nn.kneighbors(queries)
    w = 1.0 / np.maximum(dist, 1e-9)
    w /= w.sum(1, keepdims=True)
    return np.einsum("qk,qkd->qd", w, values[idx])


def reduce(latents: np.ndarray, method: str = "pca", dims: int = 2, seed: int = 0) -> LatentMap:
    """Embed (N, ...) latents into ``dims`` (2 or 3) dimensions."""
    if method not in METHODS:
        raise ValueError(f"Unknown map method '{method}'; use one of {', '.join(METHODS)}.")
    if dims not in (2, 3):
        raise ValueError("A latent map has 2 or 3 dimensions.")
    x = summarise(latents)
    if len(x) < dims + 2:
        raise ValueError(f"A map needs at least {dims + 2} points; got {len(x)}.")
    t0 = time.perf_counter()
    info: dict = {"summarised": f"block-averaged to {x.shape[1]} numbers"} if np.asarray(latents[0]).size > MAP_DIMS else {}
    reducer = None
    if method == "pca":
        from sklearn.decomposition import PCA  # deferred: scikit-learn takes a second to import, and only a map needs it

        reducer = PCA(n_components=min(dims, x.shape[1]), random_state=seed).fit(x)
        coords = reducer.transform(x)
        if coords.shape[1] < dims:  # e.g. a 2-D latent shown in 3-D
            coords = np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))
        info["explained_variance"] = [round(float(v), 4) for v in reducer.explained_variance_ratio_]
    elif method == "umap":
        import umap  # lazy: numba compiles on first import

        reducer = umap.UMAP(n_components=dims, n_neighbors=min(15, len(x) - 1), random_state=seed)
        coords = reducer.fit_transform(x)
    else:
        from sklearn.manifold import TSNE  # deferred: scikit-learn takes a second to import, and only a map needs it

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        coords = TSNE(n_components=dims, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return LatentMap(np.asarray(coords, dtype=np.float32), method, dims, time.perf_counter() - t0, info, reducer)


class MapCache:
    """(model, dataset, method, dims) -> LatentMap, in memory (the ``max_items`` most recently used: a fitted
    reducer can hold a copy of the data) and (coordinates only) on disk."""

    def __init__(self, folder: str | Path | None = None, max_items: int = 8,
                 fit: Callable[[np.ndarray, str, int, int], LatentMap] | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.max_items = max(1, int(max_items))
        self.fit = fit or reduce  # where a map not cached is computed (an Executor's ``latent_map``: maybe remote)
        self._mem: dict[tuple, LatentMap] = {}
        self._lock = threading.Lock()

    def get(self, model: str, dataset: str, latents: np.ndarray, method: str = "pca", dims: int = 2, seed: int = 0) -> LatentMap:
        digest = hashlib.sha256(np.ascontiguousarray(latents, dtype=np.float32).tobytes()).hexdigest()[:16]
        key = (model, dataset, method, dims, seed, digest)
        with self._lock:
            if key in self._mem:
                m = self._mem[key] = self._mem.pop(key)  # most recently used last
                return LatentMap(m.coords, m.method, m.dims, m.seconds, m.info, m.reducer, cached=True)
        disk = self._disk_path(key)
        slow = method != "pca"  # PCA refits in milliseconds; only slow maps go to disk
        if disk is not None and slow and disk.is_file():
            with np.load(disk, allow_pickle=False) as z:
                m = LatentMap(z["coords"], method, dims, float(z["seconds"]), {}, None, cached=True)
        else:
            m = self.fit(latents, method, dims, seed)
            if disk is not None and slow:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tmp = disk.with_suffix(".tmp.npz")
                np.savez(tmp, coords=m.coords, seconds=m.seconds)
                tmp.replace(disk)
        with self._lock:
            self._mem[key] = m
            while len(self._mem) > self.max_items:
                self._mem.pop(next(iter(self._mem)))
        return m

    def _disk_path(self, key: tuple) -> Path | None:
        if self.folder is None:
            return None
        name = "_".join(str(k).replace("/", "-") for k in key)
        return self.folder / f"{name}.npz"


class Neighbours:
    """Nearest neighbours of latents among a dataset's latents (scikit-learn)."""

    def __init__(self, latents: np.ndarray, metric: str = "euclidean") -> None:
        from sklearn.neighbors import NearestNeighbors  # deferred: scikit-learn takes a second to import, and only a map needs it

        self.latents = summarise(latents)
        self._nn = NearestNeighbors(metric=metric).fit(self.latents)

    def query(self, latents: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), each (Q, k), nearest first."""
        q = summarise(latents)
        dist, idx = self._nn.kneighbors(q, n_neighbors=min(k, len(self.latents)))
        return dist, idx
