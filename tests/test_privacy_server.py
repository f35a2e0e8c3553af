"""Privacy through the real server: ``python app.py`` in a subprocess with its own TMPDIR, on 127.0.0.1.

Counts every file the app leaves in its TMPDIR after each kind of stop, after REST calls go idle and after a client
is killed mid-job; and checks that one client can neither download nor reuse another client's files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from core import private_dir
from tests.server_process import ServerProcess, app_files, everything_in

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
DIGITS = "small_ae/digits"
IDLE = 3  # seconds: the short idle time these tests start the app with (the default is private_dir.IDLE_S)
STOP_S = 5  # a stop must not wait for open connections (a generous bound: the README's targets are 2 s and 3 s)


def _photo(folder: Path, name: str = "photo.png", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    return path


def _use_the_app(url: str, photo: Path) -> None:
    """One projection through gradio_client: an upload, previews, outputs; the client stays connected."""
    from gradio_client import Client, handle_file

    Client(url, verbose=False).predict(DIGITS, handle_file(str(photo)), "latent", "auto", "mse", 5, False, 0,
                                       api_name="/project")


def _wait(condition, timeout: float, step: float = 0.25) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# ----- every kind of stop ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig,background", [(signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGHUP, False)],
                         ids=["SIGTERM", "SIGINT-background", "SIGHUP"])
def test_a_stop_signal_leaves_no_file(tmp_path, sig, background):
    with ServerProcess(tmp_path / "tmp", ignore_sigint=background) as server:
        _use_the_app(server.url, _photo(tmp_path / "in"))
        made = app_files(server.tmpdir)
        assert any("latent_lab_sessions" in str(p) for p in made) and len(made) >= 5  # the photo, previews, outputs
        code = server.signal(sig)  # the client is still connected (its heartbeat stream is open)
    assert code == 128 + sig
    assert everything_in(server.tmpdir) == [], server.output()  # no file, and no folder (torch's inductor cache...)
    assert server.stop_s < STOP_S, server.stop_s


def test_a_stop_with_jobs_running_is_quick_and_leaves_nothing(tmp_path):
    from gradio_client import Client, handle_file

    photo = _photo(tmp_path / "in", seed=5)
    with ServerProcess(tmp_path / "tmp") as server:
        clients = [Client(server.url, verbose=False) for _ in range(2)]  # one job running, one waiting for its turn
        jobs = [c.submit(DIGITS, handle_file(str(photo)), "latent", "mean", "mse", 1000, False, 0, api_name="/project")
                for c in clients]
        assert _wait(lambda: any("latent_lab_sessions" in str(p) and "target" in p.name for p in app_files(server.tmpdir)),
                     timeout=60), server.output()  # the first job has started writing
        assert not jobs[0].done()
        assert server.signal(signal.SIGTERM) == 128 + signal.SIGTERM
    assert everything_in(server.tmpdir) == [], server.output()
    assert server.stop_s < STOP_S, server.stop_s
    assert "Traceback" not in server.output(), server.output()


def test_sigkill_then_restart_removes_the_crashed_runs_folder_and_nothing_else(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    not_ours = tmp / f"{private_dir.PREFIX}no_owner_file"  # our naming, but no owner file: never touched
    not_ours.mkdir()
    (not_ours / "keep.txt").write_text("someone else's")
    other = tmp / "unrelated"
    other.mkdir()
    (other / "keep.txt").write_text("someone else's")
    with ServerProcess(tmp) as first:
        _use_the_app(first.url, _photo(tmp_path / "in"))
        first.signal(signal.SIGKILL)
    left = [p for p in app_files(tmp) if "keep.txt" not in p.name]
    assert len(left) >= 5  # a crash cannot clean up after itself...
    with ServerProcess(tmp) as second:  # ...the next start does
        running = app_files(tmp)
        assert not any(p in running for p in left)
        assert (not_ours / "keep.txt").exists() and (other / "keep.txt").exists()
        assert second.signal(signal.SIGTERM) == 128 + signal.SIGTERM
    assert sorted(app_files(tmp)) == sorted([not_ours / "keep.txt", other / "keep.txt"])


def test_keep_files_is_the_only_way_to_keep_them(tmp_path):
    tmp = tmp_path / "tmp"
    with ServerProcess(tmp, "--keep-files") as server:
        _use_the_app(server.url, _photo(tmp_path / "in"))
        server.signal(signal.SIGTERM)
    kept = app_files(tmp)
    assert len(kept) >= 5 and "--keep-files" in server.output()
    with ServerProcess(tmp) as again:  # a later start leaves a kept folder alone
        assert all(p.exists() for p in kept)
        again.signal(signal.SIGTERM)


# ----- REST clients: idle expiry, and files that belong to their client -------------------------------------
def _call(http: httpx.Client, url: str, api: str, data) -> tuple[str, object]:
    """One /gradio_api/call/ request: ('complete' | 'error' | 'http <code>', the last event's data or the detail)."""
    r = http.post(f"{url}gradio_api/call/{api}", content=json.dumps({"data": data}),  # NaN/inf as JS literals
                  headers={"content-type": "application/json"})
    if r.status_code != 200:
        return f"http {r.status_code}", r.json().get("detail") if r.headers.get("content-type", "").startswith(
            "application/json") else r.text
    kind, payload = "", None
    with http.stream("GET", f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                payload = json.loads(line.split(":", 1)[1])
                break
    return kind, payload


def _upload(http: httpx.Client, url: str, photo: Path) -> str:
    return http.post(f"{url}gradio_api/upload", files={"files": (photo.name, photo.read_bytes())}).raise_for_status().json()[0]


def _file(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def test_rest_files_belong_to_their_client_and_expire_when_idle(tmp_path):
    with ServerProcess(tmp_path / "tmp", "--idle-timeout", str(IDLE)) as server, \
            httpx.Client(timeout=60) as alice, httpx.Client(timeout=60) as bob:  # each keeps its own cookie jar
        url = server.url
        uploaded = _upload(alice, url, _photo(tmp_path / "in", "alice.png", seed=1))
        kind, out = _call(alice, url, "project", [DIGITS, _file(uploaded), "latent", "auto", "mse", 5, False, 0, False, 512, True])
        assert kind == "complete", out
        target_url = out[0]["url"]
        assert alice.get(target_url).status_code == 200
        assert bob.get(target_url).status_code == 404  # another client holding the URL
        assert bob.get(f"{url}gradio_api/file={uploaded}").status_code == 404
        assert httpx.get(target_url).status_code == 404  # no cookie at all
        kind, msg = _call(bob, url, "project", [DIGITS, _file(uploaded), "latent", "auto", "mse", 5, False, 0, False, 512, True])
        assert kind == "error" and "not available to your session" in json.dumps(msg)  # alice's upload as bob's input
        files = [p for p in app_files(server.tmpdir) if p.name != private_dir.OWNER_FILE]
        assert len(files) >= 5
        # A refused call: its upload is deleted too.
        refused = _upload(bob, url, _photo(tmp_path / "in", "bob.txt.png", seed=2))
        Path(tmp_path / "notes.png").write_text("not an image")
        bad = _upload(bob, url, tmp_path / "notes.png")
        kind, _ = _call(bob, url, "project", [DIGITS, _file(bad), "latent", "auto", "mse", 5, False, 0, False, 512, True])
        assert kind == "error" and not Path(bad).exists()  # a refused image is deleted at once
        bad = _upload(bob, url, tmp_path / "notes.png")  # Family too: an upload that is no image goes at once
        kind, msg = _call(bob, url, "family_align", ["small_ae/faces", _file(bad), None, 0, 0])
        assert kind == "error" and "not an image" in json.dumps(msg) and not Path(bad).exists(), msg
        assert Path(refused).exists()  # uploaded but never used: goes when its client has been idle
        gone = _wait(lambda: [p.name for p in app_files(server.tmpdir)] == [private_dir.OWNER_FILE], timeout=IDLE * 6 + 10)
        assert gone, [str(p) for p in app_files(server.tmpdir)]
        assert alice.get(target_url).status_code == 404
        server.signal(signal.SIGTERM)
    assert app_files(server.tmpdir) == []


KILLED_CLIENT = r"""
import os, signal, sys
from gradio_client import Client, handle_file
job = Client(sys.argv[1], verbose=False).submit("small_ae/digits", handle_file(sys.argv[2]), "latent", "mean", "mse",
                                                 int(sys.argv[3]), False, 0, api_name="/project")
for _ in job:  # the first preview has arrived: die without a goodbye, mid-job
    print("preview", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_client_leaves_no_file_after_its_job_ends(tmp_path):
    from gradio_client import Client, handle_file

    photo = _photo(tmp_path / "in", seed=3)
    with ServerProcess(tmp_path / "tmp") as server:
        client = subprocess.run([sys.executable, "-c", KILLED_CLIENT, server.url, str(photo), "600"], timeout=120,
                                capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
        assert client.returncode == -signal.SIGKILL and "preview" in client.stdout, client.stderr
        # A second client's job queues behind the orphaned one (one heavy job at a time): when it is done, so is that.
        probe = Client(server.url, verbose=False)
        probe.predict(DIGITS, handle_file(str(_photo(tmp_path / "in", "probe.png", seed=4))), "latent", "mean", "mse", 2,
                      False, 0, api_name="/project")
        probe.close()  # its own files go with its session
        assert _wait(lambda: [p.name for p in app_files(server.tmpdir)] == [private_dir.OWNER_FILE], timeout=60), \
            [str(p) for p in app_files(server.tmpdir)]
        time.sleep(1)
        assert [p.name for p in app_files(server.tmpdir)] == [private_dir.OWNER_FILE]  # and nothing was recreated
        server.signal(signal.SIGTERM)
