"""The resumable, verified downloader against a local HTTP server (never the internet).

The server (http.server in a thread) serves fixture pickles with Range and
If-Range support, and can misbehave on demand: cut the body once, send fewer
bytes than Content-Length, ignore Range, answer an HTML page with 200, 404,
or never answer. It records every request so resumes can be checked.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from plugins.stylegan.download import DownloadError, check_pickle_stream, fetch, part_path, partial_bytes
from tests.conftest import shared_path

HAVE_LOADER = importlib.util.find_spec("plugins.stylegan.pickle_loader") is not None
CUT_AT = 1_000_000  # bytes sent before a cut (the fixture is 3.6 MB)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.log.append({"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")})
        spec = srv.routes.get(self.path)
        if spec is None:
            body = b"<html><body>404 Not Found</body></html>"
            self.send_response(404, "Not Found")
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        mode, data, etag = spec["mode"], spec["data"], spec.get("etag", '"v1"')
        if mode == "silent":  # accept, then never answer
            time.sleep(2.0)
            return
        start = 0
        rng = self.headers.get("Range")
        if_range_ok = mode == "no_if_range" or self.headers.get("If-Range") in (None, etag)
        if rng and mode != "ignore_range" and if_range_ok:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", spec.get("type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        stop = len(data)
        if mode == "cut_once" and not spec.get("cut_done"):
            spec["cut_done"] = True
            stop = CUT_AT
        elif mode == "truncate":  # always stops at CUT_AT (fewer bytes than Content-Length), then closes
            stop = CUT_AT
        elif mode == "reset_once" and not spec.get("cut_done"):  # abort with a TCP reset mid-body
            spec["cut_done"] = True
            self.wfile.write(data[:CUT_AT])
            self.wfile.flush()
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if start < stop:
            self.wfile.write(data[start:stop])
        self.wfile.flush()
        if stop < len(data):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # the misbehaving modes make the handler's own writes fail
    httpd.routes, httpd.log = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def pkl_bytes() -> bytes:
    return shared_path("fixtures", "stylegan", "ada_r32.pkl").read_bytes()


def _dest(cache: Path) -> Path:
    from plugins.stylegan.download import pickles_dir

    return pickles_dir() / "net.pkl"


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if not p.name.endswith(".lock"))


def _recorder():
    calls: list[tuple[int, int | None]] = []
    return calls, lambda done, total: calls.append((done, total))


def _fetch(server, dest, **kw):
    kw.setdefault("verify", check_pickle_stream)
    kw.setdefault("backoff_s", 0.0)
    kw.setdefault("timeout", (2.0, 2.0))
    return fetch(server.url + "/net.pkl", dest, **kw)


def test_download_reports_monotone_progress_and_writes_the_exact_file(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "normal", "data": pkl_bytes}
    dest = _dest(cache)
    calls, progress = _recorder()
    assert _fetch(server, dest, progress=progress) == dest
    assert dest.read_bytes() == pkl_bytes
    assert _leftovers(dest) == ["net.pkl"]  # no .part / .part.json left behind
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and dones[0] == 0 and len(calls) > 3
    assert calls[-1] == (len(pkl_bytes), len(pkl_bytes))
    assert {t for _, t in calls} == {len(pkl_bytes)}
    assert [r["range"] for r in server.log] == [None]
    # Already there: no second request.
    _fetch(server, dest)
    assert len(server.log) == 1


def test_cut_connection_resumes_from_the_partial_size(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "cut_once", "data": pkl_bytes, "etag": '"abc"'}
    dest = _dest(cache)
    calls, progress = _recorder()
    _fetch(server, dest, progress=progress)
    assert dest.read_bytes() == pkl_bytes
    assert [r["range"] for r in server.log] == [None, f"bytes={CUT_AT}-"]
    assert server.log[1]["if_range"] == '"abc"'  # resume is guarded by the validator
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and dones[-1] == len(pkl_bytes)
    assert (CUT_AT, len(pkl_bytes)) in calls  # the resumed transfer starts at the partial size
    assert _leftovers(dest) == ["net.pkl"]


def test_connection_reset_mid_body_resumes_from_what_was_written(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "reset_once", "data": pkl_bytes}
    dest = _dest(cache)
    _fetch(server, dest, chunk_size=1 << 16)
    assert dest.read_bytes() == pkl_bytes
    assert len(server.log) == 2 and server.log[0]["range"] is None
    resumed_at = int(server.log[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= CUT_AT  # bytes buffered but not yet written when the reset came are fetched again


def test_truncated_body_is_refused_but_keeps_a_resumable_prefix(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "truncate", "data": pkl_bytes}
    dest = _dest(cache)
    with pytest.raises(DownloadError) as err:
        _fetch(server, dest, retries=1)
    msg = str(err.value)
    assert "stopped after" in msg and server.url + "/net.pkl" in msg and str(dest) in msg and "resume" in msg
    assert not dest.exists()
    # The prefix kept is exactly the bytes received, so it cannot poison the next attempt.
    assert part_path(dest).read_bytes() == pkl_bytes[:CUT_AT]
    assert partial_bytes(dest) == (CUT_AT, len(pkl_bytes))
    assert [r["range"] for r in server.log] == [None, f"bytes={CUT_AT}-"]  # the one retry resumed too

    server.routes["/net.pkl"]["mode"] = "normal"
    server.log.clear()
    _fetch(server, dest)
    assert [r["range"] for r in server.log] == [f"bytes={CUT_AT}-"]
    assert dest.read_bytes() == pkl_bytes
    assert _leftovers(dest) == ["net.pkl"]


def test_server_that_ignores_range_restarts_from_zero(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "truncate", "data": pkl_bytes}
    dest = _dest(cache)
    with pytest.raises(DownloadError):
        _fetch(server, dest, retries=0)
    server.routes["/net.pkl"]["mode"] = "ignore_range"
    calls, progress = _recorder()
    _fetch(server, dest, progress=progress)
    assert server.log[-1]["range"] == f"bytes={CUT_AT}-"  # asked to resume, got the whole file (200)
    assert dest.read_bytes() == pkl_bytes  # not prefix + whole file
    assert calls[0] == (0, len(pkl_bytes)) and calls[-1] == (len(pkl_bytes), len(pkl_bytes))


def test_file_changed_on_server_is_not_glued_to_an_old_prefix(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "truncate", "data": pkl_bytes, "etag": '"old"'}
    dest = _dest(cache)
    with pytest.raises(DownloadError):
        _fetch(server, dest, retries=0)
    new = shared_path("fixtures", "stylegan", "sg3code_sg2_r32.pkl").read_bytes()
    server.routes["/net.pkl"] = {"mode": "normal", "data": new, "etag": '"new"'}
    _fetch(server, dest)
    assert server.log[-1]["if_range"] == '"old"'
    assert dest.read_bytes() == new


def test_changed_file_is_detected_by_its_size_when_the_server_ignores_if_range(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "truncate", "data": pkl_bytes}
    dest = _dest(cache)
    with pytest.raises(DownloadError):
        _fetch(server, dest, retries=0)
    new = shared_path("fixtures", "stylegan", "sg3_r_r32.pkl").read_bytes()
    assert len(new) != len(pkl_bytes)
    server.routes["/net.pkl"] = {"mode": "no_if_range", "data": new, "etag": '"new"'}
    _fetch(server, dest)
    assert [r["range"] for r in server.log[-2:]] == [f"bytes={CUT_AT}-", None]  # tail refused, whole file fetched
    assert dest.read_bytes() == new


def test_html_page_with_200_is_refused_and_nothing_is_kept(server, cache):
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>" * 50
    server.routes["/net.pkl"] = {"mode": "normal", "data": page, "type": "text/html"}
    dest = _dest(cache)
    with pytest.raises(DownloadError) as err:
        _fetch(server, dest)
    msg = str(err.value)
    assert "not a network pickle" in msg and "text/html" in msg and str(dest) in msg
    assert _leftovers(dest) == []


def test_complete_but_corrupt_pickle_fails_verification_and_is_deleted(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "normal", "data": pkl_bytes[: len(pkl_bytes) // 2]}  # honest length, broken file
    dest = _dest(cache)
    with pytest.raises(DownloadError) as err:
        _fetch(server, dest)
    assert "not a usable network pickle" in str(err.value) and "deleted" in str(err.value)
    assert _leftovers(dest) == []


def test_verifier_that_cannot_run_keeps_the_complete_part(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "normal", "data": pkl_bytes}
    dest = _dest(cache)

    def missing(path):
        raise ImportError("no loader")

    with pytest.raises(DownloadError, match="could not be checked"):
        _fetch(server, dest, verify=missing)
    assert part_path(dest).read_bytes() == pkl_bytes and not dest.exists()
    _fetch(server, dest)  # complete already: verified and renamed without another request
    assert len(server.log) == 1 and dest.read_bytes() == pkl_bytes


def test_unwritable_cache_gives_a_plain_message(server, cache, pkl_bytes, monkeypatch):
    server.routes["/net.pkl"] = {"mode": "normal", "data": pkl_bytes}
    dest = _dest(cache)
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):
        if str(file).endswith(".part") and "b" in mode and ("w" in mode or "a" in mode):
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(DownloadError, match="No space left on device"):
        _fetch(server, dest)
    assert not dest.exists()


def test_404_gives_a_clear_message(server, cache):
    dest = _dest(cache)
    with pytest.raises(DownloadError) as err:
        _fetch(server, dest)
    msg = str(err.value)
    assert "404" in msg and server.url + "/net.pkl" in msg and str(dest) in msg
    assert _leftovers(dest) == []


def test_server_down_gives_the_offline_message(cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/net.pkl"
    dest = _dest(cache)
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, verify=check_pickle_stream, timeout=(2.0, 2.0))
    msg = str(err.value)
    assert "refused" in msg and url in msg and str(dest) in msg and "by hand" in msg
    assert _leftovers(dest) == []


def test_dns_failure_gives_the_offline_message(cache, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # no real DNS query is made
    url = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"
    dest = _dest(cache)
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, verify=check_pickle_stream, retries=0)
    msg = str(err.value)
    assert "could not be resolved" in msg and url in msg and str(dest) in msg


def test_silent_server_times_out_with_a_message(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "silent", "data": pkl_bytes}
    dest = _dest(cache)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="did not answer in time"):
        _fetch(server, dest, timeout=(1.0, 0.5))
    assert time.perf_counter() - t0 < 1.9  # gave up on its read timeout, not the server's 2 s sleep
    assert _leftovers(dest) == []


def test_concurrent_downloads_of_one_file_fetch_it_once(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "normal", "data": pkl_bytes}
    dest = _dest(cache)
    errors: list[Exception] = []

    def run():
        try:
            _fetch(server, dest)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(server.log) == 1 and dest.read_bytes() == pkl_bytes


@pytest.mark.skipif(not HAVE_LOADER, reason="plugins.stylegan.pickle_loader is not written yet")
def test_default_verification_loads_with_the_safe_loader(server, cache, pkl_bytes):
    server.routes["/net.pkl"] = {"mode": "normal", "data": pkl_bytes}
    dest = _dest(cache)
    fetch(server.url + "/net.pkl", dest)  # verify=verify_network_pickle
    assert dest.read_bytes() == pkl_bytes


@pytest.mark.skipif(not HAVE_LOADER, reason="plugins.stylegan.pickle_loader is not written yet")
@pytest.mark.parametrize("name", ["tamper_global_system.pkl", "tamper_global_exec.pkl", "tamper_storage.pkl"])
def test_tampered_pickle_is_refused_without_running_it(server, cache, tmp_path, monkeypatch, name):
    marker = tmp_path / "marker"
    monkeypatch.setenv("SG2_PARITY_MARKER", str(marker))
    server.routes["/net.pkl"] = {"mode": "normal", "data": shared_path("fixtures", "stylegan", name).read_bytes()}
    dest = _dest(cache)
    with pytest.raises(DownloadError, match="not a usable network pickle"):
        fetch(server.url + "/net.pkl", dest)
    assert not marker.exists()
    assert _leftovers(dest) == []


def test_nothing_half_written_ever_has_the_final_name(server, cache, pkl_bytes):
    """Watch the final path while a download is cut and resumed: it appears once, complete."""
    server.routes["/net.pkl"] = {"mode": "cut_once", "data": pkl_bytes}
    dest = _dest(cache)
    seen: list[int] = []

    def progress(done, total):
        if dest.exists():
            seen.append(dest.stat().st_size)

    _fetch(server, dest, progress=progress)
    assert seen == [] and dest.read_bytes() == pkl_bytes
    assert os.stat(dest).st_size == len(pkl_bytes)
