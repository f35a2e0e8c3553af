"""Who owns which file, and when it is deleted.

A *client* is one browser (or API client) holding the private ``latent_lab_owner`` cookie that the app sets on its
first response (see ``demos/file_access.py``), together with its ``--auth`` user when there is one. A *session* is
one page load of that client (Gradio's ``session_hash``; every REST call without one is a session of its own).

- Uploads belong to the client that uploaded them; outputs to the session that made them (in a folder with a
  random name). A file is served, or accepted as an input, only for its owner: anyone else gets "not found".
- A session ends when its tab closes (the browser's heartbeat stops) or, for clients with no heartbeat (REST
  calls), after ``idle_s`` seconds without activity. Its outputs and the uploads it used are deleted then; so are
  uploads its client never used, once that client has no open tab left. An ended session writes nothing more.
- With ``keep_files`` nothing is deleted (debugging only).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core.private_dir import IDLE_S

OWNER_COOKIE = "latent_lab_owner"
ENDED_MEMORY_S = 24 * 3600  # how long an ended session's id is remembered (so a late job cannot revive it)


@dataclass(frozen=True)
class Owner:
    token: str | None
    user: str | None = None


class SessionError(PermissionError):
    """A request for a session or file that is not the caller's (or no longer exists); the message is for users."""


NOT_YOURS = "This file is not available to your session: upload it again."
ENDED = "This session has ended (its files were deleted): reload the page."


def owner_of(request) -> Owner | None:
    """The client behind a ``gr.Request``; None for direct calls (tests, the CLI), which are trusted."""
    if request is None:
        return None
    try:
        cookies = request.cookies
    except (AttributeError, TypeError):
        cookies = {}
    return Owner((cookies or {}).get(OWNER_COOKIE), getattr(request, "username", None))


