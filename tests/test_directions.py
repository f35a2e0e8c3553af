"""Latent directions: planted directions are recovered, scores are held-out only, files round-trip."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from core.direction import Direction, apply_direction, load_directions, save_directions
from core.direction_fit import cached_pca_directions, fit_binary_direction, fit_numeric_direction, heldout_folds, pca_directions
from tests.conftest import shared_path


def _unit(rng, d):
    u = rng.normal(size=d)
    return u / np.linalg.norm(u)


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ----- supervised ----------------------------------------------------------------------


def test_binary_direction_recovers_planted_normal():
    rng = np.random.default_rng(0)
    d, n = 32, 600
    u = _unit(rng, d)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d)  # unequal scales: standardisation must map back
    y = np.where(x @ u + 0.2 * rng.normal(size=n) > 0, "yes", "no")
    groups = np.repeat(np.arange(n // 3), 3)
    dirn = fit_binary_direction(torch.tensor(x, dtype=torch.float32), y, "planted", groups=groups, space="w")
    assert dirn.vector.shape == (d,) and dirn.vector.dtype == np.float32
    assert abs(np.linalg.norm(dirn.vector) - 1) < 1e-5
    assert _cos(dirn.vector, u) > 0.9
    m = dirn.metrics
    assert m["heldout_accuracy"] > 0.85 and m["positive_class"] == "yes" and m["n_groups"] == n // 3
    assert len(m["heldout_accuracy_folds"]) == m["folds"] == 5
    # Positive amounts move towards the positive class.
    assert np.mean((x @ dirn.vector)[y == "yes"]) > np.mean((x @ dirn.vector)[y == "no"])
    flipped = fit_binary_direction(x, y, "planted", groups=groups, positive="no")
    assert _cos(flipped.vector, dirn.vector) < -0.99


def test_accuracy_is_held_out_by_group():
    """Labels belong to people, not to anything a latent shares with other people: only memorising
    a person helps. Grouped folds must show chance; ungrouped folds leak and look excellent."""
    rng = np.random.default_rng(1)
    people, shots, d = 60, 4, 128
    label = rng.integers(0, 2, people)
    centre = rng.normal(size=(people, d)) * 3
    x = np.repeat(centre, shots, 0) + 0.1 * rng.normal(size=(people * shots, d))
    y, groups = np.repeat(label, shots), np.repeat(np.arange(people), shots)
    leaky = fit_binary_direction(x, y, "leaky").metrics["heldout_accuracy"]
    honest = fit_binary_direction(x, y, "honest", groups=groups).metrics["heldout_accuracy"]
    assert leaky > 0.9
    assert honest < 0.75
    for train, test in heldout_folds(len(x), groups, y):
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test]) == {0, 1}


def test_numeric_direction_recovers_scale_and_is_held_out():
    rng = np.random.default_rng(2)
    d, n = 24, 500
    u = _unit(rng, d)
    x = rng.normal(size=(n, d))
    age = 30 + 5.0 * (x @ u) + 1.0 * rng.normal(size=n)
    dirn = fit_numeric_direction(x, age, "age", groups=np.arange(n) // 2, unit="years", space="w")
    assert _cos(dirn.vector, u) > 0.95
    assert 4.0 < dirn.scale < 5.5  # years per unit step
    assert dirn.units == "years per unit" and dirn.method == "ridge"
    m = dirn.metrics
    assert m["heldout_r2"] > 0.8 and m["heldout_mae"] < 1.5 < m["baseline_mae"]
    # Pure noise gives no held-out skill (R² near or below zero), whatever the fit on the training folds.
    noise = fit_numeric_direction(x, rng.normal(size=n), "noise")
    assert noise.metrics["heldout_r2"] < 0.1


@pytest.mark.parametrize(
    ("labels", "groups", "message"),
    [
        (["a"] * 10, None, "two classes"),
        (["a", "b", "c"] * 3 + ["a"], None, "two classes"),
        (["a"] * 9 + ["b"], None, "hold any out"),
        (["a"] * 5 + ["b"] * 5, [0] * 5 + [1, 1, 2, 2, 3], "hold any out"),
        (["a", "b"] * 4, None, "one label per latent"),
    ],
)
def test_binary_direction_rejects_unusable_data(labels, groups, message):
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=message):
        fit_binary_direction(x, labels, "x", groups=groups)


def test_numeric_direction_rejects_unusable_data():
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match="same"):
        fit_numeric_direction(x, [3.0] * 10, "x")
    with pytest.raises(ValueError, match="NaN"):
        fit_numeric_direction(x, [1.0] * 9 + [np.nan], "x")
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_numeric_direction(x, np.arange(10.0), "x", groups=[7] * 10)
    with pytest.raises(ValueError, match="batch of latents"):
        fit_numeric_direction(np.arange(10.0), np.arange(10.0), "x")


# ----- unsupervised -----------------------------------------------------------------------


def test_pca_finds_dominant_axis_with_std_and_ratio():
    rng = np.random.default_rng(3)
    d, n = 16, 4000
    u, v = _unit(rng, d), _unit(rng, d)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    x = 10 * rng.normal(size=(n, 1)) * u + 4 * rng.normal(size=(n, 1)) * v + rng.normal(size=(n, d))
    dirs = pca_directions(torch.tensor(x), n=3, space="w")
    assert [d_.name for d_ in dirs] == ["PC1", "PC2", "PC3"]
    assert abs(_cos(dirs[0].vector, u)) > 0.99 and abs(_cos(dirs[1].vector, v)) > 0.99
    assert dirs[0].std == pytest.approx(np.sqrt(101), rel=0.05)
    ratios = [d_.metrics["explained_variance_ratio"] for d_ in dirs]
    assert ratios[0] == pytest.approx(101 / (101 + 17 + 14), rel=0.05) and ratios == sorted(ratios, reverse=True)
    assert all(abs(np.linalg.norm(d_.vector) - 1) < 1e-5 for d_ in dirs)
    with pytest.raises(ValueError, match="principal components"):
        pca_directions(x[:5], n=6)


def test_pca_keeps_latent_shape():
    x = torch.randn(300, 4, 3, 3)
    dirs = pca_directions(x, n=2, space="latent")
    assert dirs[0].vector.shape == (4, 3, 3)


def test_cached_pca_computes_once(tmp_path):
    calls = []

    def sample(n):
        calls.append(n)
        return torch.randn(n, 8, generator=torch.Generator().manual_seed(0))

    a = cached_pca_directions("toy/model", sample, n=4, n_samples=500, cache_dir=tmp_path, key="v1")
    b = cached_pca_directions("toy/model", sample, n=4, n_samples=500, cache_dir=tmp_path, key="v1")
    assert calls == [500]
    assert all(np.array_equal(x.vector, y.vector) and x.std == y.std for x, y in zip(a, b, strict=True))
    cached_pca_directions("toy/model", sample, n=4, n_samples=500, cache_dir=tmp_path, key="v2")
    assert calls == [500, 500]  # new weights, new cache entry


# ----- use and files -------------------------------------------------------------------


def test_apply_flat_and_per_layer():
    vec = np.zeros(6, np.float32)
    vec[2] = 1
    dirn = Direction("d", vec, "w", "pca")
    flat = torch.zeros(3, 6)
    out = apply_direction(flat, dirn, 2.5)
    assert torch.equal(out[:, 2], torch.full((3,), 2.5)) and out.abs().sum() == 7.5 and flat.abs().sum() == 0
    per = apply_direction(flat, dirn, torch.tensor([1.0, 0.0, -1.0]))
    assert per[:, 2].tolist() == [1.0, 0.0, -1.0]
    single = apply_direction(torch.zeros(6), dirn, 1.0)
    assert single.shape == (6,) and single[2] == 1
    wplus = torch.zeros(2, 5, 6)
    moved = apply_direction(wplus, dirn, 1.0, layers=[0, 3])
    assert moved[:, [0, 3], 2].eq(1).all() and moved[:, [1, 2, 4]].eq(0).all()
    one = apply_direction(torch.zeros(5, 6), dirn, 2.0, layers=[1])  # a single (L, d) latent
    assert one[1, 2] == 2 and one.abs().sum() == 2
    dirn.layers = [4]
    assert apply_direction(wplus, dirn, 1.0)[:, 4, 2].eq(1).all()
    assert apply_direction(wplus, dirn, 1.0, layers=[1])[:, [0, 2, 3, 4]].eq(0).all()
    with pytest.raises(ValueError, match="does not fit"):
        apply_direction(torch.zeros(2, 7), dirn, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        apply_direction(wplus, dirn, 1.0, layers=[5])
    with pytest.raises(ValueError, match="space"):
        apply_direction(flat, dirn, 1.0, space="z")


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    dirs = [
        Direction("smile", rng.normal(size=8), "w", "logistic", "London smiling vs neutral",
                  {"heldout_accuracy": np.float64(0.91), "folds": 5, "heldout_accuracy_folds": [0.9, 0.92]},
                  "log-odds per unit", 2.0, 0.7, [0, 1, 2]),
        Direction("age", rng.normal(size=(2, 4)), "latent", "ridge", "London ages", {"heldout_r2": 0.4}, "years per unit", 6.5),
    ]
    path = save_directions(tmp_path / "sub" / "dirs.safetensors", dirs)
    back = load_directions(path)
    assert len(back) == 2
    for a, b in zip(dirs, back, strict=True):
        assert np.array_equal(a.vector, b.vector) and b.vector.dtype == np.float32
        assert (a.name, a.space, a.method, a.source, a.units, a.scale, a.std, a.layers, a.created) == (
            b.name, b.space, b.method, b.source, b.units, b.scale, b.std, b.layers, b.created)
        assert b.metrics == pytest.approx(a.metrics) if "folds" not in a.metrics else b.metrics["folds"] == 5
    assert "held-out accuracy 91%" in back[0].describe()
    # A plain safetensors reader sees vectors and a JSON header: nothing executable.
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        assert sorted(f.keys()) == ["direction_0", "direction_1"]
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable"):
        load_directions(tmp_path / "bad.safetensors")


# ----- real faces ----------------------------------------------------------------------


def _london_latents(n_components: int = 40):
    """PCA codes of 32x32 grey London photos (neutral + smiling: two photos per person).

    The lab's photos are taken with a fixed frontal set-up, so a centred crop is
    roughly aligned. JPEG draft mode decodes at 1/8 size, which keeps this fast.
    """
    from PIL import Image

    root = shared_path("data", "faces", "london")
    with open(root / "london_info.csv", newline="") as f:
        info = {r["face_id"]: r for r in csv.DictReader(f)}
    imgs, gender, age, person = [], [], [], []
    for sub in ("neutral", "smiling"):
        for path in sorted((root / sub).glob("*.jpg")):
            pid = path.stem.split("_")[0]
            im = Image.open(path)
            im.draft("L", (im.width // 8, im.height // 8))
            w, h = im.size
            im = im.convert("L").crop((w // 5, h // 6, 4 * w // 5, h // 6 + 3 * w // 5)).resize((32, 32), Image.BILINEAR)
            imgs.append(np.asarray(im, np.float64).ravel() / 255)
            gender.append(info[pid]["face_gender"])
            age.append(float(info[pid]["face_age"]) if info[pid]["face_age"] != "NA" else np.nan)
            person.append(pid)
    from sklearn.decomposition import PCA

    x = np.array(imgs)
    return PCA(n_components, random_state=0).fit_transform(x - x.mean(0)), np.array(gender), np.array(age), np.array(person)


def test_gender_and_age_on_london_faces():
    """A real check: held-out (by person) gender accuracy well above chance on simple PCA codes."""
    x, gender, age, person = _london_latents()
    g = fit_binary_direction(x, gender, "gender", groups=person, positive="male", source="London PCA-40 codes")
    known = np.isfinite(age)  # two people have no recorded age
    a = fit_numeric_direction(x[known], age[known], "age", groups=person[known], unit="years", source="London PCA-40 codes")
    print(f"\nLondon PCA-40: {g.describe()}\n               {a.describe()} (baseline MAE {a.metrics['baseline_mae']:.2f})")
    assert g.metrics["n_groups"] == 102 and g.metrics["n_samples"] == 204
    assert g.metrics["heldout_accuracy"] > g.metrics["chance"] + 0.15
