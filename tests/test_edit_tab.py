"""Issue 19's front ends: edit after projection, teach a direction in the browser (per session), `python app.py edit`."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")

from tests.conftest import restore_env, shared_path, use_private_dirs  # noqa: E402

FACES, DIGITS = "small_ae/faces", "small_ae/digits"
LONDON = shared_path("data", "faces", "london")


def _people(n: int, start: int = 0) -> list[str]:
    ids = sorted(p.stem[:3] for p in (LONDON / "smiling").glob("*_08.jpg") if (LONDON / "neutral" / f"{p.stem[:3]}_03.jpg").exists())
    return ids[start:start + n]


def _photo(pid: str, smiling: bool) -> str:
    return str(LONDON / ("smiling" if smiling else "neutral") / f"{pid}_{'08' if smiling else '03'}.jpg")


def _session(name: str):
    return types.SimpleNamespace(session_hash=name, headers={}, client=None, username=None)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from demos.common import AppContext
    from plugins.registry import Registry

    old = use_private_dirs(tmp_path_factory.mktemp("edit_tab"))
    yield AppContext(Registry().discover(None, use_entry_points=False), max_steps=300)
    restore_env(old)


@pytest.fixture(scope="module")
def projected(ctx):
    """A London face projected (no tuning: fast) in the default session."""
    from demos.projection import ProjectionSettings, project_image

    photo = _photo(_people(1, 30)[0], False)
    *_, last = project_image(ctx, ProjectionSettings(FACES, photo, None, "auto", "auto", 20, True, 0, tune=False))
    assert "Done" in last[3]
    return last


def _error(call) -> str:
    with pytest.raises(gr.Error) as e:
        call()
    return str(e.value)


def test_edit_before_any_projection_says_to_project_first(ctx):
    from demos.edit_panel import EditSettings, edit_projection

    request = _session("never-projected")
    assert "Project a photo first" in _error(lambda: edit_projection(ctx, EditSettings("PC1", 1.0), request))


def test_an_edit_is_drawn_captioned_with_identity_and_replays_from_its_npz(ctx, projected):
    from core.edit import replay_edit
    from core.export import load_latent
    from demos.edit_panel import EditSettings, edit_choices, edit_projection

    note, first, *_ = edit_choices(ctx)
    assert "Editing the latest projection" in note and "PC1" in first["choices"]
    picture, text, files = edit_projection(ctx, EditSettings("PC1", 2.0, "PC2", -1.0))
    assert "PC1 +2.0 std" in text and "PC2 -1.0 std" in text and "to the photo" in text
    npz = next(f for f in files if f.endswith(".npz"))
    png = next(f for f in files if f.endswith(".png"))
    edited, info = load_latent(npz)  # the download is also a plain latent
    assert info["model"] == FACES
    replayed = replay_edit(npz)
    assert torch.equal(replayed, torch.as_tensor(edited))
    original, _ = load_latent(next(f for f in projected[5] if f.endswith(".npz")))
    assert not torch.allclose(replayed, torch.as_tensor(original))  # it did move
    from core.images import to_pil
    from demos.edit_panel import PROJECTED

    found = ctx.session_cache(None)[PROJECTED]
    drawn = to_pil(found.decoder.generate(replayed, found.space))[0]  # the replayed latent draws the downloaded picture
    assert np.abs(np.asarray(drawn, float) - np.asarray(Image.open(png), float)).max() <= 1
    assert Image.open(picture).size[0] >= 256


def test_keep_fixed_reports_its_measured_effect_and_the_strip_is_one_picture(ctx, projected):
    from demos.edit_panel import EditSettings, edit_projection, edit_strip

    _, text, _ = edit_projection(ctx, EditSettings("PC1", 2.0, keep_fixed=["PC2"]))
    assert "Keeping **PC2** fixed" in text and "without keeping it fixed" in text
    assert "PC1" in _error(lambda: edit_projection(ctx, EditSettings("PC1", 1.0, keep_fixed=["PC1"])))
    path, caption = edit_strip(ctx, EditSettings(strip_direction="PC3"))
    w, h = Image.open(path).size
    assert w > 4 * h and "-2" in caption and "+2" in caption
    assert "twice" in _error(lambda: edit_projection(ctx, EditSettings("PC1", 1.0, "PC1", 1.0)))
    assert "between" in _error(lambda: edit_projection(ctx, EditSettings("PC1", 20.0)))


def test_too_few_or_one_sided_sets_are_refused_with_how_many_are_needed(ctx):
    from demos.edit_panel import TeachSettings, teach_direction

    photos = [_photo(p, True) for p in _people(3)]
    msg = _error(lambda: teach_direction(ctx, TeachSettings(FACES, photos, [], "smile")))
    assert "'without' side has no examples" in msg and "at least 5" in msg
    msg = _error(lambda: teach_direction(ctx, TeachSettings(FACES, photos, photos, "smile")))
    assert "at least 5 examples on each side" in msg
    assert "name" in _error(lambda: teach_direction(ctx, TeachSettings(FACES, photos * 2, photos * 2, " ")))


def test_a_taught_direction_is_offered_in_edit_and_family_of_its_session_only(ctx, projected):
    from demos.edit_panel import EditSettings, TeachSettings, edit_choices, edit_projection, teach_direction
    from demos.face_note import directions_note
    from demos.family import family_for

    people = _people(12)
    smiling = [_photo(p, True) for p in people]
    neutral = [_photo(p, False) for p in people]
    text = teach_direction(ctx, TeachSettings(FACES, smiling, neutral, "grin"))
    assert "grin: taught from 12 with / 12 without" in text and "held-out accuracy" in text
    assert "reliable" in text or "weak: treat as a toy" in text
    # Edit: offered, usable.
    assert "grin" in edit_choices(ctx)[1]["choices"]
    _, caption, _ = edit_projection(ctx, EditSettings("grin", 1.5))
    assert "grin +1.5 std" in caption
    # Family, same session: in its "Another direction" list and in the Family's directions.
    assert "grin" in directions_note(ctx, FACES)[1]["choices"]
    assert "grin" in [d.name for d in family_for(ctx, FACES, None).directions]
    # Another session: absent.
    other = _session("another-visitor")
    assert "grin" not in directions_note(ctx, FACES, other)[1]["choices"]
    assert "grin" not in [d.name for d in family_for(ctx, FACES, other).directions]
    # The session ends: its directions are gone with it.
    key = ctx.sessions.key(other)
    ctx.taught.of(key)
    before = len(ctx.taught)
    ctx.sessions.end(key)
    assert len(ctx.taught) == before - 1


def test_teaching_through_gradio_client(tmp_path, monkeypatch):
    """The browser path end to end: two uploaded sets -> /teach -> the direction is in /edit_directions' lists."""
    from gradio_client import Client, handle_file

    from demos.app import build_app, launch
    from plugins.registry import Registry

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=300)
    launch(demo, block=False)
    try:
        client = Client(demo.local_url, verbose=False)
        people = _people(6, 12)
        smiling = [handle_file(_photo(p, True)) for p in people]
        neutral = [handle_file(_photo(p, False)) for p in people]
        text = client.predict(FACES, smiling, neutral, "beam", api_name="/teach")
        assert "beam: taught from 6 with / 6 without" in text
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match="at least 5"):
            client.predict(FACES, smiling[:2], neutral[:2], "beam", api_name="/teach")
        with pytest.raises(AppError, match="Project a photo first"):
            client.predict("PC1", 1, None, 0, None, 0, "all", [], None, api_name="/edit")
    finally:
        demo.close()


