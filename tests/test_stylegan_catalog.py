"""The StyleGAN catalog and plugin entries: complete, honest about licences, usable offline."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.card import ModelCard
from plugins.registry import ModelEntry, Registry
from plugins.stylegan import (
    NotDownloadedError,
    catalog_entry,
    checkpoint_path,
    get_models,
    local_model_entry,
    register_local_pickle,
)
from plugins.stylegan.catalog import CHECKPOINTS, DEFAULT, Checkpoint, checkpoint
from plugins.stylegan.download import check_pickle_stream
from tests.conftest import ROOT, shared_path

HAVE_MODEL = all(importlib.util.find_spec(f"plugins.stylegan.{m}") for m in ("pickle_loader", "weights", "model"))

REQUIRED = {
    "stylegan2/ffhq-256": "stylegan2-ffhq-256x256.pkl",
    "stylegan2/ffhq-512": "stylegan2-ffhq-512x512.pkl",
    "stylegan2/ffhq-1024": "stylegan2-ffhq-1024x1024.pkl",
    "stylegan2/celebahq-256": "stylegan2-celebahq-256x256.pkl",
    "stylegan3-r/ffhqu-256": "stylegan3-r-ffhqu-256x256.pkl",
    "stylegan3-t/ffhqu-256": "stylegan3-t-ffhqu-256x256.pkl",
    "stylegan2-ada/ffhq-1024": "ffhq.pkl",
    "stylegan2-ada/metfaces-1024": "metfaces.pkl",
    "stylegan2-ada/afhqcat-512": "afhqcat.pkl",
    "stylegan2-ada/afhqdog-512": "afhqdog.pkl",
    "stylegan2-ada/afhqwild-512": "afhqwild.pkl",
    "stylegan2/afhqv2-512": "stylegan2-afhqv2-512x512.pkl",
    "stylegan2/metfaces-1024": "stylegan2-metfaces-1024x1024.pkl",
}
HOSTS = {"api.ngc.nvidia.com", "nvlabs-fi-cdn.nvidia.com"}
LICENCE_URLS = {
    "https://github.com/NVlabs/stylegan3/blob/main/LICENSE.txt",
    "https://nvlabs.github.io/stylegan2-ada-pytorch/license.html",
}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_required_checkpoints_are_there_with_their_published_files():
    by_name = {c.name: c for c in CHECKPOINTS}
    for name, filename in REQUIRED.items():
        assert name in by_name, name
        assert by_name[name].filename == filename
        assert by_name[name].resolution == int(name.rsplit("-", 1)[1])
    assert DEFAULT in by_name
    assert checkpoint("stylegan3-t/ffhqu-256").config == "T" and checkpoint("stylegan3-r/ffhqu-256").config == "R"
    with pytest.raises(KeyError, match="Known:"):
        checkpoint("stylegan2/nope")


def test_urls_are_https_pickles_on_nvidia_hosts_and_unique():
    from urllib.parse import urlsplit

    for c in CHECKPOINTS:
        parts = urlsplit(c.url)
        assert parts.scheme == "https" and parts.hostname in HOSTS and c.url.endswith(".pkl"), c.url
        assert c.url.endswith("/" + c.filename)
    assert len({c.url for c in CHECKPOINTS}) == len(CHECKPOINTS)
    assert len({c.filename for c in CHECKPOINTS}) == len(CHECKPOINTS)  # one cache folder holds them all
    assert len({c.name for c in CHECKPOINTS}) == len(CHECKPOINTS)


def test_cards_state_the_non_commercial_licence_and_no_invented_facts():
    titles = set()
    for c in CHECKPOINTS:
        card = c.card()
        assert isinstance(card, ModelCard) and card.name == c.name
        assert card.commercial_use is False
        assert card.licence.startswith("NVIDIA Source Code License") and card.licence_url in LICENCE_URLS
        assert card.source == c.url and card.resolution == c.resolution
        assert card.trained_on and card.description and "NVIDIA" in card.attribution
        assert "non-commercial" in card.to_markdown() and "non-commercial" in card.caption()
        assert c.size_bytes is None and c.sha256 is None  # never measured: left unknown
        titles.add(card.title)
    assert len(titles) == len(CHECKPOINTS)  # the UI can tell them apart
    ada = checkpoint("stylegan2-ada/ffhq-1024").card()
    assert ada.licence_url == "https://nvlabs.github.io/stylegan2-ada-pytorch/license.html"


def test_face_models_are_tagged_for_the_family_tab():
    faces = {c.name for c in CHECKPOINTS if "faces" in c.tags}
    assert {"stylegan2/ffhq-256", "stylegan2/celebahq-256", "stylegan3-t/ffhqu-256", "stylegan2-ada/metfaces-1024"} <= faces
    assert not any("afhq" in n for n in faces)


def test_get_models_works_offline_in_an_empty_cache(cache, no_network):
    entries = get_models()
    assert all(isinstance(e, ModelEntry) for e in entries)
    assert [e.name for e in entries][: len(CHECKPOINTS)] == [c.name for c in CHECKPOINTS]
    assert {e.status() for e in entries} == {"not downloaded"}
    reg = Registry()
    for e in entries:
        reg.add(e, "plugins.stylegan")
    assert "stylegan2/ffhq-256" in reg.names(tag="faces") and "stylegan2/afhqv2-512" not in reg.names(tag="faces")


def test_plugin_listing_imports_neither_torch_nor_requests(tmp_path):
    code = (
        "import sys, time; t = time.perf_counter(); from plugins.stylegan import get_models; n = len(get_models()); "
        "import json; print(json.dumps([n, 'torch' in sys.modules, 'requests' in sys.modules, time.perf_counter() - t]))"
    )
    env = {"LATENT_LAB_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    n, torch_loaded, requests_loaded, seconds = json.loads(out.stdout)
    assert n == len(CHECKPOINTS) and not torch_loaded and not requests_loaded
    print(f"get_models(): {n} entries in {seconds * 1000:.0f} ms")


def test_discovery_finds_the_plugin_without_errors(cache, no_network):
    reg = Registry().discover(use_entry_points=False)
    assert not [e for e in reg.errors if "stylegan" in e.plugin]
    assert reg.status("stylegan2/ffhq-256") == "not downloaded"


def test_status_turns_ready_when_the_file_is_placed_and_load_explains_otherwise(cache, no_network):
    c = checkpoint("stylegan2/ffhq-256")
    entry = catalog_entry(c)
    with pytest.raises(NotDownloadedError) as err:
        entry.load()
    msg = str(err.value)
    assert "not downloaded yet" in msg and "press Download" in msg and str(checkpoint_path(c)) in msg and c.url in msg
    reg = Registry()
    reg.add(entry)
    with pytest.raises(RuntimeError, match="not downloaded yet"):
        reg.get(c.name)
    checkpoint_path(c).write_bytes(b"placed by hand")
    assert entry.status() == "ready"
    assert catalog_entry(checkpoint("stylegan2/ffhq-512")).status() == "not downloaded"


def _local_server(data: bytes):
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd


def test_entry_download_fetches_into_the_cache_with_progress(cache):
    data = shared_path("fixtures", "stylegan", "ada_r32.pkl").read_bytes()
    httpd = _local_server(data)
    try:
        c = Checkpoint(
            "stylegan2/test-32", "stylegan2", f"http://127.0.0.1:{httpd.server_address[1]}/t.pkl", 32, "ffhq", "stylegan3"
        )
        entry = catalog_entry(c)
        assert entry.status() == "not downloaded"
        calls = []
        path = entry.download(lambda d, t: calls.append((d, t)), verify=check_pickle_stream)
        assert path == checkpoint_path(c) and path.read_bytes() == data
        assert entry.status() == "ready" and calls[-1] == (len(data), len(data))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_local_pickle_entry_checks_the_file(cache, tmp_path):
    src = tmp_path / "my net!.pkl"
    shutil.copyfile(shared_path("fixtures", "stylegan", "ada_r32.pkl"), src)
    entry = local_model_entry(src, verify=check_pickle_stream)
    assert entry.name.startswith("stylegan/local/my-net-") and entry.status() == "ready"
    assert entry.card.commercial_use is False and "unknown" in entry.card.licence
    assert local_model_entry(src, verify=check_pickle_stream).name == entry.name  # content-based name
    with pytest.raises(ValueError, match="No file at"):
        local_model_entry(tmp_path / "missing.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"<html>not a pickle</html>")
    with pytest.raises(ValueError, match="bad.pkl is not a usable StyleGAN network pickle"):
        local_model_entry(bad, verify=check_pickle_stream)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        local_model_entry(empty)


def test_uploaded_pickle_is_copied_and_listed_at_the_next_start(cache, tmp_path):
    upload = tmp_path / "upload.pkl"
    shutil.copyfile(shared_path("fixtures", "stylegan", "ada_r32.pkl"), upload)
    reg = Registry()
    name = register_local_pickle(upload, reg, title="My faces", tags=("faces",), verify=check_pickle_stream)
    assert name in reg.entries
    assert register_local_pickle(upload, reg, verify=check_pickle_stream) == name  # twice: same entry, no error
    assert name in reg.names(tag="faces") and reg.entry(name).card.title == "My faces"
    upload.unlink()  # the upload's temporary file goes away
    assert reg.status(name) == "ready"
    relisted = {e.name: e for e in get_models()}[name]  # the next start
    assert relisted.card.title == "My faces" and "faces" in relisted.tags and relisted.status() == "ready"
    assert not list((cache / "stylegan" / "local").glob("*.part"))


@pytest.mark.skipif(not HAVE_MODEL, reason="the StyleGAN loader / model are not written yet")
def test_downloaded_checkpoint_loads_as_a_latent_model(cache):
    data = shared_path("fixtures", "stylegan", "ada_r32.pkl").read_bytes()
    httpd = _local_server(data)
    try:
        c = Checkpoint(
            "stylegan2/test-32", "stylegan2", f"http://127.0.0.1:{httpd.server_address[1]}/t.pkl", 32, "ffhq", "stylegan3"
        )
        entry = catalog_entry(c)
        entry.download()  # verified by the safe loader
        model = entry.load()
        assert model.card.name == c.name and model.image_size == 32
        w = model.sample(2, seed=0, space="w")
        images = model.generate(w, "w")
        assert tuple(images.shape) == (2, 3, 32, 32)
    finally:
        httpd.shutdown()
        httpd.server_close()
    # The user deletes the pickle: the safetensors copy made at the first load still serves.
    checkpoint_path(c).unlink()
    assert entry.status() == "ready"
    again = entry.load()
    assert (again.generate(w, "w") - images).abs().max().item() == 0.0
    # ...until that copy goes too.
    for folder in (cache / "stylegan").glob("*-v*"):
        shutil.rmtree(folder)
    assert entry.status() == "not downloaded"
    with pytest.raises(NotDownloadedError):
        entry.load()


@pytest.mark.skipif(not HAVE_MODEL, reason="the StyleGAN loader / model are not written yet")
def test_tampered_local_pickle_is_refused(cache, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("SG2_PARITY_MARKER", str(marker))
    reg = Registry()
    with pytest.raises(ValueError, match="not a usable StyleGAN network pickle"):
        register_local_pickle(shared_path("fixtures", "stylegan", "tamper_global_system.pkl"), reg)
    assert not reg.entries and not marker.exists()
    assert not list((cache / "stylegan" / "local").glob("*.pkl"))


@pytest.mark.skipif(not HAVE_MODEL, reason="the StyleGAN loader / model are not written yet")
def test_local_pickle_loads_through_the_registry(cache, tmp_path):
    src = tmp_path / "mine.pkl"
    shutil.copyfile(shared_path("fixtures", "stylegan", "sg3_r_r32.pkl"), src)
    reg = Registry()
    name = register_local_pickle(src, reg, copy=False)  # verified by the safe loader
    entry = reg.entry(name)
    assert entry.card.resolution == 32 and entry.status() == "ready"
    model = reg.get(name)
    assert model.image_size == 32 and model.card is entry.card


@pytest.mark.skipif(not HAVE_MODEL, reason="the StyleGAN loader / model are not written yet")
def test_wrong_file_placed_by_hand_is_named_as_such(cache):
    c = checkpoint("stylegan2/ffhq-256")
    shutil.copyfile(shared_path("fixtures", "stylegan", "ada_r32.pkl"), checkpoint_path(c))
    assert catalog_entry(c).status() == "ready"
    with pytest.raises(ValueError, match=r"holds a 32 px generator, but stylegan2/ffhq-256 is 256 px"):
        catalog_entry(c).load()
