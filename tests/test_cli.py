"""The command line: files out, a plain message and a non-zero exit on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import app
from core.export import load_latent
from tests.conftest import shared_path


@pytest.fixture
def digit(tmp_path):
    from sklearn.datasets import load_digits

    p = tmp_path / "digit.png"
    Image.fromarray(np.uint8(load_digits().images[3] * 255 / 16)).resize((32, 32), Image.NEAREST).save(p)
    return p


def test_project(tmp_path, digit, capsys):
    out = tmp_path / "out"
    assert app.main(["project", str(digit), "--model", "small_ae/digits", "--steps", "30", "--out", str(out)]) == 0
    # A small autoencoder's decoder is tuned to the photo: what the latent draws with the model itself is written too.
    assert {p.name for p in out.iterdir()} == {"target.png", "reconstruction.png", "projection_alone.png", "latent.npz"}
    latent, info = load_latent(out / "latent.npz")
    assert latent.shape == (1, 8) and info["model"] == "small_ae/digits" and info["steps"] == 30
    assert "PSNR" in capsys.readouterr().out


def test_project_face_prints_and_saves_identity(tmp_path, capsys):
    out = tmp_path / "face"
    photo = shared_path("data", "faces", "london", "neutral", "003_03.jpg")
    assert app.main(["project", str(photo), "--model", "small_ae/faces", "--steps", "5", "--out", str(out)]) == 0
    assert "identity distance" in capsys.readouterr().out
    _, info = load_latent(out / "latent.npz")
    assert 0 < info["identity_distance"] < 2
    # By default the decoder is then tuned to the photo (the model's pivotal_tuning_steps): it draws it better.
    assert info["decoder"] == "small_ae/faces+tuned" and info["psnr"] > info["projection_psnr"] + 1.0
    assert app.main(["project", str(photo), "--model", "small_ae/faces", "--steps", "5", "--tune-steps", "0",
                     "--out", str(out)]) == 0
    assert "decoder" not in load_latent(out / "latent.npz")[1]


def test_interpolate_seeds_and_images(tmp_path, digit):
    out = tmp_path / "seeds"
    assert app.main(["interpolate", "--seeds", "1", "2", "--model", "small_ae/digits", "--frames", "5", "--out", str(out)]) == 0
    assert len(list((out / "frames").glob("*.png"))) == 5
    gif = Image.open(out / "interpolation.gif")
    assert gif.n_frames == 8 and min(gif.size) >= 256  # as the tab's GIF: forward then back, at least 256 px
    assert (out / "interpolation.mp4").stat().st_size > 0
    out2 = tmp_path / "images"
    assert app.main(["interpolate", str(digit), str(digit), "--model", "small_ae/digits", "--frames", "3", "--steps", "5",
                     "--out", str(out2)]) == 0
    assert load_latent(out2 / "latents.npz")[0].shape == (3, 8)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["project", "{missing}", "--model", "small_ae/digits", "--out", "{out}"], "does not exist"),
        (["project", "{text}", "--model", "small_ae/digits", "--out", "{out}"], "not an image"),
        (["project", "{digit}", "--model", "no/such-model", "--out", "{out}"], "Unknown model"),
        (["interpolate", "--model", "small_ae/digits", "--out", "{out}"], "Give two images"),
        (["project", "{digit}", "--model", "small_ae/digits", "--space", "w+", "--out", "{out}"], "has no latent space"),
        (["--device", "cuda:7", "models"], "not available"),
    ],
)
def test_bad_input_exits_non_zero_with_a_plain_message(tmp_path, digit, capsys, argv, message):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    fill = {"missing": str(tmp_path / "nope.png"), "out": str(tmp_path / "o"), "text": str(text), "digit": str(digit)}
    code = app.main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_family_cli(tmp_path, capsys):
    dad = shared_path("data", "faces", "london", "neutral", "003_03.jpg")
    mum = shared_path("data", "faces", "london", "neutral", "004_03.jpg")
    out = tmp_path / "fam"
    assert app.main(["family", str(dad), str(mum), "--model", "small_ae/faces", "--children", "2", "--steps", "10",
                     "--age", "1", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"father_aligned.png", "father_projected.png", "mother_aligned.png", "mother_projected.png", "child_0.png",
            "child_1.npz", "morph_child_0.mp4"} <= names
    captured = capsys.readouterr()
    assert "2 children" in captured.out and "identity distance to father" in captured.out
    assert "father: PSNR" in captured.out and "reads as" in captured.out
    assert "unreliable" in captured.err  # the shipped age direction does not generalise: said, as in the tab
    _, info = load_latent(out / "child_1.npz")
    assert 0 < info["identity_to_father"] < 2 and 0 < info["identity_to_mother"] < 2 and info["parents_distance"] > 0
    assert app.main(["family", str(dad), str(mum), "--model", "small_ae/faces", "--children", "1", "--steps", "3",
                     "--out", str(tmp_path / "one")]) == 0
    assert "Wrote 1 child," in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "small_ae/digits"], "is not a face model"),
        (["--model", "small_ae/faces", "--children", "0"], "number of children must be a whole number from 1"),
        (["--model", "small_ae/faces", "--coarse", "father"], "per-layer dominance does not apply"),
        (["--model", "small_ae/faces", "--face", "2"], "Only one face was found in this photo, so --face must be 1; got 2"),
        (["--model", "small_ae/faces", "--face", "0"], "--face counts from 1 (1 = the largest face); got 0"),
    ],
)
def test_family_cli_refusals(tmp_path, capsys, extra, message):
    dad = shared_path("data", "faces", "london", "neutral", "003_03.jpg")
    code = app.main(["family", str(dad), str(dad), "--steps", "2", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # (the model's licence line, then one plain sentence)


def test_face_numbers_count_from_one_as_in_every_message(tmp_path, capsys):
    """``--face 2`` is the second face of two ("face 2 of 2"); 3 or 0 are refused in a sentence naming 1 to 2."""
    group = shared_path("data", "faces", "photos", "singnet_laos.jpg")
    targets = []
    for face in ("1", "2"):
        out = tmp_path / face
        assert app.main(["project", str(group), "--model", "small_ae/faces", "--steps", "1", "--tune-steps", "0",
                         "--face", face, "--out", str(out)]) == 0
        assert f"face {face} of 2" in capsys.readouterr().err
        targets.append(np.asarray(Image.open(out / "target.png")))
    assert not np.array_equal(*targets)
    for face, message in (("3", "so --face must be from 1 to 2; got 3"), ("0", "--face counts from 1")):
        assert app.main(["project", str(group), "--model", "small_ae/faces", "--face", face, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_family_help_says_which_gender_sign_is_male(capsys):
    with pytest.raises(SystemExit):
        app.main(["family", "-h"])
    assert "positive = male" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


def test_models_lists_licences(capsys):
    assert app.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "small_ae/faces" in out and "stylegan2/ffhq-256" in out and "not downloaded" in out


def test_title_printed_once(tmp_path, capsys):
    assert app.main(["interpolate", "--seeds", "1", "2", "--model", "small_ae/digits", "--frames", "2", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count(app.make_registry(None).entry("small_ae/digits").card.title) == 1


def test_unknown_model_names_the_nearest_without_stray_quotes(tmp_path, digit, capsys):
    assert app.main(["project", str(digit), "--model", "small_ae/digit", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown model small_ae/digit.") and "Did you mean small_ae/digits" in err
    assert "'" not in err.split("Available")[0]


def test_interpolate_zero_frames_is_refused_before_any_projection(tmp_path, digit, capsys, monkeypatch):
    import core.projection

    def no_projection(*a, **k):
        raise AssertionError("projected before checking the frame count")

    monkeypatch.setattr(core.projection, "project", no_projection)
    assert app.main(["interpolate", str(digit), str(digit), "--model", "small_ae/digits", "--frames", "0",
                     "--out", str(tmp_path)]) == 2
    assert "number of frames must be a whole number from 2" in capsys.readouterr().err


def test_model_given_as_a_pickle_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    pkl = shared_path("fixtures", "stylegan", "ada_r32.pkl")
    out = tmp_path / "o"
    assert app.main(["interpolate", "--seeds", "1", "2", "--model", str(pkl), "--frames", "3", "--mix", "coarse",
                     "--out", str(out)]) == 0
    latents, info = load_latent(out / "latents.npz")
    assert info["model"].startswith("stylegan/local/ada_r32-") and info["space"] == "w+" and info["mixing"] == ["coarse"]
    (tmp_path / "weights.bin").write_bytes(b"0")
    assert app.main(["interpolate", "--seeds", "1", "2", "--model", str(tmp_path / "weights.bin"), "--out", str(out)]) == 2
    assert "No plugin reads '.bin' files" in capsys.readouterr().err
