"""Fair turns for heavy jobs (demos/serving.py ``FairTurns``): who a visitor is, the per-visitor cap, turns across
visitors rather than first come, and waiting jobs that leave the line; then the same against the real server."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
from PIL import Image

from demos.serving import COOKIE_SENT, MAX_WAITING, NETWORK_BUSY, ONE_AT_A_TIME, FairTurns, TurnRefused, visitor_of

TOKEN_A, TOKEN_B = "a" * 32, "b" * 32


def request(token: str | None, session: str, host: str = "10.0.0.1", sent: bool = True, user: str | None = None):
    """A stand-in for gr.Request: the fastapi request's scope, cookies and username, as the app reads them."""
    raw = NS(scope={"client": (host, 5000), COOKIE_SENT: sent}, client=NS(host=host))
    return NS(request=raw, session_hash=session, cookies={"latent_lab_owner": token} if token else {}, username=user)


def granted(turns: FairTurns, tickets) -> list:
    return [t for t in tickets if t.state == "running"]


def test_the_same_cookie_is_one_visitor_whatever_its_session_hashes():
    assert visitor_of(request(TOKEN_A, "s1")) == visitor_of(request(TOKEN_A, "s2"))
    assert visitor_of(request(TOKEN_A, "s1")) != visitor_of(request(TOKEN_B, "s1"))
    assert visitor_of(request(TOKEN_A, "s1", user="ann")) != visitor_of(request(TOKEN_A, "s1", user="bob"))
    # No cookie of its own (the app handed it a fresh one for this request only): known by its address.
    assert visitor_of(request(TOKEN_A, "s1", sent=False)) == visitor_of(request(TOKEN_B, "s2", sent=False))
    assert visitor_of(request(TOKEN_A, "s1", sent=False))[1] == ("address", "10.0.0.1", None)
    assert visitor_of(request(TOKEN_A, "s1", host="10.0.0.2", sent=False)) != visitor_of(request(TOKEN_A, "s1", sent=False))


def test_a_visitor_has_one_job_running_two_waiting_and_is_refused_beyond_with_the_sentence():
    turns = FairTurns(slots=2)
    address, flooder = visitor_of(request(TOKEN_A, "s0"))
    tickets = [turns.join(*visitor_of(request(TOKEN_A, f"s{i}"))[::-1], session=f"s{i}") for i in range(1 + MAX_WAITING)]
    assert [t.state for t in tickets] == ["running", "waiting", "waiting"]  # a free slot, but one job per visitor
    for i in range(3, 6):  # new session hashes do not reset the count
        with pytest.raises(TurnRefused) as e:
            turns.join(flooder, address, session=f"s{i}")
        assert str(e.value) == ONE_AT_A_TIME.format(waiting=2)
        assert "already have a job running and 2 waiting" in str(e.value)
    other = turns.join(*visitor_of(request(TOKEN_B, "t0"))[::-1])
    assert other.state == "running"  # the second slot went to the other visitor
    turns.leave(tickets[0])
    assert tickets[1].state == "running"
    turns.join(flooder, address)  # one place in line freed: one more accepted, no more
    with pytest.raises(TurnRefused):
        turns.join(flooder, address)


def test_waiting_jobs_are_served_in_turns_across_visitors_not_first_come():
    turns = FairTurns(slots=1)
    order = []

    def join(name: str, address: str):
        t = turns.join(("client", name, None), address)
        t.name = name
        return t

    def finish_running(tickets):
        (run,) = granted(turns, tickets)
        order.append(run.name)
        turns.leave(run)

    flood = [join("F", "1.1.1.1") for _ in range(3)]  # the flooder came first with three
    late = [join("N", "2.2.2.2"), join("G", "3.3.3.3"), join("G", "3.3.3.3")]
    everyone = flood + late
    for _ in everyone:
        finish_running(everyone)
    assert order == ["F", "N", "G", "F", "G", "F"]  # the newcomers wait for the running job only
    assert turns.state() == {"busy": 0, "running": {}, "waiting": {}}


def test_one_address_inventing_cookies_takes_turns_as_one_and_is_bounded():
    turns = FairTurns(slots=1, network_waiting=4)
    forged = [turns.join(("client", f"forged{i}", None), "6.6.6.6") for i in range(5)]  # 1 running + 4 waiting
    with pytest.raises(TurnRefused) as e:
        turns.join(("client", "forged99", None), "6.6.6.6")
    assert str(e.value) == NETWORK_BUSY.format(n=4)
    newcomer = turns.join(("client", "me", None), "7.7.7.7")
    turns.leave(forged[0])
    assert newcomer.state == "running"  # not behind the four other "visitors" of that address


