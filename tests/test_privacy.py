"""Privacy rules checked in-process: crash leftovers, login guessing, server paths, private uploads, auth users."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from core import private_dir
from demos.login_guard import LoginGuard
from tests.conftest import ROOT, SHARED, app_error, restore_env, use_private_dirs

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

DIGITS = "small_ae/digits"


# ----- leftovers of a crashed run ---------------------------------------------------------------------------------
def test_only_crashed_runs_of_this_app_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed = private_dir.create(tmp_path)
    (crashed / private_dir.OWNER_FILE).write_text(f"{dead.pid} \n")  # its process is gone
    running = private_dir.create(tmp_path)  # this process: alive
    reused = private_dir.create(tmp_path)  # a live pid whose start time differs: the pid was reused
    (reused / private_dir.OWNER_FILE).write_text(f"{os.getppid()} 1\n")
    kept = private_dir.create(tmp_path, keep=True)
    (kept / private_dir.OWNER_FILE).write_text(f"{dead.pid} \n")
    no_owner = tmp_path / f"{private_dir.PREFIX}someone"
    no_owner.mkdir()
    other = tmp_path / "other_app_folder"
    other.mkdir()
    gone = private_dir.remove_stale(tmp_path)
    expected = {crashed} | ({reused} if private_dir._start_time(os.getppid()) not in ("", "1") else set())
    assert set(gone) == expected
    assert running.exists() and kept.exists() and no_owner.exists() and other.exists()
    assert not crashed.exists()


# ----- logins ---------------------------------------------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_repeated_failures_slow_down_then_lock_out():
    t = FakeTime()
    guard = LoginGuard({"alice": "secret", "bob": "pw"}, max_failures=5, lockout_s=300, base_delay_s=0.5,
                       clock=t.clock, sleep=t.sleep)
    run = asyncio.run
    assert run(guard.check("alice", "secret")) and t.slept == []
    for _ in range(4):
        assert not run(guard.check("alice", "guess"))
    assert t.slept == [0.5, 1.0, 2.0]  # each failure doubles the wait before the next answer
    assert not run(guard.check("alice", "guess"))  # the fifth failure locks the name
    assert not run(guard.check("alice", "secret"))  # the right password is refused while locked
    assert run(guard.check("bob", "pw"))  # other users are not locked out
    t.now += 301
    assert run(guard.check("alice", "secret"))
    assert not run(guard.check("nobody", "x")) and not run(guard.check("alice", ""))


def test_the_server_locks_a_user_out_after_repeated_failures():
    from demos.app import build_app, launch
    from plugins.registry import Registry

    guard = LoginGuard({"alice": "secret", "bob": "pw"}, max_failures=3, lockout_s=600, base_delay_s=0.01)
    demo = build_app(Registry().discover(None, use_entry_points=False))
    try:
        launch(demo, auth=["alice:secret", "bob:pw"], block=False, login_guard=guard)
        login = f"{demo.local_url}login"
        codes = [httpx.post(login, data={"username": "alice", "password": f"guess{i}"}).status_code for i in range(3)]
        assert codes == [400, 400, 400]
        assert httpx.post(login, data={"username": "alice", "password": "secret"}).status_code == 400  # locked
        assert httpx.post(login, data={"username": "bob", "password": "pw"}).status_code == 200
    finally:
        demo.close()


# ----- an app for the remaining tests ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An app with auth (alice, bob) and a models folder holding one pickle; a secret file lies beside that folder."""
    tmp = tmp_path_factory.mktemp("privacy")
    old = use_private_dirs(tmp)  # nothing downloaded there: no StyleGAN, no LPIPS weights
    models = tmp / "models"
    models.mkdir()
    (tmp / "secret.pkl").write_bytes(b"outside the models folder")
    (models / "link.pkl").symlink_to(tmp / "secret.pkl")  # a link leading out of the folder is not offered
    fixture = SHARED / "fixtures" / "stylegan" / "ada_r32.pkl"
    if fixture.exists():
        (models / "net.pkl").write_bytes(fixture.read_bytes())
    from demos.app import build_app, launch
    from plugins.registry import Registry

    demo = build_app(Registry().discover(None, use_entry_points=False), models_dir=models)
    launch(demo, auth=["alice:a-secret", "bob:b-secret"], block=False)
    yield demo, tmp
    demo.close()
    restore_env(old)


