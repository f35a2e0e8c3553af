"""Fair serving of one app to many visitors: concurrency groups, fair turns for heavy jobs, a plain queue-full
message, and knowing when a client has gone.

Why: with one queue a short face alignment waits behind other visitors' 1000-step projections. Light events (model
cards, alignment, decoding one point, lists) therefore run in their own group (``LIGHT``) with room for many at
once. Heavy jobs (``HEAVY``: projections, maps, Family, interpolation) share ``--concurrency`` slots through
:class:`FairTurns`: a *visitor* (one browser or API client: its owner cookie and ``--auth`` user, or its address when
it sends no cookie) has at most one heavy job running and ``MAX_WAITING`` waiting, and waiting jobs are served in
turns across visitors, not first come: twenty jobs queued by one client delay a newcomer by one job, not twenty. A job
whose client has disconnected stops within a step or a yield, or leaves the line before it starts.

Why one file (over 450 lines): who a visitor is, the fair line, the concurrency groups and the queue's messages are
one admission policy; a change to one (a new limit, a new group) is checked against the others here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import ctypes.util
import functools
import gc
import inspect
import os
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie

import gradio as gr

from demos.common import HEAVY, LIGHT
from demos.sessions import OWNER_COOKIE, owner_of, session_key

QUEUE_SIZE = 64  # queued events (all groups) before new ones are refused with BUSY
BUSY = "Busy: {n} requests are ahead of you. Please try again in a minute."
MAX_WAITING = 2  # heavy jobs one visitor may have waiting behind its running one
# Heavy jobs waiting from one address (all its cookies together) before more are refused: most of the queue, so a
# crowd behind one NAT or proxy (or 20 local test visitors) is served, and one address still cannot hold all of it.
NETWORK_WAITING = 48
ADMITTED = QUEUE_SIZE  # heavy events Gradio hands to their handlers at once; FairTurns decides which of them work
ONE_AT_A_TIME = ("You already have a job running and {waiting} waiting: wait for one to finish, or press Stop, "
                 "then try again.")
NETWORK_BUSY = "Busy: {n} jobs from your network are already waiting. Please try again in a minute."
STOPPED_WAITING = "Stopped before it started: it was still waiting for its turn."
CLIENT_GONE = "The client disconnected before its job started."
WAITING = "Waiting for your turn: {n} {visitors} ahead of you"


def cpu_count() -> int:
    """Cores this process may use (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_concurrency() -> int:
    """Heavy jobs at once: one per GPU (a GPU runs one job fastest), else one per 4 cores (torch already uses
    several cores per job; more jobs only share the same cores and all finish later)."""
    try:
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count())
    except ImportError:
        pass
    return max(1, cpu_count() // 4)


def light_concurrency() -> int:
    """Light events at once: they are short, so enough that a crowd does not queue behind one another."""
    return max(4, 2 * cpu_count())


def share_cores() -> int:
    """On CPU, heavy jobs' torch keeps one core free for light events (``cores - 1`` threads, at least 1): else a
    projection's threads take every core and a quick model card waits for them. Returns torch's thread count."""
    import torch

    from core.device import get_device

    if get_device().type == "cpu" and cpu_count() >= 2:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpu_count() - 1)))
    return torch.get_num_threads()


def assign_groups(demo: gr.Blocks, heavy: int, light: int) -> None:
    """Put every event in its group: ``HEAVY`` ones keep theirs, with ``heavy`` events let into their handlers at once
    (there :class:`FairTurns` gates the work), events with their own limit (downloads, Stop buttons) stay as they
    are, the rest join ``LIGHT``."""
    for fn in demo.fns.values():
        if fn.concurrency_id == HEAVY:
            fn.concurrency_limit = heavy
        elif fn.concurrency_limit == "default" and fn.concurrency_id == str(id(fn.fn)):
            fn.concurrency_id = LIGHT
            fn.concurrency_limit = light


HEAVY_NICE = 10  # how far below the front-end the OS ranks heavy work (Linux nice: 10 gets ~1/10 of a busy core's share)


def _advance(gen) -> tuple[bool, object]:
    try:
        return False, next(gen)
    except StopIteration:
        return True, None


