"""Editing a projected latent along directions (core.edit): layers, conditional edits, strips, exact replays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.direction import Direction
from core.edit import conditioned, edit, plan_moves, read_edit, replay_edit, resolve_layers, strip
from core.export import load_latent
from core.teach import direction_score, teach_from_latents
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def faces():
    from plugins.small_ae import load_model

    return load_model("faces")


def _dir(name, vec, std=1.0, **kw):
    return Direction(name=name, vector=np.asarray(vec, dtype=np.float32), space="latent", method="logistic", std=std, **kw)


def _correlated(dim=64, cos=0.6, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.normal(size=dim)
    b /= np.linalg.norm(b)
    r = rng.normal(size=dim)
    r -= (r @ b) * b
    r /= np.linalg.norm(r)
    return cos * b + np.sqrt(1 - cos**2) * r, b


def test_edit_moves_by_std_and_draws_with_the_given_decoder(faces):
    z = faces.sample(1, seed=3)
    a, b = _correlated()
    dirs = [_dir("age", a, std=2.0), _dir("gender", b)]
    res = edit(faces, "latent", z, dirs, {"age": 1.5}, model_name="small_ae/faces")
    assert torch.allclose(res.latent - res.original, torch.as_tensor(1.5 * 2.0 * a, dtype=torch.float32)[None], atol=1e-5)
    assert res.image.size == (64, 64) and res.reconstruction.size == (64, 64)
    assert "age +1.5 std" in res.caption() and res.caption().startswith("small_ae/faces")

    class Spy:
        calls = 0

        def generate(self, latents, space, **kw):
            Spy.calls += 1
            return faces.generate(latents, space) * 0 - 1  # a black "tuned copy"

    black = edit(faces, "latent", z, dirs, {"age": 1.0}, decoder=Spy())
    assert Spy.calls == 1 and np.asarray(black.image).max() == 0


def test_keep_fixed_removes_the_other_directions_component(faces):
    a, b = _correlated(cos=0.6)
    dirs = [_dir("age", a), _dir("gender", b)]
    z = faces.sample(1, seed=1)
    free = edit(faces, "latent", z, dirs, {"age": 2.0}, watch=["gender"], draw_unedited=False)
    kept = edit(faces, "latent", z, dirs, {"age": 2.0}, keep_fixed=["gender"], draw_unedited=False)
    assert abs(float((free.latent - free.original).numpy().ravel() @ b) - 1.2) < 1e-4  # dragged: 2 x 0.6
    assert abs(float((kept.latent - kept.original).numpy().ravel() @ b)) < 1e-5  # ~0 with gender kept fixed
    before, after = kept.effects["gender"]
    assert abs(after - before) < 1e-4 and abs(free.effects["gender"][1] - free.effects["gender"][0] - 1.2) < 1e-4
    assert kept.moves[0].kept_fixed == ["gender"] and abs(kept.moves[0].overlap["gender"] - 0.6) < 1e-5
    assert "gender kept fixed" in kept.caption()
    c, _ = conditioned(dirs[0], [dirs[1]])
    assert abs(np.linalg.norm(c.vector) - 1) < 1e-5 and abs(float(c.vector @ b)) < 1e-6
    with pytest.raises(ValueError, match="leaves nothing to change"):
        conditioned(_dir("x", b), [_dir("y", b)])


def test_a_taught_classifier_scores_the_kept_attribute(faces):
    """A taught 'gender' direction measures the effect with its own classifier (log-odds)."""
    rng = np.random.default_rng(0)
    a, b = _correlated()
    with_, without = rng.normal(size=(30, 64)) + 2 * b, rng.normal(size=(30, 64)) - 2 * b
    gender = teach_from_latents(with_, without, "gender").direction
    dirs = [_dir("age", a), gender]
    z = faces.sample(1, seed=0)
    free = edit(faces, "latent", z, dirs, {"age": 2.0}, watch=["gender"], draw_unedited=False)
    kept = edit(faces, "latent", z, dirs, {"age": 2.0}, keep_fixed=["gender"], draw_unedited=False)
    change = lambda r: abs(r.effects["gender"][1] - r.effects["gender"][0])  # noqa: E731
    assert change(kept) < 1e-4 < 0.1 < change(free)
    calls = []
    scored = edit(faces, "latent", z, dirs, {"age": 2.0}, keep_fixed=["gender"], draw_unedited=False,
                  scorers={"gender": lambda x: calls.append(x.shape) or np.zeros(len(x))})
    assert calls == [(1, 64), (1, 64)] and scored.effects["gender"] == (0.0, 0.0)


def test_edits_are_reproducible_from_the_download(faces, tmp_path):
    a, b = _correlated()
    dirs = [_dir("age", a, std=1.3), _dir("gender", b, std=0.7)]
    res = edit(faces, "latent", faces.sample(1, seed=5), dirs, {"age": 1.7, "gender": -0.4}, keep_fixed=[],
               model_name="small_ae/faces", draw_unedited=False)
    path = res.save(tmp_path / "edit.npz")
    assert torch.equal(replay_edit(path), res.latent)  # bit for bit, without the directions
    assert torch.equal(replay_edit(res.npz_content()), res.latent)
    latent, info = load_latent(path)  # also a plain latent file
    assert info["model"] == "small_ae/faces" and info["space"] == "latent" and np.array_equal(latent, res.latent.numpy())
    assert [m["name"] for m in info["edit"]["moves"]] == ["age", "gender"]
    with torch.no_grad():
        assert torch.equal(faces.generate(torch.as_tensor(latent), "latent"), faces.generate(res.latent, "latent"))
    np.savez(tmp_path / "plain.npz", latent=latent)
    with pytest.raises(ValueError, match="not a Latent Lab edit file"):
        read_edit(tmp_path / "plain.npz")


def test_strip_is_one_picture_of_five_frames(faces):
    a, _ = _correlated()
    s = strip(faces, "latent", faces.sample(1, seed=2), [_dir("age", a, std=2.0)], "age")
    assert s.image.size == (5 * 64 + 4 * 2, 64) and len(s.frames) == 5 and s.latents.shape == (5, 64)
    assert s.amounts == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert torch.allclose(s.latents[2], faces.sample(1, seed=2).cpu()[0])
    assert torch.allclose(s.latents[4] - s.latents[0], torch.as_tensor(8.0 * a, dtype=torch.float32), atol=1e-5)


def test_bad_settings_are_refused_with_sentences(faces):
    a, _ = _correlated()
    dirs = [_dir("age", a)]
    z = faces.sample(1)
    with pytest.raises(ValueError, match="No 'smile' direction.*available: age"):
        edit(faces, "latent", z, dirs, {"smile": 1.0})
    with pytest.raises(ValueError, match="between -10 and 10 std"):
        edit(faces, "latent", z, dirs, {"age": 20})
    with pytest.raises(ValueError, match="has no layers to choose"):
        edit(faces, "latent", z, dirs, {"age": 1.0}, layers="coarse")
    with pytest.raises(ValueError, match="cannot be kept fixed while it is the one being changed"):
        conditioned(dirs[0], dirs)


def test_layer_ranges_on_a_stylegan_fixture(tmp_path):
    from core.card import ModelCard
    from plugins.stylegan.model import StyleGANModel

    card = ModelCard(name="stylegan/fixture", title="Random StyleGAN", description="random weights",
                     trained_on="nothing", resolution=32, licence="none", source="built-in")
    m = StyleGANModel.from_pickle(shared_path("fixtures", "stylegan", "ada_r32.pkl"), card, cache_root=tmp_path)
    assert resolve_layers(m, "w+", "coarse+fine") == sorted(m.layer_groups("w+")["coarse"] + m.layer_groups("w+")["fine"])
    with pytest.raises(ValueError, match="Unknown layer range 'toes'"):
        resolve_layers(m, "w+", "toes")
    with pytest.raises(ValueError, match="do not exist"):
        resolve_layers(m, "w+", [0, 99])
    rng = np.random.default_rng(0)
    v = rng.normal(size=64)
    v /= np.linalg.norm(v)
    d = Direction(name="pc", vector=v, space="w", method="pca", std=1.0)
    w = m.sample(1, seed=0, space="w+")
    res = edit(m, "w+", w, [d], {"pc": 2.0}, layers="coarse")
    moved = (res.latent - res.original).abs().sum(-1)[0]
    coarse = m.layer_groups("w+")["coarse"]
    assert bool((moved[coarse] > 0).all()) and float(moved[[i for i in range(8) if i not in coarse]].sum()) == 0
    assert res.layer_choice == "coarse" and res.image.size == (32, 32)
    assert torch.equal(replay_edit(res.npz_content()), res.latent)
    _, _, _ = plan_moves(m, "w+", [d], {"pc": 1.0})
    assert direction_score(d, res.latent).shape == (1,)


def test_identity_distance_to_the_photo(faces):
    """With a photo's descriptor, each edited picture reports its identity distance (dlib)."""
    pytest.importorskip("dlib")
    from core.faces.identity import default_identity

    a, _ = _correlated()
    z = faces.sample(1, seed=4)
    photo = default_identity().descriptors([faces.generate(z, "latent")[0].add(1).mul(127.5).clamp(0, 255)
                                            .permute(1, 2, 0).byte().numpy()])[0]
    small = edit(faces, "latent", z, [_dir("age", a)], {"age": 0.1}, photo_descriptor=photo)
    big = edit(faces, "latent", z, [_dir("age", a, std=3.0)], {"age": 3.0}, photo_descriptor=photo)
    assert small.identity_unedited < 0.05 and small.identity_distance < big.identity_distance
    assert big.identity_to_reconstruction is not None and "identity distance" in big.caption()