def test_server_paths_reveal_nothing_and_open_nothing(served):
    demo, tmp = served
    opened: list[str] = []

    def audit(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)  # (audit hooks cannot be removed; this one only appends to a list)
    c = Client(demo.local_url, auth=("alice", "a-secret"), verbose=False)
    try:
        messages = {text: app_error(lambda t=text: c.predict(None, t, "", False, api_name="/add_pickle"))
                    for text in ["/etc/shadow", "/no/such/file.pkl", "../secret.pkl", str(tmp / "secret.pkl"),
                                 "/root/.ssh/id_rsa", "link.pkl", "missing.pkl"]}
    finally:
        c.close()
    assert len(set(messages.values())) == 1, messages  # a missing path and an existing one outside: the same words
    assert "no such model in the models folder" in messages["/etc/shadow"]
    assert "shadow" not in messages["/etc/shadow"] and "secret" not in messages["/etc/shadow"]
    assert not [p for p in opened if "shadow" in p or "secret.pkl" in p or "id_rsa" in p]


def test_without_a_models_folder_no_path_is_taken():
    from demos.local_models import NO_SERVER_PATHS, server_pickle

    for text in ["/etc/shadow", "/no/such.pkl", "net.pkl"]:
        with pytest.raises(ValueError) as e:
            server_pickle(None, text)
        assert str(e.value) == NO_SERVER_PATHS


def test_an_uploaded_pickle_is_private_to_its_session(served):
    demo, _ = served
    fixture = SHARED / "fixtures" / "stylegan" / "ada_r32.pkl"
    if not fixture.exists():
        pytest.skip("shared fixtures not present")
    alice = Client(demo.local_url, auth=("alice", "a-secret"), verbose=False)
    bob = Client(demo.local_url, auth=("bob", "b-secret"), verbose=False)
    try:
        note = alice.predict(handle_file(str(fixture)), "", "Alice's net", False, api_name="/add_pickle")
        name = note.split("`")[1]
        assert "private to you" in note and name in [r[0] for r in alice.predict(api_name="/models")[0]["data"]]
        assert name not in [r[0] for r in bob.predict(api_name="/models")[0]["data"]]
        digit = Path(demo.latent_lab.files._root()) / "digit.png"
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(digit)
        assert "Unknown model" in app_error(lambda: bob.predict(name, handle_file(str(digit)), "w", "mean", "mse", 2, False, 0,
                                                             False, api_name="/project"))
        # A file of the operator's models folder is shared with everyone.
        note = bob.predict(None, "net.pkl", "", False, api_name="/add_pickle")
        shared = note.split("`")[1]
        assert shared in [r[0] for r in alice.predict(api_name="/models")[0]["data"]]
    finally:
        alice.close()
        bob.close()
    import time

    deadline = time.time() + 20
    while time.time() < deadline and name in demo.latent_lab.registry.entries:
        time.sleep(0.2)
    assert name not in demo.latent_lab.registry.entries  # gone with alice's session
    assert not any(Path(os.environ["GRADIO_TEMP_DIR"]).rglob("ada_r32.pkl"))


def test_another_auth_user_cannot_read_a_file_even_with_the_owner_cookie(served):
    demo, tmp = served
    photo = tmp / "alice_photo.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (32, 32), dtype=np.uint8)).save(photo)
    alice = Client(demo.local_url, auth=("alice", "a-secret"), verbose=False, download_files=False)
    try:
        target, *_ = alice.predict(DIGITS, handle_file(str(photo)), "latent", "auto", "mse", 3, False, 0, False,
                                   api_name="/project")
        url = target["url"]
        assert httpx.get(url, cookies=alice.cookies).status_code == 200
        with httpx.Client() as bob:
            assert bob.post(f"{demo.local_url}login", data={"username": "bob", "password": "b-secret"}).status_code == 200
            assert bob.get(url).status_code == 404
            bob.cookies.set("latent_lab_owner", alice.cookies["latent_lab_owner"])  # a stolen owner cookie
            assert bob.get(url).status_code == 404  # is still not alice's login
    finally:
        alice.close()


# ----- the README states the facts the code implements ---------------------------------------------------------------
def test_readme_privacy_section_states_what_the_code_does():
    from demos import login_guard

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Privacy", 1)[1].split("\n## ", 1)[0]
    assert f"{private_dir.IDLE_S // 60} minutes" in section  # the idle time stated is the one used
    assert f"{login_guard.MAX_FAILURES} wrong passwords" in section
    assert f"{login_guard.LOCKOUT_S // 60} minutes" in section
    for fact in ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL", "--keep-files", "--models-dir", "--allow-shared-uploads",
                 "next start", private_dir.PREFIX, "404"):
        assert fact in section, fact
    from core.image_input import MAX_FULL_DECODE_PIXELS, MAX_SIDE

    assert f"{MAX_SIDE} pixels" in section and f"{MAX_FULL_DECODE_PIXELS // 10**6} megapixels" in section
