"""The session store's rules, without a server: ownership, ending, idle expiry, shared uploads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from demos.sessions import Owner, SessionError, SessionFiles

A, B = Owner("a" * 32), Owner("b" * 32)


@pytest.fixture
def store(tmp_path):
    return SessionFiles(lambda: tmp_path, idle_s=60)


def _upload(tmp_path: Path, name: str) -> str:
    folder = tmp_path / name.replace(".", "_")
    folder.mkdir()
    (folder / name).write_bytes(b"photo")
    return str(folder / name)


def test_an_ended_session_cannot_write_again(store):
    folder = store.folder("s1", A)
    (folder / "preview.png").write_bytes(b"x")
    assert store.end("s1", A)
    assert not folder.exists()
    with pytest.raises(SessionError, match="ended"):
        store.folder("s1", A)  # a job still running for it gets an error, not a new folder
    assert not folder.exists()


def test_sessions_and_files_belong_to_their_client(store, tmp_path):
    up = _upload(tmp_path, "a.png")
    store.claim([up], A)
    store.folder("s1", A)
    with pytest.raises(SessionError):
        store.folder("s1", B)  # B naming A's session
    with pytest.raises(SessionError):
        store.use(up, "s2", B)  # B naming A's upload as input
    assert store.may_serve(up, A) is True and store.may_serve(up, B) is False
    out = store.folder("s1", A) / "out.png"
    assert store.may_serve(str(out), A) is True and store.may_serve(str(out), B) is False
    assert store.may_serve(str(tmp_path / "unknown.png"), A) is False  # in the app's folder but nobody's
    assert store.may_serve("/etc/hostname", A) is None  # not the app's: Gradio's own rules apply
    assert not store.end("s1", B) and store.folder("s1", A).exists()  # B cannot end A's session either


def test_rest_sessions_expire_when_idle_but_not_while_a_tab_is_open_or_a_job_runs(store, tmp_path):
    up = _upload(tmp_path, "a.png")
    store.claim([up], A)
    store.use(up, "rest", A)
    rest = store.folder("rest", A)
    store.folder("tab", B)
    store.heartbeat("tab", B, +1)
    now = time.monotonic()
    assert store.expire(now=now + 30) == []  # not idle long enough
    assert store.expire(busy={"rest"}, now=now + 61) == []  # its job is still queued or running
    assert store.expire(now=now + 61) == ["rest"]
    assert not rest.exists() and not Path(up).exists()
    assert store.folder("tab", B).exists()  # the open tab keeps its session


def test_an_upload_two_clients_sent_stays_until_both_are_done(store, tmp_path):
    up = _upload(tmp_path, "same.png")  # Gradio names uploads by content: the same photo, the same path
    store.claim([up], A)
    store.claim([up], B)
    store.use(up, "sa", A)
    store.use(up, "sb", B)
    store.end("sa", A)
    assert Path(up).exists()
    store.end("sb", B)
    assert not Path(up).exists()


def test_unused_uploads_go_when_their_client_has_no_session_left(store, tmp_path):
    used, unused = _upload(tmp_path, "used.png"), _upload(tmp_path, "unused.png")
    store.claim([used, unused], A)
    store.use(used, "s1", A)
    store.heartbeat("s1", A, +1)
    store.heartbeat("s1", A, -1)
    store.end("s1", A)
    assert not Path(used).exists() and not Path(unused).exists()


def test_a_clients_uploads_outlive_its_ended_session_while_it_has_a_job_waiting(store, tmp_path):
    """A REST client's first session ends while its next job still waits for its turn (it has touched nothing yet):
    the upload that job will use must not be deleted as "the client is gone"."""
    first, waiting = _upload(tmp_path, "first.png"), _upload(tmp_path, "next.png")
    store.claim([first, waiting], A)
    store.use(first, "s1", A)
    jobs = {A}
    store.client_busy = lambda owner: owner in jobs
    store.end("s1", A)
    assert not Path(first).exists() and Path(waiting).exists()  # the used one goes, the waiting job's stays
    store.use(waiting, "s2", A)  # the waiting job starts and takes its input
    jobs.clear()
    store.end("s2", A)
    assert not Path(waiting).exists()