class HeavyThreads:
    """Threads the OS ranks below the rest of the app (``nice`` +10), for heavy jobs' work.

    Why: on a CPU server a projection keeps a core busy, and a visitor's quick model card, face alignment or the
    server's own HTTP work then waits for its turn on the cores. A heavy handler's body runs here (each step of a
    stream in turn), so the OS serves those first and heavy jobs take what is left. A thread's nice cannot be lowered
    again without privileges, so these threads are kept for heavy work only; ``nice`` 0 (or a system that refuses)
    leaves them at the app's own priority."""

    def __init__(self, n: int, nice: int = HEAVY_NICE) -> None:
        self.niced: list[bool] = []
        self.pool = ThreadPoolExecutor(max(1, n), thread_name_prefix="latent-lab-heavy", initializer=self._lower,
                                       initargs=(nice,))

    def _lower(self, nice: int) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
            self.niced.append(nice > 0)
        except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the app
            self.niced.append(False)

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        """``fn(*args, **kwargs)`` on a heavy thread, in the caller's context (Gradio's request and progress live in
        it). Once the app is stopping (pool shut down) it runs here instead, so a stream's clean-up still runs."""
        context = contextvars.copy_context()
        try:
            return self.pool.submit(context.run, fn, *args, **kwargs)
        except RuntimeError:
            done: Future = Future()
            try:
                done.set_result(context.run(fn, *args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to whoever awaits the future
                done.set_exception(e)
            return done

    async def astream(self, gen, after: Callable[[], None] = lambda: None):
        """The items of the sync generator ``gen``, each step computed on a heavy thread while the event loop waits.
        However the stream ends (exhausted, failed, closed at a yield by a Stop, cancelled mid-step), ``gen`` is
        closed on a heavy thread once its step in progress has finished, then ``after()`` runs: a heavy slot is
        freed only when its work has really stopped."""
        step: Future | None = None
        try:
            while True:
                step = self.submit(_advance, gen)
                finished, item = await asyncio.wrap_future(step)
                if finished:
                    return
                yield item
        finally:
            last = step

            def close() -> None:
                try:
                    if last is not None and not last.cancelled():
                        with contextlib.suppress(BaseException):
                            last.result()  # a step still running (the stream was cancelled mid-step)
                    gen.close()  # the handler's own clean-up, on its thread
                finally:
                    after()

            self.submit(close)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


# ----- fair turns for heavy jobs ---------------------------------------------------------------------------------
COOKIE_SENT = "latent_lab.owner_cookie_sent"  # request scope key: did the client itself send an owner cookie?
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # an owner cookie the file-access middleware keeps (else replaces)


class CookieSent:
    """ASGI middleware, installed outside the file-access one: notes in the request's scope whether the client sent
    its own owner cookie. The file-access middleware gives a client without one a fresh cookie on every request, so
    a client that keeps none (raw HTTP) would otherwise look like a new visitor each time; it is known by its
    address instead."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") == "http":
            scope[COOKIE_SENT] = _owner_cookie_sent(scope.get("headers") or [])
        await self.app(scope, receive, send)


def _owner_cookie_sent(headers) -> bool:
    for name, value in headers:
        if name.lower() == b"cookie":  # Starlette reads the first Cookie header only, and so does the app
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:
                return False
            morsel = jar.get(OWNER_COOKIE)
            return morsel is not None and bool(_TOKEN.match(morsel.value))
    return False


def visitor_of(request) -> tuple[str, tuple]:
    """``(address, visitor)`` of a ``gr.Request``: the visitor is the owner cookie with the ``--auth`` user, or the
    address with the user when the client sent no cookie of its own (see :class:`CookieSent`)."""
    if request is None:
        return "local", ("local",)
    raw = getattr(request, "request", None)  # the fastapi request inside gr.Request
    scope = getattr(raw, "scope", None)
    scope = scope if isinstance(scope, dict) else {}
    client = scope.get("client") or getattr(raw, "client", None)
    host = str((client[0] if isinstance(client, (tuple, list)) else getattr(client, "host", None)) or "unknown")
    owner = owner_of(request)
    user = owner.user if owner is not None else None
    if owner is not None and owner.token and scope.get(COOKIE_SENT, True):
        return host, ("client", owner.token, user)
    return host, ("address", host, user)


class TurnRefused(Exception):
    """A heavy job refused on arrival; the message is for users."""


@dataclass(eq=False)
class Ticket:
    """One heavy job in :class:`FairTurns`: ``waiting`` → ``running`` → ``done``, or ended before it ran
    (``stopped``: its Stop was pressed; ``left``: its client went; ``replaced``: a newer replaceable job of the same
    visitor took its place)."""

    visitor: tuple
    address: str
    seq: int
    session: str | None = None
    api: str | None = None
    event: str | None = None
    replaceable: bool = False
    state: str = "waiting"
    wake: Callable[[], None] = field(default=lambda: None, repr=False)


class FairTurns:
    """``slots`` heavy jobs at once, shared fairly; thread-safe, awaited from the event loop.

    A visitor has at most one job running and ``waiting`` waiting (more are refused at once); an address has at most
    ``network_waiting`` waiting over all its visitors (a client inventing a cookie per request is still one
    address). A free slot goes to the address served least recently, and within it to the visitor served least
    recently (never served: first; ties: who came first), so a newcomer waits for the jobs already running, not for
    everything a flooder queued. A *replaceable* job (re-rendering the same children after a slider moved) never
    counts as waiting: a newer one from the same visitor replaces it.
    """

    def __init__(self, slots: int, waiting: int = MAX_WAITING, network_waiting: int = NETWORK_WAITING) -> None:
        self.slots = max(1, slots)
        self.waiting = waiting
        self.network_waiting = network_waiting
        self._lock = threading.Lock()
        self._lines: dict[tuple, list[Ticket]] = {}  # visitor -> its waiting tickets, oldest first
        self._running: dict[tuple, int] = {}
        self._served: dict[object, int] = {}  # visitor or address -> when last served (kept while it has jobs)
        self._at: dict[str, int] = {}  # address -> its tickets waiting or running
        self._seq = 0
        self.busy = 0

    def join(self, visitor: tuple, address: str, session: str | None = None, api: str | None = None,
             event: str | None = None, replaceable: bool = False) -> Ticket:
        """A ticket in the visitor's line (granted at once when a slot is free and it is the visitor's turn), or
        :class:`TurnRefused` with the sentence."""
        with self._lock:
            line = self._lines.get(visitor, [])
            if replaceable:
                for old in [t for t in line if t.replaceable]:
                    self._end_waiting(old, "replaced")
                line = self._lines.get(visitor, [])
            else:
                held = self._running.get(visitor, 0) + sum(not t.replaceable for t in line)
                if held >= 1 + self.waiting:
                    raise TurnRefused(ONE_AT_A_TIME.format(waiting=self.waiting))
            from_address = sum(t.address == address for ts in self._lines.values() for t in ts)
            if from_address >= self.network_waiting:
                raise TurnRefused(NETWORK_BUSY.format(n=from_address))
            self._seq += 1
            ticket = Ticket(visitor, address, self._seq, session, api, event, replaceable)
            self._lines.setdefault(visitor, []).append(ticket)
            self._at[address] = self._at.get(address, 0) + 1
            self._dispatch()
            return ticket

    def leave(self, ticket: Ticket) -> None:
        """The job is over (finished, failed, cancelled, or never ran): free its slot or its place in line."""
        with self._lock:
            if ticket.state == "running":
                self.busy -= 1
                n = self._running.get(ticket.visitor, 1) - 1
                if n > 0:
                    self._running[ticket.visitor] = n
                else:
                    self._running.pop(ticket.visitor, None)
                ticket.state = "done"
                self._forget(ticket)
            elif ticket.state == "waiting":
                self._end_waiting(ticket, "left")
            self._dispatch()

    def stop_waiting(self, session: str, apis: tuple[str, ...]) -> set[str]:
        """Stop pressed: that session's waiting jobs for ``apis`` leave the line (they end without running).
        Returns their event ids."""
        with self._lock:
            doomed = [t for ts in self._lines.values() for t in ts if t.session == session and t.api in apis]
            for t in doomed:
                self._end_waiting(t, "stopped")
            return {t.event for t in doomed if t.event is not None}

    def ahead(self, ticket: Ticket) -> int:
        """How many other visitors' jobs would be served before this one's (their order of turns, now)."""
        with self._lock:
            line = self._lines.get(ticket.visitor, [])
            if ticket.state != "waiting" or not line:
                return 0
            mine = self._priority(ticket.visitor, line)
            return sum(1 for v, ts in self._lines.items() if ts and v != ticket.visitor and self._priority(v, ts) < mine)

    def has_jobs(self, visitor: tuple) -> bool:
        """Whether ``visitor`` has a job running or waiting (its uploads must outlive its other sessions meanwhile)."""
        with self._lock:
            return bool(self._running.get(visitor) or self._lines.get(visitor))

    def state(self) -> dict:
        """Running and waiting counts per visitor (tests, diagnostics)."""
        with self._lock:
            return {"busy": self.busy, "running": dict(self._running),
                    "waiting": {v: len(ts) for v, ts in self._lines.items() if ts}}

    async def wait(self, ticket: Ticket, leave_if: Callable[[], bool] = lambda: False,
                   say: Callable[[int], None] | None = None, poll_s: float = 0.5) -> str:
        """Until the ticket is granted (``"running"``) or ends before (``"stopped"``, ``"left"``, ``"replaced"``).
        ``leave_if()`` is asked every ``poll_s`` (a gone client leaves the line); ``say(n)`` hears how many visitors
        are ahead whenever that changes."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the app is stopping
                loop.call_soon_threadsafe(woken.set)

        ticket.wake = wake
        said = None
        while True:
            woken.clear()
            if ticket.state != "waiting":
                return ticket.state
            if leave_if():
                with self._lock:
                    if ticket.state == "waiting":
                        self._end_waiting(ticket, "left")
                continue
            if say is not None:
                n = self.ahead(ticket)
                if n != said:
                    said = n
                    with contextlib.suppress(Exception):  # a progress message is a courtesy, never a failure
                        say(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), poll_s)

    # ----- internals (lock held) ------------------------------------------------------------------------------
    def _priority(self, visitor: tuple, line: list[Ticket]) -> tuple[int, int, int]:
        first = line[0]
        return self._served.get(first.address, 0), self._served.get(visitor, 0), first.seq

    def _dispatch(self) -> None:
        while self.busy < self.slots:
            ready = [(self._priority(v, ts), v) for v, ts in self._lines.items() if ts and not self._running.get(v)]
            if not ready:
                return
            _, visitor = min(ready)
            ticket = self._lines[visitor].pop(0)
            if not self._lines[visitor]:
                del self._lines[visitor]
            self._seq += 1
            self._served[visitor] = self._served[ticket.address] = self._seq
            self._running[visitor] = self._running.get(visitor, 0) + 1
            self.busy += 1
            ticket.state = "running"
            ticket.wake()

    def _end_waiting(self, ticket: Ticket, state: str) -> None:
        line = self._lines.get(ticket.visitor, [])
        if ticket in line:
            line.remove(ticket)
            if not line:
                del self._lines[ticket.visitor]
        ticket.state = state
        self._forget(ticket)
        ticket.wake()

    def _forget(self, ticket: Ticket) -> None:
        """A ticket has ended: drop the memory of when an idle visitor (or address) was served, as it has nothing
        left to be fair about (and the memory stays bounded)."""
        n = self._at.get(ticket.address, 1) - 1
        if n > 0:
            self._at[ticket.address] = n
        else:
            self._at.pop(ticket.address, None)
            self._served.pop(ticket.address, None)
        if ticket.visitor not in self._lines and not self._running.get(ticket.visitor):
            self._served.pop(ticket.visitor, None)