def session_key(raw: str | None) -> str:
    """Gradio's session hash, reduced to safe characters (it comes from the client)."""
    key = "".join(c for c in str(raw or "") if c.isalnum() or c in "-_")[:64]
    return key or "no-session"


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class SessionFiles:
    """The bookkeeping behind the module doc; thread-safe. ``root`` is read on use (tests move it)."""

    def __init__(self, root: Callable[[], Path], idle_s: float = IDLE_S, keep_files: bool = False) -> None:
        self._root = root
        self.idle_s = float(idle_s)
        self.keep_files = keep_files
        self._lock = threading.Lock()
        self._owners: dict[str, Owner] = {}  # session -> its client (first request wins)
        self._folders: dict[str, Path] = {}  # session -> output folder
        self._used: dict[str, set[str]] = {}  # session -> uploads it used
        self._claims: dict[str, tuple[set[Owner], float]] = {}  # upload -> clients that uploaded it, time
        self._seen: dict[str, float] = {}  # session -> last activity
        self._live: dict[tuple[str, Owner], int] = {}  # open heartbeats per (session, client)
        self._ended: dict[str, float] = {}
        self.closed = False
        # Whether a client has a job running or still waiting for its turn (set by the app: demos/serving.FairTurns);
        # such a client is not gone, even when none of its sessions has touched anything yet.
        self.client_busy: Callable[[Owner], bool] = lambda owner: False

    def root(self) -> Path:
        """The app's private folder: every upload and output lives under it."""
        return self._root()

    # ----- sessions ----------------------------------------------------------------------------------------------
    def touch(self, key: str, owner: Owner | None) -> None:
        """Bind ``key`` to ``owner`` (the first caller) and note activity; refuses other clients and ended sessions."""
        with self._lock:
            self._check(key, owner)

    def _check(self, key: str, owner: Owner | None) -> None:
        if self.closed or key in self._ended:
            raise SessionError(ENDED)
        if owner is not None:
            bound = self._owners.setdefault(key, owner)
            if bound != owner:
                raise SessionError(NOT_YOURS)
        self._seen[key] = time.monotonic()

    def folder(self, key: str, owner: Owner | None) -> Path:
        """The session's output folder; created on first use, never again once the session has ended."""
        with self._lock:
            self._check(key, owner)
            if key not in self._folders:
                folder = self._root() / "latent_lab_sessions" / uuid.uuid4().hex
                folder.mkdir(parents=True, exist_ok=False, mode=0o700)
                self._folders[key] = folder
            return self._folders[key]

    def heartbeat(self, key: str, owner: Owner, delta: int) -> None:
        """A browser's heartbeat opened (+1) or closed (-1); sessions with one open never expire."""
        with self._lock:
            n = self._live.get((key, owner), 0) + delta
            if n > 0:
                self._live[(key, owner)] = n
            else:
                self._live.pop((key, owner), None)
                if key in self._owners or key in self._folders:
                    self._seen[key] = time.monotonic()

    def _is_live(self, key: str) -> bool:
        bound = self._owners.get(key)
        return any(k == key and (bound is None or o == bound) for k, o in self._live)

    def _client_live(self, owner: Owner) -> bool:
        return any(o == owner for _, o in self._live)

    # ----- files -------------------------------------------------------------------------------------------------
    def claim(self, paths: Iterable[str], owner: Owner) -> None:
        """Record freshly uploaded files as ``owner``'s (called by the upload route's middleware)."""
        now = time.monotonic()
        with self._lock:
            for p in paths:
                owners, _ = self._claims.get(_real(p), (set(), now))
                owners.add(owner)
                self._claims[_real(p)] = (owners, now)

    def _owns(self, real: str, owner: Owner) -> bool:
        if owner in self._claims.get(real, (set(), 0))[0]:
            return True
        for key, folder in self._folders.items():
            if _inside(real, _real(folder)):
                return self._owners.get(key) == owner
        return False

    def use(self, path: str, key: str, owner: Owner | None) -> None:
        """Accept ``path`` as an input of session ``key`` only if its client owns it; it is deleted with the session."""
        real = _real(path)
        with self._lock:
            self._check(key, owner)
            if owner is not None and not self._owns(real, owner):
                raise SessionError(NOT_YOURS)
            self._used.setdefault(key, set()).add(real)

    def may_serve(self, path: str, owner: Owner) -> bool | None:
        """True/False for a file inside the app's folder (served to its owner only); None for any other path."""
        real = _real(path)
        if not _inside(real, _real(self._root())):
            return None
        with self._lock:
            return self._owns(real, owner)

    def drop(self, path: str) -> None:
        """Delete one upload now (e.g. refused as an image), whoever else claimed it."""
        real = _real(path)
        with self._lock:
            self._claims.pop(real, None)
            for used in self._used.values():
                used.discard(real)
        if not self.keep_files:
            _unlink_upload(real)

    # ----- ending ------------------------------------------------------------------------------------------------
    def end(self, key: str, owner: Owner | None = None) -> bool:
        """Delete a session's outputs and the uploads only it used; False if ``owner`` is not its client."""
        with self._lock:
            bound = self._owners.get(key)
            if owner is not None and bound is not None and bound != owner:
                return False
            self._ended[key] = time.monotonic()
            folder = self._folders.pop(key, None)
            used = self._used.pop(key, set())
            self._owners.pop(key, None)
            self._seen.pop(key, None)
            for k in [k for k in self._live if k[0] == key]:
                del self._live[k]
            doomed = self._release(used, bound)
        if not self.keep_files:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            for p in doomed:
                _unlink_upload(p)
        return True

    def _release(self, used: set[str], owner: Owner | None) -> list[str]:
        """Uploads to delete once a session of ``owner`` has ended (lock held).

        The uploads the session used go at once; the client's other uploads once it has no session or open tab
        left. An upload that another session uses, or another client also sent (same content, same path), stays.
        """
        still_used = set().union(*self._used.values()) if self._used else set()
        client_gone = owner is None or (not self._client_live(owner) and owner not in self._owners.values()
                                        and not self.client_busy(owner))
        candidates = set(used)
        if owner is not None and client_gone:
            candidates |= {p for p, (owners, _) in self._claims.items() if owner in owners}
        doomed = []
        for p in candidates:
            owners = self._claims.get(p, (set(), 0.0))[0]
            owners.discard(owner)
            if owners or p in still_used:
                continue
            self._claims.pop(p, None)
            doomed.append(p)
        return doomed

    def expire(self, busy: set[str] = frozenset(), now: float | None = None) -> list[str]:
        """End sessions idle for ``idle_s`` with no open heartbeat and no running job; delete stale uploads."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [k for k, t in self._seen.items() if now - t >= self.idle_s and k not in busy and not self._is_live(k)]
            for k in [k for k, t in self._ended.items() if now - t > ENDED_MEMORY_S]:
                del self._ended[k]
        for k in idle:
            self.end(k)
        with self._lock:
            still_used = set().union(*self._used.values()) if self._used else set()
            stale = [p for p, (owners, t) in self._claims.items()
                     if now - t >= self.idle_s and p not in still_used
                     and not any(self._client_live(o) or self.client_busy(o) for o in owners)]
            for p in stale:
                del self._claims[p]
        if not self.keep_files:
            for p in stale:
                _unlink_upload(p)
        return idle

    def close(self) -> None:
        """The app stops: refuse further writes and delete every session's files."""
        with self._lock:
            self.closed = True
            keys = list(set(self._owners) | set(self._folders))
        for k in keys:
            self.end(k)
        with self._lock:
            claims = list(self._claims)
            self._claims.clear()
        if not self.keep_files:
            for p in claims:
                _unlink_upload(p)


def _unlink_upload(path: str) -> None:
    p = Path(path)
    p.unlink(missing_ok=True)
    try:  # Gradio stores each upload in its own hashed folder
        p.parent.rmdir()
    except OSError:
        pass
