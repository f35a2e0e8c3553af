"""The directions each session taught in the browser (``core.teach.SessionDirections``), one store per app.

Kept in memory only and keyed by the session: the app's session-end hook (``Sessions.on_end``) calls
:meth:`TaughtStore.forget`, so a taught direction is gone with its session and never seen by another one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.teach import SessionDirections


class TaughtStore:
    """Session key -> that session's taught directions (created on first use)."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionDirections] = {}
        self._lock = threading.Lock()

    def of(self, key: str) -> SessionDirections:
        from core.teach import SessionDirections  # deferred: torch is not needed to start the app

        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = self._sessions[key] = SessionDirections()
            return found

    def forget(self, key: str) -> None:
        """The session ended: its directions are closed (any later add is refused) and dropped."""
        with self._lock:
            found = self._sessions.pop(key, None)
        if found is not None:
            found.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def session_directions(ctx, request) -> SessionDirections:
    """This request's session's taught directions (``ctx.taught``, registered on the session-end hook)."""
    return ctx.taught.of(ctx.sessions.key(request))