def _plain(message: str, log: str | None = None) -> gr.Error:
    """A gr.Error for a refusal made here: one log line, no traceback."""
    error = gr.Error(message)
    error.print_exception = False
    if log is not None:
        print(f"{log}: {message}", file=sys.stderr)
    return error


def take_turns(fn: Callable, turns: FairTurns, threads: HeavyThreads, gone: Callable[[str], bool] = lambda key: False,
               api: str | None = None, replaceable: bool = False) -> Callable:
    """Wrap a heavy handler: it takes a ticket in ``turns`` (refused at once with a sentence over the visitor's cap),
    waits for its turn in the event loop (no thread held; the status says how many are ahead), then does its work on
    ``threads``; the slot is freed once that work has really ended, also after a Stop or a gone client. The wrapper
    is async (an async generator for a generator), which Gradio runs as it would the original."""
    from demos.common import _current_request

    def enter() -> tuple[Ticket, str | None]:
        from gradio.context import LocalContext

        request = _current_request()
        address, visitor = visitor_of(request)
        key = session_key(getattr(request, "session_hash", None)) if request is not None else None
        try:
            return turns.join(visitor, address, key, api, LocalContext.event_id.get(None), replaceable), key
        except TurnRefused as e:
            raise _plain(str(e), log=f"refused {api or getattr(fn, '__name__', 'a job')}") from None

    async def my_turn(ticket: Ticket, key: str | None, args, kwargs) -> bool:
        progress = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Progress)), None)

        def say(n: int) -> None:
            if progress is not None:
                progress(0.0, desc=WAITING.format(n=n, visitors="visitor" if n == 1 else "visitors"))

        state = await turns.wait(ticket, lambda: key is not None and gone(key), say)
        if state == "stopped":
            raise _plain(STOPPED_WAITING)
        if state == "left":
            raise _plain(CLIENT_GONE)
        return state == "running"  # "replaced": a newer job of the same visitor does this one's work

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        async def stream(*args, **kwargs):
            ticket, key = enter()
            handed = False
            try:
                if not await my_turn(ticket, key, args, kwargs):
                    return
                steps = threads.astream(fn(*args, **kwargs), after=lambda: turns.leave(ticket))
                handed = True
                async with contextlib.aclosing(steps):
                    async for item in steps:
                        yield item
            finally:
                if not handed:
                    turns.leave(ticket)

        return stream

    @functools.wraps(fn)
    async def call(*args, **kwargs):
        ticket, key = enter()
        handed = False
        try:
            if not await my_turn(ticket, key, args, kwargs):
                raise _plain(STOPPED_WAITING)
            work = threads.submit(fn, *args, **kwargs)
            handed = True
            work.add_done_callback(lambda _: turns.leave(ticket))
            return await asyncio.wrap_future(work)
        finally:
            if not handed:
                turns.leave(ticket)

    return call


