"""A visitor's session as the tabs see it: its private folder and files, its in-memory values, its queue state.

The ownership rules themselves (who may read which file, when it is deleted) are ``demos/sessions.py``'s
:class:`~demos.sessions.SessionFiles`; this wraps them for handlers that hold a ``gr.Request``, turning a refused
request into one plain gr.Error, and ends sessions in the background (the reaper).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from core.private_dir import IDLE_S
from demos.sessions import SessionError, SessionFiles, owner_of, session_key

if TYPE_CHECKING:  # demos.serving imports the app's heavy machinery; only its types are needed here
    from demos.serving import FairTurns, HeavyThreads


class Sessions:
    """Per-session files and values. ``on_end`` callbacks run with the key of each session that ends (the model
    store drops the session's private models there)."""

    def __init__(self, idle_s: float = IDLE_S, keep_files: bool = False) -> None:
        self.idle_s = idle_s
        self.files = SessionFiles(lambda: Path(gr.utils.get_upload_folder()), idle_s=idle_s, keep_files=keep_files)
        self.on_end: list[Callable[[str], None]] = []
        # Set by the app at launch (demos.app, demos.serving): has a session's client gone; its queued event ids.
        self.gone: Callable[[str], bool] = lambda key: False
        self.queued: Callable[[str, tuple[str, ...]], set[str]] = lambda key, apis: set()
        # Set by build_app: heavy jobs take fair turns (per client) on threads ranked below light events.
        self.fair_turns: FairTurns | None = None
        self.heavy_threads: HeavyThreads | None = None
        self._lock = threading.Lock()
        self._caches: dict[str, dict] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._ended_count = 0  # sessions ended so far (the reaper hands memory back after some end)

    def key(self, request: gr.Request | None) -> str:
        """This request's session, checked: it must be the caller's own and not have ended."""
        key = session_of(request)
        try:
            self.files.touch(key, owner_of(request))
        except SessionError as e:
            raise gr.Error(str(e)) from e
        return key

    def session_dir(self, request: gr.Request | None) -> Path:
        """This session's private output folder (random name, inside Gradio's cache, served to its client only)."""
        try:
            return self.files.folder(session_of(request), owner_of(request))
        except SessionError as e:
            raise gr.Error(str(e)) from e

    def new_file(self, request: gr.Request | None, suffix: str, stem: str = "out") -> Path:
        return self.session_dir(request) / f"{stem}_{uuid.uuid4().hex[:10]}{suffix}"

    def save_image(self, request: gr.Request | None, image, stem: str = "image", min_side: int = 0) -> str:
        """Save a PIL image in the session folder; ``min_side`` upscales small images for display
        (nearest neighbour, so an 8x8 digit shows its real pixels)."""
        from core.images import enlarge  # (torch: not at start-up)

        path = self.new_file(request, ".png", stem)
        enlarge(image, min_side).save(path)
        return str(path)

    def own_input(self, request: gr.Request | None, path: str | None) -> str | None:
        """Accept a file input only from the client that uploaded (or made) it; it is deleted with the session.

        Another session's path, a path outside the app's folder typed into an API call, or a file already deleted
        all get the same plain message.
        """
        if path:
            try:
                self.files.use(path, session_of(request), owner_of(request))
            except SessionError as e:
                raise gr.Error(str(e)) from e
        return path

    def queued_events(self, request: gr.Request | None, apis: tuple[str, ...]) -> set[str]:
        """Ids of this session's events for ``apis`` still waiting in the queue."""
        return self.queued(session_of(request), apis)

    def client_gone(self, request: gr.Request | None) -> bool:
        """True once the client of this request has disconnected: its job should stop, nobody will see the result."""
        return request is not None and self.gone(session_of(request))

    def cache(self, request: gr.Request | None) -> dict:
        """In-memory values of one session (e.g. parents' projections); dropped when it ends."""
        key = self.key(request)
        with self._lock:
            return self._caches.setdefault(key, {})

    def end_session(self, request: gr.Request | None) -> None:
        """Delete this session's uploads, outputs and cached values (its tab closed); ``on_end`` does the rest."""
        self.end(session_of(request), owner_of(request))

    def end(self, key: str, owner=None) -> None:
        if not self.files.end(key, owner):
            return  # a request that named someone else's session
        self._ended_count += 1
        with self._lock:
            self._caches.pop(key, None)
        for callback in self.on_end:
            callback(key)

    def expire(self, busy: set[str] = frozenset()) -> list[str]:
        """End the sessions idle for ``idle_s`` (no open tab, no running job); run by the reaper."""
        ended = self.files.expire(busy)
        for key in ended:
            self.end(key)
        return ended

    def start_reaper(self, busy: Callable[[], set[str]] = set, after: Callable[[], None] | None = None) -> None:
        """Expire idle sessions in the background, every quarter of the idle time (at most every 30 s); ``after``
        runs when sessions have ended (e.g. to hand their memory back)."""
        if self._reaper is not None:
            return
        period = max(0.2, min(self.idle_s / 4, 30.0))
        seen = [self._ended_count]

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.expire(busy())
                    if after is not None and self._ended_count != seen[0]:  # tabs closed or sessions expired
                        seen[0] = self._ended_count
                        after()
                except Exception as e:  # the reaper must outlive anything a request left behind
                    print(f"warning: session clean-up failed: {e}", file=sys.stderr)

        self._reaper = threading.Thread(target=loop, name="latent-lab-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        """The app stops: no job writes anything more, and every session's files are deleted."""
        self._stop.set()
        if self.heavy_threads is not None:
            self.heavy_threads.close()
        self.files.close()
        with self._lock:
            keys = list(self._caches)
        for key in keys:
            self.end(key)


def session_of(request: gr.Request | None) -> str:
    """The session key of a request (Gradio's session hash; a request without one is a session of its own)."""
    return session_key(getattr(request, "session_hash", None))