def test_cli_edit_writes_the_picture_strip_and_replayable_npz(tmp_path, projected, capsys):
    import app
    from core.edit import replay_edit
    from core.export import load_latent

    latent_npz = next(f for f in projected[5] if f.endswith(".npz"))
    out = tmp_path / "out"
    code = app.main(["edit", latent_npz, "--model", FACES, "--direction", "PC1=1.5", "--direction", "PC2=-1",
                     "--keep-fixed", "PC3", "--strip", "PC1", "--out", str(out)])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert {"edited.png", "edited.npz", "strip_PC1.png"} <= {p.name for p in out.iterdir()}
    edited, _ = load_latent(out / "edited.npz")
    assert torch.equal(replay_edit(out / "edited.npz"), torch.as_tensor(edited))
    assert "PC1 +1.5 std" in said.out and "PC3" in said.out
    assert app.main(["edit", latent_npz, "--model", FACES, "--direction", "PC1", "--out", str(out)]) == 2
    assert "NAME=AMOUNT" in capsys.readouterr().err
    assert app.main(["edit", latent_npz, "--model", FACES, "--direction", "nosuch=1", "--out", str(out)]) == 2
    assert "No 'nosuch' direction" in capsys.readouterr().err
    assert app.main(["edit", latent_npz, "--model", DIGITS, "--direction", "PC1=1", "--out", str(out)]) == 2
    assert "small_ae/faces" in capsys.readouterr().err