def client_gone(demo: gr.Blocks) -> Callable[[str], bool]:
    """``gone(session)``: True once Gradio has marked that session's running event dead (its stream closed)."""

    def gone(key: str) -> bool:
        queue = getattr(demo, "_queue", None)
        for job_set in getattr(queue, "active_jobs", None) or []:
            for event in job_set or []:
                if session_key(event.session_hash) == key and not event.alive:
                    return True
        return False

    return gone


def queued_events(demo: gr.Blocks, turns: FairTurns | None = None) -> Callable[[str, tuple[str, ...]], set[str]]:
    """``queued(session, apis)``, asked when Stop is pressed: the ids of that session's events for those endpoints
    that have not started. Those still in Gradio's queue are returned, so the Stop can reach them when they start;
    those waiting for a turn in ``turns`` leave the line at once (they end without running) and are returned too."""

    def queued(key: str, apis: tuple[str, ...]) -> set[str]:
        queue = getattr(demo, "_queue", None)
        waiting = set()
        for event_queue in list(getattr(queue, "event_queue_per_concurrency_id", {}).values()):
            for event in list(event_queue.queue):
                if session_key(event.session_hash) == key and getattr(event.fn, "api_name", None) in apis:
                    waiting.add(event._id)
        if turns is not None:
            waiting |= turns.stop_waiting(key, apis)
        return waiting

    return queued


