"""Directions from a labelled folder, for any model, and the CLI that saves them for the Family tab."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import app
from core.labels import excluded
from core.user_directions import directions_for, fit_from_folder, read_labelled_folder, user_directions_path
from tests.conftest import shared_path


def test_labels_are_matched_and_ethnicity_is_never_read(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("001_03.jpg", "001_08.jpg", "002_03.png", "stray.png"):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / name)
    csv = tmp_path / "labels.csv"
    csv.write_text("face_id,age,gender,face_eth,Race\n001,30,male,x,y\n002,NA,female,x,y\n")
    data = read_labelled_folder(tmp_path, csv)
    assert [p.name for p in data.paths] == ["001_03.jpg", "001_08.jpg", "002_03.png"]
    assert set(data.labels) == {"age", "gender"}  # face_id is the person, eth/race are dropped
    assert data.groups == ["001", "001", "002"]
    assert data.labels["age"] == ["30", "30", "NA"]
    assert excluded("face_eth") and excluded("Race") and excluded("skin_tone") and not excluded("teeth")


def test_fit_from_a_labelled_folder_of_london_photos(tmp_path):
    """Gender from 40 London photos with the built-in faces model: held out by person, above chance."""
    from plugins.small_ae import load_model

    src = shared_path("data", "faces", "london")
    info = (src / "london_info.csv").read_text().splitlines()
    keep = info[1:41]
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in keep:
        stem = row.split(",")[0] + "_03.jpg"
        (folder / stem).symlink_to(src / "neutral" / stem)
    (tmp_path / "labels.csv").write_text("\n".join([info[0], *keep]) + "\n")
    model = load_model("faces")
    found, notes = fit_from_folder(model, "small_ae/faces", folder, tmp_path / "labels.csv")
    by_name = {d.name: d for d in found}
    assert "face_eth" not in by_name and set(by_name) >= {"face_gender"}
    g = by_name["face_gender"]
    print(notes)
    assert g.metrics["heldout_accuracy"] > g.metrics["chance"] + 0.1
    assert notes[0].startswith("40 of 40 images used")


def test_directions_cli_saves_for_the_family_tab(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    src = shared_path("data", "faces", "london")
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = (src / "london_info.csv").read_text().splitlines()
    for row in rows[1:21]:
        stem = row.split(",")[0] + "_03.jpg"
        (folder / stem).symlink_to(src / "neutral" / stem)
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(["face_id,smiles", *[f"{r.split(',')[0]},{i % 2}" for i, r in enumerate(rows[1:21])]]) + "\n")
    assert app.main(["directions", "--model", "small_ae/faces", "--images", str(folder), "--labels", str(labels)]) == 0
    assert "Saved 1 direction" in capsys.readouterr().out
    assert user_directions_path("small_ae/faces").is_file()
    from plugins.small_ae import load_model

    names = [d.name for d in directions_for("small_ae/faces", load_model("faces"))]
    assert "smiles" in names and "gender" in names  # the user's next to the shipped ones


def test_no_matching_rows(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("file,x\nb.png,1\n")
    with pytest.raises(ValueError, match="No image"):
        read_labelled_folder(tmp_path, tmp_path / "l.csv")
