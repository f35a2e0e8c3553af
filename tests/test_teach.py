"""Teaching a direction from two sets of examples (core.teach), and the session's private store of them."""

from __future__ import annotations

import numpy as np
import pytest

from core.direction import Direction
from core.teach import (
    MIN_PER_SIDE,
    SessionDirections,
    direction_score,
    encoder_latents,
    teach_from_images,
    teach_from_latents,
    verdict_for,
)
from tests.conftest import shared_path


def _two_sides(n=30, dim=16, shift=4.0, seed=0):
    rng = np.random.default_rng(seed)
    axis = np.zeros(dim)
    axis[3] = 1.0
    return rng.normal(size=(n, dim)) + shift / 2 * axis, rng.normal(size=(n, dim)) - shift / 2 * axis, axis


def test_teach_from_latents_finds_the_axis_and_scores_held_out_points():
    a, b, axis = _two_sides()
    t = teach_from_latents(a, b, "smile")
    assert t.accuracy >= 0.85 and t.verdict == "reliable" and t.reliable
    assert float(t.direction.vector @ axis) > 0.8  # the separating axis, up to noise
    assert t.direction.vector @ axis > 0  # positive amounts move towards "with"
    na, nb, _ = _two_sides(seed=1)
    assert np.mean(t.score(na) > 0) > 0.85 and np.mean(t.score(nb) < 0) > 0.85
    assert "held-out accuracy" in t.describe() and "reliable" in t.describe()


def test_random_sides_get_the_weak_verdict():
    rng = np.random.default_rng(2)
    t = teach_from_latents(rng.normal(size=(20, 16)), rng.normal(size=(20, 16)), "noise")
    assert t.verdict == "weak: treat as a toy" and not t.reliable
    assert verdict_for(0.9) == "reliable" and verdict_for(0.84).startswith("weak")


@pytest.mark.parametrize("n_with,n_without,match", [(0, 10, "'with' side has no examples"),
                                                    (10, 0, "'without' side has no examples"),
                                                    (3, 10, "at least 5 examples on each side")])
def test_one_sided_or_small_sets_are_refused_with_how_many_are_needed(n_with, n_without, match):
    a, b, _ = _two_sides()
    with pytest.raises(ValueError, match=match) as e:
        teach_from_latents(a[:n_with], b[:n_without], "smile")
    assert f"at least {MIN_PER_SIDE}" in str(e.value)
    with pytest.raises(ValueError, match=match):
        teach_from_images(["x.png"] * n_with, ["y.png"] * n_without, "smile", to_latent=lambda img: 1 / 0)


def test_per_layer_latents_teach_one_layer_vector_for_the_chosen_layers():
    a, b, axis = _two_sides(dim=8)
    a3, b3 = np.repeat(a[:, None], 4, 1), np.repeat(b[:, None], 4, 1)
    t = teach_from_latents(a3, b3, "x", space="w", per_layer=True, layers=[0, 1])
    assert t.direction.vector.shape == (8,) and t.direction.layers == [0, 1] and t.direction.space == "w"
    assert direction_score(t.direction, a3).mean() > 0 > direction_score(t.direction, b3).mean()


def test_photos_that_fail_are_skipped_and_the_rest_is_checked_again():
    from PIL import Image

    a, b, _ = _two_sides(n=8)
    imgs = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(16)]
    lookup = {i: (a[i] if i < 8 else b[i - 8]) for i in range(16)}

    def to_latent(img):
        i = img.getpixel((0, 0))[0]
        if i in (0, 1, 2, 3):
            raise ValueError("No face found.")
        return lookup[i]

    with pytest.raises(ValueError, match="you gave 4 with and 8 without"):
        teach_from_images(imgs[:8], imgs[8:], "x", to_latent=to_latent)
    t = teach_from_images(imgs[:8], imgs[8:], "x", to_latent=lambda img: lookup[img.getpixel((0, 0))[0]],
                          groups_with=list(range(8)), groups_without=list(range(8)))
    assert (t.n_with, t.n_without) == (8, 8) and t.direction.metrics["n_groups"] == 8


def test_teach_from_london_photos_through_the_small_faces_model():
    """Neutral vs smiling photos of the same 8 people, through the encoder as the tab would call it."""
    from plugins.small_ae import load_model

    src = shared_path("data", "faces", "london")
    ids = [r.split(",")[0] for r in (src / "london_info.csv").read_text().splitlines()[1:9]]
    model = load_model("faces")
    t = teach_from_images([src / "smiling" / f"{i}_08.jpg" for i in ids], [src / "neutral" / f"{i}_03.jpg" for i in ids],
                          "smile", encoder_latents(model), space="latent", groups_with=ids, groups_without=ids)
    assert (t.n_with, t.n_without) == (8, 8)
    assert t.direction.vector.shape == (64,) and abs(np.linalg.norm(t.direction.vector) - 1) < 1e-5
    assert 0.0 <= t.accuracy <= 1.0 and t.verdict in ("reliable", "weak: treat as a toy")
    assert t.direction.metrics["n_groups"] == 8  # a person's two photos are never split across a fold


def _builtin(name):
    return Direction(name=name, vector=np.eye(4)[0], space="latent", method="logistic")


def test_session_store_never_shadows_a_builtin_and_is_cleared_at_the_end():
    a, b, _ = _two_sides(dim=4, n=10)
    store = SessionDirections()
    builtins = [_builtin("smile"), _builtin("gender")]
    kept = store.add("small_ae/faces", teach_from_latents(a, b, "smile"), builtin_names=[d.name for d in builtins])
    assert kept.name == "smile (yours)"
    store.add("small_ae/faces", teach_from_latents(a, b, "glasses"), builtin_names=[d.name for d in builtins])
    merged = store.merged("small_ae/faces", builtins)
    names = [d.name for d in merged]
    assert names == ["smile", "gender", "smile (yours)", "glasses"]
    assert merged[0] is builtins[0]  # the built-in is listed unchanged
    # a built-in added after teaching still wins its name
    later = store.merged("small_ae/faces", [*builtins, _builtin("glasses")])
    assert [d.name for d in later][-2:] == ["smile (yours)", "glasses (yours)"]
    assert store.directions("other/model") == []  # per model
    other = SessionDirections()
    assert other.directions("small_ae/faces") == []  # another session sees none of it
    store.close()
    assert store.directions("small_ae/faces") == [] and store.merged("small_ae/faces", builtins) == builtins
    with pytest.raises(ValueError, match="session has ended"):
        store.add("small_ae/faces", teach_from_latents(a, b, "smile"))
