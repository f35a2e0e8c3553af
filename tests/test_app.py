"""The app end to end: launched on 127.0.0.1, every api_name called through gradio_client.

Error cases assert the message a user actually sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.export import load_latent
from tests.conftest import SHARED, app_error, restore_env, shared_path, use_private_dirs

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

DIGITS, FACES = "small_ae/digits", "small_ae/faces"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    old = use_private_dirs(tmp)  # nothing downloaded there: no StyleGAN, no LPIPS weights
    from demos.app import build_app, launch
    from plugins.registry import Registry

    models = SHARED / "fixtures" / "stylegan"  # the operator's --models-dir: the tests add its pickles by name
    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=300,
                     models_dir=models if models.is_dir() else None)
    launch(demo, block=False)
    yield demo, tmp
    demo.close()
    restore_env(old)


@pytest.fixture(scope="module")
def client(app):
    c = Client(app[0].local_url, verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits().images[10]  # a held-in "0"
    p = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.uint8(d * 255 / 16)).resize((32, 32), Image.NEAREST).save(p)
    return str(p)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad") / "notes.png"
    p.write_text("this is not an image at all")
    return str(p)


# ----- projection ------------------------------------------------------------------------
def test_project_digit(client, digit_png):
    target, recon, _, status, curve, files = client.predict(
        DIGITS, handle_file(digit_png), "latent", "auto", "mse", 60, False, 0, api_name="/project")
    assert Image.open(target).size == (256, 256) and Image.open(recon).size == (256, 256)  # enlarged for display
    assert Image.open(next(f for f in files if f.endswith(".png"))).size == (8, 8)  # the download is native
    assert "Done" in status and "PSNR" in status
    psnr = float(status.split("PSNR **")[1].split(" dB")[0])
    assert psnr > 20
    npz = next(f for f in files if f.endswith(".npz"))
    with np.load(npz, allow_pickle=False) as z:
        assert z["latent"].shape[0] == 1
        assert '"model": "small_ae/digits"' in str(z["info"])


def test_project_streams_previews(client, digit_png):
    job = client.submit(DIGITS, handle_file(digit_png), "latent", "mean", "mse", 40, False, 0, api_name="/project")
    outputs = list(job)
    assert len(outputs) >= 3  # target first, then previews, then the final result
    assert "Done" in outputs[-1][3]


def test_project_errors(client, text_file):
    assert "not an image" in app_error(lambda: client.predict(DIGITS, handle_file(text_file), "latent", "auto", "mse", 5, False, 0,
                                                           api_name="/project"))
    assert "Upload the image first" in app_error(lambda: client.predict(DIGITS, None, "latent", "auto", "mse", 5, False, 0,
                                                                     api_name="/project"))
    msg = app_error(lambda: client.predict("stylegan2/ffhq-256", None, "w+", "auto", "mse", 5, False, 0, api_name="/project"))
    assert "not downloaded yet" in msg
    assert "Choose a model" in app_error(lambda: client.predict(None, None, "latent", "auto", "mse", 5, False, 0, api_name="/project"))


def test_model_card_and_spaces(client):
    card = client.predict(FACES, api_name="/proj_model_card")  # (the Download button's visibility is not an API value)
    assert "CC BY 4.0" in card and "London" in card
    card = client.predict("stylegan2/ffhq-256", api_name="/interp_model_card")
    assert "non-commercial" in card and "not downloaded" in card
    client.predict(DIGITS, api_name="/proj_spaces")


# ----- interpolation -----------------------------------------------------------------------
def test_interpolate_seeds(client):
    gallery, gif, video, files, status = client.predict(
        DIGITS, "two seeds", 1, 2, None, None, 6, "", "auto", [], 10, False, 8, False, api_name="/interpolate")
    assert len(gallery) == 6
    assert Image.open(gif).n_frames == 6
    assert Path(video["video"] if isinstance(video, dict) else video).stat().st_size > 0
    assert {Path(f).suffix for f in files} == {".zip", ".gif", ".mp4", ".npz"}
    assert "lerp" in status


def test_interpolate_images_and_errors(client, digit_png, text_file):
    gallery, *_, status = client.predict(DIGITS, "two images", 0, 0, handle_file(digit_png), handle_file(digit_png), 4, "",
                                         "slerp", [], 20, False, 8, False, api_name="/interpolate")
    assert len(gallery) == 4 and "slerp" in status
    assert "per-layer" in app_error(lambda: client.predict(DIGITS, "two seeds", 1, 2, None, None, 4, "", "auto", ["coarse"], 10, False,
                                                        8, False, api_name="/interpolate"))
    assert "not an image" in app_error(lambda: client.predict(DIGITS, "two images", 0, 0, handle_file(text_file), handle_file(digit_png),
                                                           4, "", "auto", [], 5, False, 8, False, api_name="/interpolate"))


def test_interpolate_refuses_bad_settings_with_one_log_line(client, capfd):
    capfd.readouterr()
    args = [DIGITS, "two seeds", 1, 2, None, None, 4, "", "auto", [], 10, False, 8, False]
    for i, value, message in [(7, "zz", "no latent space 'zz'"), (6, 2.5, "whole number"), (10, 3.5, "whole number")]:
        bad = list(args)
        bad[i] = value
        if i == 10:
            bad[1] = "two images"  # steps count for image endpoints, and are checked before the (missing) uploads
        assert message in app_error(lambda b=bad: client.predict(*b, api_name="/interpolate"))
    err = capfd.readouterr().err
    assert err.count("user error in interpolate:") == 3 and "Traceback" not in err


# ----- latent map ------------------------------------------------------------------------------
def test_latent_map_flow(client, digit_png):
    datasets, first_labels = client.predict(DIGITS, api_name="/map_datasets")
    names = [c[0] if isinstance(c, (list, tuple)) else c for c in datasets["choices"]]
    ds = next(n for n in names if "train" in n.lower() or "digits" in n.lower())
    labels = client.predict(DIGITS, ds, api_name="/map_labels")
    colour = labels["value"]
    plot, info = client.predict(DIGITS, ds, "pca", 2, colour, api_name="/map")
    assert "points" in info
    plot, info = client.predict(DIGITS, ds, "pca", "3", colour, api_name="/map")  # the API documents integers; "3" works too
    assert "points" in info
    assert "no label 'nope'" in app_error(lambda: client.predict(DIGITS, ds, "pca", 2, "nope", api_name="/map"))
    img, text, idx = client.predict(DIGITS, ds, "pca", 2, colour, 5, api_name="/map_decode_point")
    assert Image.open(img).size[0] >= 8 and "Point #5" in text and idx == 5
    img, text, idx = client.predict(DIGITS, ds, "pca", 2, colour, "7:123456", api_name="/map_click")
    assert "Point #7" in text
    img, text = client.predict(DIGITS, ds, "pca", 2, colour, 0.5, -0.5, 0, api_name="/map_decode_xy")
    assert "inverse PCA" in text
    gallery, plot = client.predict(DIGITS, ds, "pca", 2, colour, handle_file(digit_png), 5, 10, api_name="/map_neighbours")
    assert len(gallery) == 5
    assert "between 0 and" in app_error(lambda: client.predict(DIGITS, ds, "pca", 2, colour, 10**6, api_name="/map_decode_point"))


def test_concurrent_map_clicks_are_batched_and_each_visitor_gets_their_own_point(app, client, monkeypatch):
    """/map_click is batch=True: clicks queued while a decode runs go into one generate call (mixed models grouped),
    and each visitor gets their own point, in a file of their own session (another's would be a 404 to them)."""
    import threading
    import time

    import torch

    from core.images import enlarge, to_pil

    ctx = app[0].latent_lab
    sizes, started, release = [], threading.Event(), threading.Event()
    generate = ctx.executor.generate

    def held(model, latents, space=None):
        sizes.append(len(latents))
        started.set()
        release.wait(60)  # the first decode is held until the others have queued behind it
        return generate(model, latents, space)

    monkeypatch.setattr(ctx.executor, "generate", held)
    other = Client(app[0].local_url, verbose=False)
    try:
        ds_d = client.predict(DIGITS, api_name="/map_datasets")[0]["value"]
        ds_f = other.predict(FACES, api_name="/map_datasets")[0]["value"]
        jobs = [(client, DIGITS, ds_d, 4), (other, FACES, ds_f, 6), (client, DIGITS, ds_d, 9), (other, DIGITS, ds_d, 2)]
        pending = [jobs[0][0].submit(DIGITS, ds_d, "pca", 2, None, "4:0", api_name="/map_click")]
        assert started.wait(60)
        pending += [c.submit(name, ds, "pca", 2, None, f"{i}:{k}", api_name="/map_click") for k, (c, name, ds, i) in enumerate(jobs[1:])]
        deadline = time.monotonic() + 60
        while len(app[0]._queue) < 3 and time.monotonic() < deadline:  # the three clicks wait in the queue
            time.sleep(0.05)
        release.set()
        for (_, name, ds, i), job in zip(jobs, pending, strict=True):
            img, text, idx = job.result(timeout=120)  # the client downloads the image: another session's is a 404
            assert idx == i and f"Point #{i}" in text
            data = ctx.dataset(name, ds)
            expected = enlarge(to_pil(ctx.registry.get(name).generate(torch.as_tensor(data.latents[i : i + 1]), data.space))[0], 256)
            assert np.abs(np.asarray(Image.open(img), dtype=int) - np.asarray(expected, dtype=int)).max() <= 1
        assert sizes[0] == 1 and sorted(sizes[1:]) == [1, 2]  # then one batch: faces alone, the two digits together
    finally:
        release.set()
        other.close()


# ----- models tab ---------------------------------------------------------------------------------
def test_models_table_lists_everything(client):
    table, errors = client.predict(api_name="/models")
    rows = table["data"]
    ids = [r[0] for r in rows]
    assert DIGITS in ids and FACES in ids and "stylegan2/ffhq-256" in ids
    assert "All plugins loaded" in errors


def test_add_pickle_then_project_in_w_plus(client, digit_png):
    fixture = shared_path("fixtures", "stylegan", "ada_r32.pkl")
    note = client.predict(None, str(fixture), "Fixture SG2", False, api_name="/add_pickle")
    assert "Added" in note
    name = note.split("`")[1]
    target, recon, _, status, curve, files = client.predict(name, handle_file(digit_png), "w+", "mean", "auto", 5, False, 0,
                                                         api_name="/project")
    assert Image.open(next(f for f in files if f.endswith(".png"))).size == (32, 32) and "w+" in status
    assert "loss (ms-ssim+l1)" in status  # "auto" without vgg16.pt: the offline substitute for LPIPS, and the UI says so
    assert "noise maps" not in status and load_latent(next(f for f in files if f.endswith(".npz")))[1]["noise_maps"] == 0
    *_, status, curve, files = client.predict(name, handle_file(digit_png), "w+", "mean", "mse", 5, False, 0, True, api_name="/project")
    latent, info = load_latent(next(f for f in files if f.endswith(".npz")))
    assert "noise maps optimised" in status and info["noise_maps"] == 7 == len(info["noise"])  # 4, 8, 8, 16, 16, 32, 32 px
    assert [m.shape[-1] for m in info["noise"]] == sorted(m.shape[-1] for m in info["noise"])
    bad = shared_path("fixtures", "stylegan", "tamper_global_system.pkl")
    assert "not a usable StyleGAN network pickle" in app_error(lambda: client.predict(None, str(bad), "", False, api_name="/add_pickle"))


# ----- family --------------------------------------------------------------------------------------
def test_family_on_builtin_faces(client):
    dad = shared_path("data", "faces", "london", "neutral", "001_03.jpg")
    mum = shared_path("data", "faces", "london", "neutral", "002_03.jpg")
    fcrop, mcrop, note, ffaces, mfaces = client.predict(FACES, handle_file(str(dad)), handle_file(str(mum)), api_name="/family_align")
    assert Image.open(fcrop).size == (256, 256) and Image.open(mcrop).size == (256, 256)  # 64 px crops, enlarged for display
    fp, mp, status = client.predict(FACES, handle_file(str(dad)), handle_file(str(mum)), 30, api_name="/family_project")
    assert "projected" in status and "mse loss" in status
    note, extra = client.predict(FACES, api_name="/family_directions")
    assert "gender" in note and "held-out accuracy" in note
    args = [FACES, handle_file(str(dad)), handle_file(str(mum)), 30, 0.5, "blend", "blend", "blend", 0.0, 1.0, "expression", 0.5,
            0.2, 1, 3]
    gallery, files, status, fproj, mproj = client.predict(*args, api_name="/family_children")
    assert len(gallery) == 3 and "not a prediction" in status
    assert len([f for f in files if f.endswith(".npz")]) == 3
    video = client.predict(*args, 0, api_name="/family_morph")
    assert Path(video["video"] if isinstance(video, dict) else video).stat().st_size > 0


def test_family_no_face_message(client):
    zebra = shared_path("data", "faces", "photos", "singnet_zebra_stripes.jpg")
    msg = app_error(lambda: client.predict(FACES, handle_file(str(zebra)), None, api_name="/family_align"))
    assert "No face was found" in msg and "ather" in msg


def test_api_refuses_what_it_used_to_accept_silently(client, digit_png):
    """Fractional steps, an unknown space, an unknown direction, a non-face model on Family: each a plain error."""
    assert "whole number" in app_error(lambda: client.predict(DIGITS, handle_file(digit_png), "latent", "auto", "mse", 5.5, False, 0,
                                                           api_name="/project"))
    assert "no latent space 'w+'" in app_error(lambda: client.predict(DIGITS, handle_file(digit_png), "w+", "auto", "mse", 5, False, 0,
                                                                   api_name="/project"))
    dad = handle_file(str(shared_path("data", "faces", "london", "neutral", "001_03.jpg")))
    mum = handle_file(str(shared_path("data", "faces", "london", "neutral", "002_03.jpg")))
    for api, extra in (("/family_align", []), ("/family_project", [5])):
        assert "not a face model" in app_error(lambda api=api, extra=extra: client.predict(DIGITS, dad, mum, *extra, api_name=api))
    args = [dad, mum, 5, 0.5, "blend", "blend", "blend", 0.0, 0.0, "no-such-direction", 1.0, 0.2, 0, 2]
    assert "not a face model" in app_error(lambda: client.predict(DIGITS, *args, api_name="/family_children"))
    assert "No 'no-such-direction' direction" in app_error(lambda: client.predict(FACES, *args, api_name="/family_children"))


def test_family_one_bad_photo_does_not_block_the_other(client):
    zebra = handle_file(str(shared_path("data", "faces", "photos", "singnet_zebra_stripes.jpg")))
    mum = handle_file(str(shared_path("data", "faces", "london", "neutral", "002_03.jpg")))
    fcrop, mcrop, note, *_ = client.predict(FACES, zebra, mum, api_name="/family_align")
    assert fcrop is None and Image.open(mcrop).size == (256, 256) and "Father's photo: No face was found" in note
    fp, mp, status = client.predict(FACES, zebra, mum, 5, api_name="/family_project")
    assert fp is None and mp and "Mother projected" in status and "No face was found" in status


# ----- privacy ---------------------------------------------------------------------------------------
def test_uploads_are_deleted_when_the_session_ends(app, digit_png, tmp_path):
    import time

    demo, tmp = app
    mine = tmp_path / "mine.png"  # a file no other client sent (the same bytes would share one upload path)
    pixels = np.asarray(Image.open(digit_png)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(mine)
    c = Client(demo.local_url, verbose=False)
    c.predict(DIGITS, handle_file(str(mine)), "latent", "auto", "mse", 5, False, 0, api_name="/project")
    ctx = demo.latent_lab
    uploads = set(ctx.files._used[c.session_hash])
    folder = ctx.files._folders[c.session_hash]
    assert uploads and all(Path(p).exists() for p in uploads) and any(folder.iterdir())
    c.close()  # ends the heartbeat: Gradio runs the unload event
    deadline = time.time() + 20
    while time.time() < deadline and (folder.exists() or any(Path(p).exists() for p in uploads)):
        time.sleep(0.2)
    assert not any(Path(p).exists() for p in uploads), "an upload outlived its session"
    assert not folder.exists(), "a session's outputs outlived it"
    assert c.session_hash not in ctx._caches


# ----- launch options ------------------------------------------------------------------------------
def test_share_failure_keeps_serving_and_auth_protects(tmp_path, capsys):
    import urllib.error
    import urllib.request

    from demos.app import build_app, launch
    from plugins.registry import Registry

    demo = build_app(Registry().discover(None, use_entry_points=False))
    try:
        launch(demo, share=True, auth=["alice:secret"], block=False)
        err = capsys.readouterr().err
        if getattr(demo, "share_url", None) is None:  # offline (CI, this machine): a clear warning, still serving locally
            assert "share link could not be created" in err and demo.local_url in err
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(demo.local_url + "config", timeout=10)
        assert e.value.code == 401
        c = Client(demo.local_url, auth=("alice", "secret"), verbose=False)
        table, _ = c.predict(api_name="/models")
        assert any(r[0] == DIGITS for r in table["data"])
        c.close()
    finally:
        demo.close()
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        launch(build_app(Registry()), auth=["nopassword"], block=False)


def test_family_on_a_fixture_stylegan_w_plus(client):
    """The W+ path with a real-format StyleGAN pickle (random weights: images are noise, so check the mechanics)."""
    note = client.predict(None, str(shared_path("fixtures", "stylegan", "ada_r32.pkl")), "Fixture SG2 face", True,
                          api_name="/add_pickle")
    name = note.split("`")[1]
    dad = handle_file(str(shared_path("data", "faces", "london", "neutral", "005_03.jpg")))
    mum = handle_file(str(shared_path("data", "faces", "london", "neutral", "006_03.jpg")))
    fp, mp, status = client.predict(name, dad, mum, 20, api_name="/family_project")
    assert "w+" in status and "ms-ssim+l1 loss" in status  # the offline substitute for LPIPS, named

    def children(gene, variation, seed, n=2, coarse="blend"):
        gallery, files, *_ = client.predict(name, dad, mum, 20, gene, coarse, "blend", "blend", 0.0, 0.0, None, 0.0, variation,
                                           seed, n, api_name="/family_children")
        pngs = [np.asarray(Image.open(f)) for f in files if f.endswith(".png")]
        npz = [np.load(f, allow_pickle=False)["latent"] for f in files if f.endswith(".npz")]
        return pngs, npz

    pngs, lat = children(0.0, 0.0, 0)
    father_latent = lat[0]
    assert pngs[0].shape == (32, 32, 3) and lat[0].shape == (1, 8, 64)  # 8 w+ layers of 64
    father_view = np.asarray(Image.open(fp))[::8, ::8]  # the 32 px projection, shown 8x enlarged
    mother_view = np.asarray(Image.open(mp))[::8, ::8]
    assert np.abs(pngs[0].astype(int) - father_view).max() <= 1  # gene weight 0 = the father's projection
    pngs1, _ = children(1.0, 0.0, 0)
    assert np.abs(pngs1[0].astype(int) - mother_view).max() <= 1  # gene weight 1 = the mother's
    a, la = children(0.5, 0.4, 3)
    b, lb = children(0.5, 0.4, 3)
    c, lc = children(0.5, 0.4, 4)
    assert all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))  # same seed, same children
    assert not np.allclose(la[0], lc[0])
    _, dom = children(0.5, 0.0, 0, n=1, coarse="father")
    _, blend = children(0.5, 0.0, 0, n=1)
    # Coarse layers (0-1 of 8) given to the father are his; drawn, they take traits from both parents.
    assert np.allclose(dom[0][:, :2], father_latent[:, :2], atol=1e-4) and not np.allclose(blend[0][:, :2], father_latent[:, :2])
    assert not np.allclose(dom[0][:, 2:], father_latent[:, 2:])