def plain_queue_full(demo: gr.Blocks) -> None:
    """Replace Gradio's "Queue is full. Max size is …" with BUSY, counting the requests ahead."""
    queue = demo._queue
    push = queue.push

    async def polite_push(body, request, username):
        ok, detail, state = await push(body, request, username)
        if not ok and state == "queue_full":
            detail = BUSY.format(n=len(queue))
        return ok, detail, state

    queue.push = polite_push


_BATCH_REQUESTS: ContextVar[list | None] = ContextVar("latent_lab_batch_requests", default=None)


def keep_batch_requests(demo: gr.Blocks) -> None:
    """Gradio's queue gathers one request per visitor for a ``batch=True`` event but hands the function only the
    first (``Blocks.call_function``); without the rest every visitor's output would be saved in the first visitor's
    session. This keeps the whole list, in the batch's order, for :func:`batch_requests`."""
    call = demo.call_function

    async def call_function(block_fn, processed_input, iterator=None, requests=None, *args, **kwargs):
        token = _BATCH_REQUESTS.set(list(requests) if isinstance(requests, list) else None)
        try:
            return await call(block_fn, processed_input, iterator, requests, *args, **kwargs)
        finally:
            _BATCH_REQUESTS.reset(token)

    demo.call_function = call_function


def batch_requests(n: int, request: gr.Request | None) -> list[gr.Request | None]:
    """The request of each of a batch's ``n`` items: from the queue's list (``keep_batch_requests``), else
    ``request`` for all (a direct call, or a batch of one). A list of another length is refused: a visitor's
    output must never be filed under someone else's session."""
    requests = _BATCH_REQUESTS.get()
    if requests is None or (n == 1 and len(requests) == 1):
        return [requests[0] if requests else request] * n
    if len(requests) != n:
        raise RuntimeError(f"A batch of {n} requests arrived with {len(requests)} sessions; not decoded.")
    return requests


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def limit_malloc_arenas(n: int = 2) -> bool:
    """glibc gives each worker thread its own malloc arena; with Gradio's 40 workers freed memory stays spread over
    them and RSS only grows. A few shared arenas keep it reusable (the ``MALLOC_ARENA_MAX`` setting, at run time)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(-8, n))  # -8: M_ARENA_MAX


def freeze_startup_objects() -> int:
    """Move everything alive now (Gradio's blocks, modules, torch) out of the cycle collector's reach
    (``gc.freeze``): a full collection of the app's start-up objects holds the GIL (docs/benchmarks.md), and each one (ours
    after sessions end, or Python's own) stalled every visitor's light requests. Objects made later are collected as
    usual. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def release_memory() -> None:
    """Collect cycles and hand freed heap pages back to the OS (after sessions end: their images, latents)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
