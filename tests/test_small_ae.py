"""The built-in small autoencoders: committed weights, interface, sampling, quality, reproducible training."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.images import psnr
from plugins.small_ae import CARDS, get_models, load_model, weights_dir
from plugins.small_ae.data import load_digits_dataset, load_london, read_labels
from plugins.small_ae.model import ConvAutoencoder, SmallAEModel, load_latents
from plugins.small_ae.train import main as train_main
from tests.conftest import ROOT, shared_path

# Bars set a little below what the committed weights measured (see bench/ae_vs_pca.py):
# digits held-out PSNR 20.8 dB (PCA-8: 16.7), faces held-out PSNR 25.5 dB (PCA-64: 23.7).
DIGITS_PSNR_BAR = 19.5
FACES_PSNR_BAR = 24.0


@pytest.fixture(scope="module")
def digits() -> SmallAEModel:
    return load_model("digits")


@pytest.fixture(scope="module")
def faces() -> SmallAEModel:
    return load_model("faces")


@pytest.fixture(scope="module")
def digits_data():
    return load_digits_dataset()


# ----- registry entries ------------------------------------------------------------------
def test_get_models_is_cheap_and_complete():
    code = "import sys, plugins.small_ae as p; e = p.get_models(); print(len(e), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"]
    entries = {e.name: e for e in get_models()}
    assert set(entries) == {"small_ae/digits", "small_ae/faces"}
    assert "faces" in entries["small_ae/faces"].tags and "faces" not in entries["small_ae/digits"].tags
    assert all(e.status() == "ready" for e in entries.values())
    face_card = entries["small_ae/faces"].card
    assert "DeBruine, L. & Jones, B. (2017). Face Research Lab London Set. doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0" in (
        face_card.attribution
    )
    assert face_card.licence.startswith("CC BY 4.0") and face_card.source == "built-in" and face_card.resolution == 64
    assert "UCI" in entries["small_ae/digits"].card.attribution and entries["small_ae/digits"].card.resolution == 8


def test_committed_files_are_small_and_safe():
    files = [p for p in (ROOT / "plugins/small_ae/weights").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert names == {"config.json", "model.safetensors", "latents.safetensors", "directions.safetensors"}
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    for p in files:  # no image of the London set (or any image) is committed
        assert p.suffix not in (".png", ".jpg", ".jpeg", ".npy", ".pt", ".pkl")


# ----- interface -------------------------------------------------------------------------
FACES_DIM = json.loads((weights_dir("faces") / "config.json").read_text())["latent_dim"]


@pytest.mark.parametrize("name,shape,dim", [("digits", (1, 8, 8), 8), ("faces", (3, 64, 64), FACES_DIM)])
def test_encode_decode_shapes_range_device(name, shape, dim, request):
    model = request.getfixturevalue(name)
    assert model.has_encoder and model.default_space == "latent"
    space = model.spaces["latent"]
    assert space.shape == (dim,) and space.prior == "learned" and space.interpolation == "lerp"
    x = torch.rand(5, *shape) * 2 - 1
    z = model.encode(x)
    assert z.shape == (5, dim) and z.device == model.device
    y = model.decode(z)
    assert y.shape == (5, *shape) and y.device == model.device and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1
    assert model.mean_latent().shape == (1, dim)
    with pytest.raises(ValueError, match="takes images of shape"):
        model.encode(torch.zeros(1, 3, 32, 32))


def test_decode_is_differentiable(faces):
    z = faces.mean_latent().clone().requires_grad_(True)
    target = torch.zeros(1, 3, 64, 64)
    loss = (faces.decode(z) - target.to(faces.device)).pow(2).mean()
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in faces.net.parameters())  # the model itself stays frozen


def test_mean_latent_is_the_training_mean(digits):
    tensors, _ = digits.training_latents()
    train = tensors["latents"][tensors["split"] == 0]
    assert torch.allclose(digits.mean_latent().cpu()[0], train.mean(0), atol=1e-5)


# ----- sampling --------------------------------------------------------------------------
def test_sampling_is_deterministic_per_seed(digits, faces):
    for model in (digits, faces):
        a, b, c = model.sample(6, seed=3), model.sample(6, seed=3), model.sample(6, seed=4)
        assert torch.equal(a, b) and not torch.allclose(a, c)
        assert a.shape == (6, *model.spaces["latent"].shape)
    assert digits.sample(0, seed=1).shape == (0, 8)


def _nn_dist(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.flatten(1), ref.flatten(1)).min(1).values


def test_samples_look_like_digits(digits, digits_data):
    """Decoded samples lie as close to real digits as held-out digits do, unlike decodes of a wrong prior."""
    train, test = digits_data.train_images, digits_data.heldout_images
    samples = digits.generate(digits.sample(300, seed=0))
    tensors, _ = digits.training_latents()
    spread = tensors["latents"].std(0)
    wrong = digits.generate(
        digits.mean_latent().cpu() + 4 * spread * torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    )
    d_real, d_samp, d_wrong = (_nn_dist(x, train).median() for x in (test, samples, wrong))
    assert d_samp < 1.2 * d_real < d_wrong
    # A classifier trained on real digits is as sure about samples as about real held-out digits.
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(train.flatten(1).numpy(), digits_data.labels["digit"][~digits_data.heldout])
    conf_samp = clf.predict_proba(samples.flatten(1).numpy()).max(1).mean()
    conf_real = clf.predict_proba(test.flatten(1).numpy()).max(1).mean()
    assert conf_samp > 0.9 * conf_real
    # Every digit class appears among the samples.
    assert len(set(clf.predict(samples.flatten(1).numpy()))) == 10


def test_face_samples_stay_near_the_data(faces):
    """Re-encoding a decoded sample lands near it (the sample is on the decoder's manifold), and samples have
    the spread of training codes."""
    z = faces.sample(64, seed=0)
    z2 = faces.encode(faces.decode(z))
    tensors, _ = faces.training_latents()
    train = tensors["latents"][tensors["split"] == 0]
    scale = (train - train.mean(0)).norm(dim=1).mean()
    rel = ((z2 - z).norm(dim=1) / scale).median()
    # Measured: 0.24 for samples, 0.12 for training codes, 1.6 for codes from a too-wide Gaussian.
    wrong = faces.mean_latent() + 3 * train.std(0).to(faces.device) * torch.randn(
        64, train.shape[1], generator=torch.Generator().manual_seed(0)
    ).to(faces.device)
    rel_wrong = ((faces.encode(faces.decode(wrong)) - wrong).norm(dim=1) / scale).median()
    assert rel < 0.5 and rel_wrong > 3 * rel
    ratio = z.cpu().std(0).mean() / train.std(0).mean()
    assert 0.7 < ratio < 1.3


# ----- quality on held-out data ------------------------------------------------------------
def test_digits_heldout_reconstruction(digits, digits_data):
    test = digits_data.heldout_images
    rec = digits.generate(digits.encode_batched(test))
    assert psnr(rec, test).mean() > DIGITS_PSNR_BAR
    from sklearn.decomposition import PCA

    x_tr, x_te = digits_data.train_images.flatten(1).numpy(), test.flatten(1).numpy()
    pca = PCA(8).fit(x_tr)
    pca_mse = ((pca.inverse_transform(pca.transform(x_te)) - x_te) ** 2).mean()
    assert (rec - test).pow(2).mean() < 0.7 * pca_mse
    # The latents stored beside the weights are those of the held-out digits too, and cluster by digit.
    tensors, meta = digits.training_latents()
    assert torch.allclose(tensors["latents"][tensors["split"] == 1], digits.encode_batched(test), atol=1e-4)
    from sklearn.neighbors import KNeighborsClassifier

    split, y = tensors["split"].numpy() == 1, tensors["digit"].numpy()
    knn = KNeighborsClassifier(5).fit(tensors["latents"][~split].numpy(), y[~split])
    assert knn.score(tensors["latents"][split].numpy(), y[split]) > 0.9


def test_faces_heldout_reconstruction(faces):
    root = shared_path("data", "faces", "london")
    ds = load_london(64, root, progress=False, only_heldout=True)  # 30 photos of 15 people never seen in training
    assert len(ds.images) == 30 and len(set(ds.labels["face_id"].tolist())) == 15
    rec = faces.generate(faces.encode_batched(ds.images))
    assert psnr(rec, ds.images).mean() > FACES_PSNR_BAR
    tensors, _ = faces.training_latents()
    train_ids = set(tensors["face_id"][tensors["split"] == 0].tolist())
    assert not train_ids & set(ds.labels["face_id"].tolist())


# ----- stored latents and labels --------------------------------------------------------------
def test_stored_latents_and_labels(digits_data):
    t, meta = load_latents(weights_dir("digits"))
    assert t["latents"].shape == (1797, 8) and torch.equal(t["index"], torch.arange(1797))
    assert np.array_equal(t["split"].numpy().astype(bool), digits_data.heldout)
    assert np.array_equal(t["digit"].numpy(), digits_data.labels["digit"])
    t, meta = load_latents(weights_dir("faces"))
    n = len(t["latents"])
    assert n == 204 and t["latents"].shape[1] == FACES_DIM
    assert set(t) == {"latents", "split", "face_id", "age", "gender", "expression"}
    assert meta["labels"] == {"gender": ["female", "male"], "expression": ["neutral", "smiling"]}
    assert meta["split"] == ["train", "held-out"] and meta["dataset"] == "london"
    assert int(t["split"].sum()) == 30 and set(t["gender"].tolist()) == {0, 1}
    assert t["age"].dtype == torch.float64 and 18 <= np.nanmin(t["age"].numpy()) and np.nanmax(t["age"].numpy()) <= 60
    assert not any("eth" in k.lower() for k in t) and "eth" not in json.dumps(meta).lower()
    assert "white" not in json.dumps(meta).lower()


# ----- files ------------------------------------------------------------------------------------
def test_from_pretrained_refuses_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        ConvAutoencoder.from_pretrained(tmp_path)
    src = weights_dir("digits")
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        ConvAutoencoder.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04 this is not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ConvAutoencoder.from_pretrained(tmp_path)
    good = (src / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ConvAutoencoder.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(good)
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "latent_dim": 5}))
    with pytest.raises(ValueError, match="does not match its config.json"):
        ConvAutoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid autoencoder config"):
        ConvAutoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "surprise": 1}))
    with pytest.raises(ValueError, match="unknown fields: surprise"):
        ConvAutoencoder.from_pretrained(tmp_path)


def test_save_load_round_trip(tmp_path, faces):
    faces.net.save_pretrained(tmp_path)
    again = SmallAEModel.from_pretrained(tmp_path, CARDS["faces"])
    z = faces.sample(3, seed=7)
    assert torch.equal(again.sample(3, seed=7), z)
    assert torch.allclose(again.decode(z), faces.decode(z))


# ----- reproducible training -----------------------------------------------------------------------
def _train_digits(out, seed):
    assert train_main(["digits", "--out", str(out), "--seed", str(seed), "--epochs", "2", "--quiet"]) == 0
    return (out / "model.safetensors").read_bytes(), (out / "latents.safetensors").read_bytes()


def test_training_is_deterministic(tmp_path):
    a = _train_digits(tmp_path / "a", 0)
    b = _train_digits(tmp_path / "b", 0)
    c = _train_digits(tmp_path / "c", 1)
    assert a == b and a[0] != c[0]
    assert (tmp_path / "a" / "config.json").read_text() == (tmp_path / "b" / "config.json").read_text()
    m = SmallAEModel.from_pretrained(tmp_path / "a", CARDS["digits"])
    assert m.decode(m.sample(2, seed=0)).shape == (2, 1, 8, 8)


def test_folder_training_with_labels_and_augmentation(tmp_path):
    """The generic folder route: sub-folders become a label, the CSV's ethnicity column is never read,
    augmentation (flips, shifts, rotations, lighting) runs, and two runs with a seed are identical."""
    from PIL import Image

    rng = np.random.default_rng(0)
    data = tmp_path / "photos"
    rows = ["face_id,face_age,face_gender,face_eth"]
    for i in range(8):
        rows.append(f"{i:03d},{20 + i},{'male' if i % 2 else 'female'},secret")
        for sub in ("neutral", "smiling"):
            (data / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(data / sub / f"{i:03d}_03.png")
    (tmp_path / "info.csv").write_text("\n".join(rows) + "\n")
    key, parsed = read_labels(tmp_path / "info.csv")
    assert key == "face_id" and "face_eth" not in parsed["001"]
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = ["folder", str(data), "--size", "16", "--labels", str(tmp_path / "info.csv"), "--out", str(out), "--epochs", "2"]
        assert train_main([*args, "--quiet", "--heldout-fraction", "0.25"]) == 0
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    t, meta = load_latents(tmp_path / "a")
    assert t["latents"].shape[0] == 16 and int(t["split"].sum()) == 4
    assert set(t) == {"latents", "split", "face_id", "face_age", "face_gender", "folder"}
    assert meta["labels"]["folder"] == ["neutral", "smiling"] and meta["labels"]["face_gender"] == ["female", "male"]
    assert "secret" not in json.dumps(meta)


def test_face_training_swaps_backdrops_and_weighs_the_face():
    """faces-mix augmentation: the target keeps the photo, the input has a new backdrop outside the face
    mask only (same geometry for image and mask); the face loss ignores what lies outside the mask."""
    from plugins.small_ae.train import PRESETS, augment, face_loss

    _, tc = PRESETS["faces-mix"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    mask = torch.zeros(6, 16, 16)
    mask[:, 4:12, 4:12] = 1
    backgrounds = torch.full((2, 3, 32, 32), -1.0)  # black photos: every swapped pixel becomes -1
    plain = replace(tc, flip=False, shift=0, rotate=0.0, scale=0.0, jitter=0.0, colour=0.0, background=1.0)
    inp, target, m = augment(x, plain, g, mask, backgrounds)
    assert torch.equal(target, x) and torch.equal(m, mask)
    assert torch.equal(inp[:, :, 4:12, 4:12], x[:, :, 4:12, 4:12]) and bool((inp[:, :, :4] == -1).all())
    # Geometry moves image and mask together: a flipped mask still marks the same pixels of the flipped image.
    inp, target, m = augment(x, replace(plain, flip=True, background=0.0), torch.Generator().manual_seed(1), mask)
    assert torch.equal(inp, target) and torch.equal(m, mask)  # the mask is symmetric, so it is unchanged
    flipped = ~torch.isclose(target, x).all(dim=(1, 2, 3))
    assert flipped.any() and torch.equal(target[flipped], x[flipped].flip(-1))
    rec = x.clone()
    rec[:, :, :2] = -x[:, :, :2]  # wrong only outside the face
    assert face_loss(rec, x, mask, 0.0) < 1e-4 < face_loss(rec, x, mask, 1.0)
    rec[:, :, 6:10, 6:10] = 0  # wrong inside the face
    assert face_loss(rec, x, mask, 0.0) > 1e-3