def test_parents_photos_and_crops_are_gone_when_the_session_ends(app):
    """Family: uploads, aligned crops, projections and children exist during the session, nowhere after it."""
    import time

    demo, tmp = app
    dad = shared_path("data", "faces", "london", "neutral", "007_03.jpg")
    mum = shared_path("data", "faces", "london", "neutral", "008_03.jpg")
    c = Client(demo.local_url, verbose=False)
    c.predict(FACES, handle_file(str(dad)), handle_file(str(mum)), api_name="/family_align")
    c.predict(FACES, handle_file(str(dad)), handle_file(str(mum)), 5, 0.5, "blend", "blend", "blend", 0.0, 0.0, None, 0.0, 0.2,
              0, 2, api_name="/family_children")
    ctx = demo.latent_lab
    folder = ctx.files._folders[c.session_hash]
    uploads = set(ctx.files._used[c.session_hash])
    made = list(folder.iterdir())
    assert any("crop" in p.name for p in made) and any("child" in p.name for p in made) and len(uploads) >= 2
    assert ctx._caches[c.session_hash]  # the parents' projections, kept for slider moves
    photo_bytes = {dad.read_bytes(), mum.read_bytes()}
    c.close()
    deadline = time.time() + 20
    while time.time() < deadline and (folder.exists() or any(Path(p).exists() for p in uploads)):
        time.sleep(0.2)
    assert not folder.exists() and not any(Path(p).exists() for p in uploads)
    assert c.session_hash not in ctx._caches
    # Nothing anywhere in the app's file cache is a copy of either photo.
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size in {len(b) for b in photo_bytes}
                 and p.read_bytes() in photo_bytes]
    assert leftovers == []


def test_lpips_download_is_offered_and_fails_plainly_offline(client, monkeypatch):
    from plugins.stylegan import lpips

    choices = [c[0] for c in client.predict(api_name="/proj_losses")["choices"]]  # (the button is not part of the API)
    assert choices == ["auto", "mse", "ms-ssim+l1"]  # vgg16.pt is not in the test cache: no LPIPS yet, a download instead
    monkeypatch.setattr(lpips, "URL", "http://127.0.0.1:9/vgg16.pt")  # a closed port: fails at once, like no internet
    msg = app_error(lambda: client.predict(api_name="/proj_loss_download"))
    assert "127.0.0.1:9/vgg16.pt" in msg and str(lpips.weights_path()) in msg  # where to put the file by hand
    assert not lpips.weights_path().exists()
