import numpy as np
import pytest

from core.latent_map import MapCache, Neighbours, reduce


def _blobs(n_per=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (3, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


def _separation(coords, labels):
    """Nearest-centroid accuracy on the map: high when clusters stay apart."""
    cents = np.stack([coords[labels == k].mean(0) for k in np.unique(labels)])
    pred = np.argmin(((coords[:, None] - cents[None]) ** 2).sum(-1), 1)
    return (pred == labels).mean()


@pytest.fixture(scope="module")
def tsne_map():
    x, y = _blobs()
    return x, y, reduce(x, "tsne", 2)


@pytest.mark.parametrize("method,dims", [("pca", 2), ("pca", 3), ("tsne", 2)])
def test_shapes_and_clusters(method, dims, tsne_map):
    x, y = _blobs()
    m = tsne_map[2] if method == "tsne" else reduce(x, method, dims)
    assert m.coords.shape == (len(x), dims) and m.coords.dtype == np.float32
    assert np.isfinite(m.coords).all()
    assert _separation(m.coords, y) > 0.95


@pytest.mark.slow
def test_umap_clusters():
    x, y = _blobs()
    m = reduce(x, "umap", 2)
    assert m.coords.shape == (len(x), 2)
    assert _separation(m.coords, y) > 0.95
    assert m.locate(x[:3], x).shape == (3, 2)


def test_pca_inverse_and_locate():
    x, _ = _blobs(dim=2)  # 2-D data: PCA with 2 components is exact
    m = reduce(x, "pca", 2)
    lat, how = m.latent_at(m.coords[5], x)
    assert how == "inverse PCA"
    assert np.allclose(lat[0], x[5], atol=1e-4)
    assert np.allclose(m.locate(x[:4], x), m.coords[:4], atol=1e-4)


def test_tsne_point_lookup_falls_back_to_neighbours(tsne_map):
    x, _, m = tsne_map
    lat, how = m.latent_at(m.coords[7], x, k=5)
    assert "nearest" in how
    assert np.allclose(lat[0], x[7], atol=1e-3)  # exactly on a point: that point dominates
    placed = m.locate(x[7:8] + 1e-6, x)
    assert np.linalg.norm(placed - m.coords[7]) < 1e-2


def test_cache_second_request_is_instant_and_keyed_by_data(tmp_path):
    x, _ = _blobs(n_per=10)
    cache = MapCache(tmp_path)
    first = cache.get("m", "d", x, "tsne", 2)
    assert not first.cached
    second = cache.get("m", "d", x, "tsne", 2)
    assert second.cached and np.array_equal(first.coords, second.coords)
    # a new cache object (app restart) reads t-SNE from disk
    third = MapCache(tmp_path).get("m", "d", x, "tsne", 2)
    assert third.cached and np.array_equal(first.coords, third.coords)
    # different data with the same names is not served the stale map
    changed = cache.get("m", "d", x * 2, "tsne", 2)
    assert not changed.cached


def test_bad_arguments():
    x, _ = _blobs()
    with pytest.raises(ValueError, match="Unknown map method"):
        reduce(x, "mds")
    with pytest.raises(ValueError, match="2 or 3"):
        reduce(x, "pca", 4)
    with pytest.raises(ValueError, match="at least"):
        reduce(x[:3], "pca", 2)


def test_neighbours():
    x, y = _blobs()
    nn = Neighbours(x)
    dist, idx = nn.query(x[:2], k=5)
    assert idx.shape == (2, 5)
    assert idx[0, 0] == 0 and dist[0, 0] == pytest.approx(0, abs=1e-3)
    assert (y[idx[0]] == y[0]).all()
    assert (np.diff(dist, axis=1) >= 0).all()
