"""``--auth`` logins that slow down and then lock out password guessing.

Gradio accepts a coroutine as ``launch(auth=...)``; this one checks the password in constant time and, per user
name, waits a little longer after each recent failure (``BASE_DELAY_S`` doubling, at most ``MAX_DELAY_S``), and
after ``MAX_FAILURES`` failures within ``WINDOW_S`` refuses every attempt for that name, right or wrong, for
``LOCKOUT_S`` seconds. All names share one extra counter, so spraying many names is slowed down too. The waits are
``asyncio.sleep``: they never block other users' requests.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

MAX_FAILURES = 5
WINDOW_S = 15 * 60
LOCKOUT_S = 5 * 60
BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0
ANY_USER = "\0any"  # the shared counter's key (no real user name contains NUL)


class LoginGuard:
    """The login checker behind ``launch(auth=guard.gradio_auth())``; the clock and sleep are injectable for tests."""

    def __init__(self, users: dict[str, str], max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 lockout_s: float = LOCKOUT_S, base_delay_s: float = BASE_DELAY_S, max_delay_s: float = MAX_DELAY_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.users = dict(users)
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.base_delay_s, self.max_delay_s = base_delay_s, max_delay_s
        self.clock, self.sleep = clock, sleep
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        self._failures[key] = times
        return times

    def delay(self, username: str) -> float:
        """Seconds the next attempt for ``username`` waits before it is answered."""
        now = self.clock()
        n = max(len(self._recent(username, now)), len(self._recent(ANY_USER, now)) // self.max_failures)
        return 0.0 if n == 0 else min(self.base_delay_s * 2 ** (n - 1), self.max_delay_s)

    def locked(self, username: str) -> bool:
        return self.clock() < self._locked_until.get(username, float("-inf"))

    def gradio_auth(self) -> Callable[[str, str], Awaitable[bool]]:
        """A plain coroutine function for ``launch(auth=...)``: Gradio awaits only what
        ``inspect.iscoroutinefunction`` recognises (an object's async ``__call__`` would be taken as always true)."""

        async def auth(username: str, password: str) -> bool:
            return await self.check(username, password)

        return auth

    async def check(self, username: str, password: str) -> bool:
        """True for a right password of a user who is not locked out; waits first after recent failures."""
        wait = self.delay(username)
        if wait:
            await self.sleep(wait)
        if self.locked(username):
            return False
        expected = self.users.get(username)
        ok = hmac.compare_digest((password or "").encode(), (expected or "").encode()) and expected is not None
        now = self.clock()
        if ok:
            self._failures.pop(username, None)
            return True
        for key in (username, ANY_USER):
            self._recent(key, now).append(now)
        if len(self._failures[username]) >= self.max_failures:
            self._locked_until[username] = now + self.lockout_s
            self._failures[username] = []
        return False