def test_a_cancelled_stopped_or_gone_waiter_leaves_the_line():
    turns = FairTurns(slots=1)

    async def scenario():
        running = turns.join(("client", "a", None), "1.1.1.1")
        cancelled = turns.join(("client", "b", None), "2.2.2.2")
        stopped = turns.join(("client", "c", None), "3.3.3.3", session="sc", api="project", event="ev-c")
        gone = turns.join(("client", "d", None), "4.4.4.4")
        last = turns.join(("client", "e", None), "5.5.5.5")
        said = []
        waits = {t: asyncio.create_task(turns.wait(t, poll_s=0.05, **kw)) for t, kw in [
            (cancelled, {}), (stopped, {}), (gone, {"leave_if": lambda: True}), (last, {"say": said.append})]}
        await asyncio.sleep(0.2)
        waits[cancelled].cancel()  # Gradio cancels the task of a cancelled event: the wrapper then leaves
        with pytest.raises(asyncio.CancelledError):
            await waits[cancelled]
        turns.leave(cancelled)
        assert turns.stop_waiting("sc", ("family_project",)) == set()  # another endpoint's Stop: untouched
        assert turns.stop_waiting("sc", ("project",)) == {"ev-c"}
        assert await waits[stopped] == "stopped" and await waits[gone] == "left"
        await asyncio.sleep(0.2)  # the last waiter's next look at the line
        turns.leave(running)
        assert await asyncio.wait_for(waits[last], 5) == "running"  # next in line once the others left
        assert said[0] >= 1 and said[-1] == 0  # "N visitors ahead", counting down
        turns.leave(last)

    asyncio.run(scenario())
    assert turns.state() == {"busy": 0, "running": {}, "waiting": {}}


def test_a_newer_replaceable_job_replaces_the_waiting_one():
    turns = FairTurns(slots=1)
    me = ("client", "me", None)
    running = turns.join(me, "1.1.1.1")
    first = turns.join(me, "1.1.1.1", replaceable=True)
    second = turns.join(me, "1.1.1.1", replaceable=True)
    assert first.state == "replaced" and second.state == "waiting"
    turns.join(me, "1.1.1.1")
    turns.join(me, "1.1.1.1")  # slider re-renders never count as the two waiting jobs
    turns.leave(running)
    assert second.state in ("running", "waiting") and turns.state()["busy"] == 1


# ----- the real server ----------------------------------------------------------------------------------------------
gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture
def face_like_png(tmp_path):
    p = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(p)
    return str(p)


def test_a_flooding_client_is_refused_beyond_one_plus_two_and_a_newcomer_goes_before_its_waiting_jobs(tmp_path, face_like_png):
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from tests.server_process import ServerProcess

    steps = 400
    args = ("small_ae/digits", None, "latent", "mean", "mse", steps, False, 0, False)
    with ServerProcess(tmp_path / "server", "--concurrency", "1", "--max-steps", str(steps)) as server:
        flooder = Client(server.url, verbose=False)
        jobs = [flooder.submit(args[0], handle_file(face_like_png), *args[2:], api_name="/project") for _ in range(5)]
        seen: dict[int, float] = {}  # job index -> when its first output (or its end) arrived: its turn had come
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                for i, job in enumerate(list(jobs)):
                    if i not in seen and (job.outputs() or job.done()):
                        seen[i] = time.monotonic()
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + 300
        while sum(j.done() for j in jobs) < 2 and time.monotonic() < deadline:  # refusals come at once, jobs later
            time.sleep(0.1)
        time.sleep(0.5)
        refused = [j for j in jobs if j.done() and not j.status().success]
        assert len(refused) == 2, [j.status() for j in jobs]  # 1 running + 2 waiting accepted, the rest refused at once
        for job in refused:
            with pytest.raises(AppError, match="already have a job running and 2 waiting"):
                job.result()
        accepted = [i for i, j in enumerate(jobs) if j not in refused]

        # The same client over raw HTTP, a fresh session hash per call (its cookie kept): still the same visitor.
        with httpx.Client(base_url=server.url, cookies={"latent_lab_owner": flooder.cookies["latent_lab_owner"]},
                          timeout=30) as raw:
            path = raw.post("gradio_api/upload", files={"files": ("digit.png", Path(face_like_png).read_bytes())}).json()[0]
            data = [args[0], {"path": path, "meta": {"_type": "gradio.FileData"}}, *args[2:], 1024, False]
            event = raw.post("gradio_api/call/project", json={"data": data}).json()["event_id"]
            answer = raw.get(f"gradio_api/call/project/{event}").text
        assert "event: error" in answer and "already have a job running" in answer, answer[:500]

        other = Client(server.url, verbose=False)
        asked = time.monotonic()
        jobs.append(other.submit(args[0], handle_file(face_like_png), *args[2:5], 5, *args[6:], api_name="/project"))
        assert jobs[-1].result(timeout=300)[3].startswith("**Done.**")
        started = seen[len(jobs) - 1]
        assert any(seen.get(i, float("inf")) > asked for i in accepted)  # some of the flood was still waiting ...
        assert not [i for i in accepted if asked < seen.get(i, float("inf")) < started]  # ... and went after the newcomer
        stop.set()
        flooder.close()  # its remaining jobs end with the connection (not waited for)
        other.close()
