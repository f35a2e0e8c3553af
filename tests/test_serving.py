"""Many visitors on one app: light events beside heavy jobs, one heavy job per session, the queue-full message,
a disconnected client's job stops, bounded caches. Each server test launches its own app on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

DIGITS = "small_ae/digits"


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``start(concurrency)`` -> a launched app (closed after the test) whose projection steps are counted."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    import core.projection
    from demos.app import build_app, launch
    from plugins.registry import Registry

    steps = {"n": 0}
    gate = threading.Event()  # cleared: projections hold after their 5th step until the test opens it
    gate.set()
    real_step = core.projection._step

    def counted(run, step):
        steps["n"] += 1
        if steps["n"] > 5:
            gate.wait(60)
        time.sleep(0.01)  # a step long enough to observe, on any machine
        return real_step(run, step)

    monkeypatch.setattr(core.projection, "_step", counted)
    demos = []

    def start(concurrency: int = 1):
        demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=100_000, concurrency=concurrency)
        launch(demo, block=False)
        demos.append(demo)
        return demo

    start.steps, start.gate = steps, gate
    yield start
    for demo in demos:
        demo.close()


@pytest.fixture
def digit_png(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "digit.png"
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(p)
    return str(p)


def _project_args(path: str, steps: int) -> tuple:
    return DIGITS, handle_file(path), "latent", "mean", "mse", steps, False, 0, False


def _wait(cond, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_light_events_are_not_queued_behind_a_heavy_job(served, digit_png):
    """With one heavy slot busy, a model card and a dataset list still answer while the projection runs."""
    demo = served(concurrency=1)
    heavy, light = Client(demo.local_url, verbose=False), Client(demo.local_url, verbose=False)
    served.gate.clear()
    job = heavy.submit(*_project_args(digit_png, 30), api_name="/project")
    assert _wait(lambda: served.steps["n"] > 5)
    card = light.predict(DIGITS, api_name="/proj_model_card")
    card = card[0] if isinstance(card, (tuple, list)) else card
    datasets = light.predict(DIGITS, api_name="/map_datasets")
    assert "Licence" in card or "licence" in card.lower()
    assert datasets
    assert not job.done()  # both answered while the projection was held mid-way
    served.gate.set()
    assert job.result()[3].startswith("**Done.**")
    heavy.close()
    light.close()


def test_one_client_gets_one_heavy_job_running_two_waiting_and_a_sentence_beyond(served, digit_png):
    demo = served(concurrency=2)  # a free slot: only the per-visitor cap keeps the second job waiting
    client = Client(demo.local_url, verbose=False)
    served.gate.clear()
    first = client.submit(*_project_args(digit_png, 30), api_name="/project")
    assert _wait(lambda: served.steps["n"] > 5)
    waiting = [client.submit(*_project_args(digit_png, 3), api_name="/project") for _ in range(2)]
    assert _wait(lambda: sum(demo.latent_lab.fair_turns.state()["waiting"].values()) == 2, 30)
    assert demo.latent_lab.fair_turns.state()["busy"] == 1  # the second slot stays free for other visitors
    with pytest.raises(AppError) as e:
        client.predict(*_project_args(digit_png, 5), api_name="/project")
    assert "already have a job running and 2 waiting" in str(e.value)
    assert not first.done()
    served.gate.set()
    assert first.result()[3].startswith("**Done.**")
    assert all(job.result()[3].startswith("**Done.**") for job in waiting)
    assert demo.latent_lab.fair_turns.state() == {"busy": 0, "running": {}, "waiting": {}}
    client.close()


def test_a_stop_pressed_while_a_run_waits_for_its_turn_takes_it_out_of_line(served, digit_png):
    from demos.wiring import request_stop

    demo = served(concurrency=1)
    ctx = demo.latent_lab
    first, second = Client(demo.local_url, verbose=False), Client(demo.local_url, verbose=False)
    served.gate.clear()
    running = first.submit(*_project_args(digit_png, 30), api_name="/project")
    assert _wait(lambda: served.steps["n"] > 5)
    waiting = second.submit(*_project_args(digit_png, 50), api_name="/project")
    assert _wait(lambda: ctx.fair_turns.state()["waiting"], 30)  # it waits for the slot

    class SecondsStop:  # what the second visitor's Stop button sends (a private endpoint, not callable by a client)
        session_hash = second.session_hash
        cookies = {"latent_lab_owner": second.cookies["latent_lab_owner"]}
        username = None

    request_stop(ctx, SecondsStop(), "projection", ("project",))
    with pytest.raises(AppError) as e:  # it ends at once, before the running job is let go
        waiting.result(timeout=30)
    assert "Stopped before it started" in str(e.value)
    assert not running.done()
    served.gate.set()
    assert running.result()[3].startswith("**Done.**")  # the other visitor's run is untouched
    assert served.steps["n"] <= 31  # and the stopped one never ran a step
    first.close()
    second.close()


def test_a_full_queue_says_how_many_are_ahead(served, digit_png, monkeypatch):
    import httpx

    from demos import serving

    monkeypatch.setattr(serving, "ADMITTED", 1)  # Gradio lets one heavy event in; the next waits in its queue
    demo = served(concurrency=1)
    demo._queue.max_size = 1
    a, b = Client(demo.local_url, verbose=False), Client(demo.local_url, verbose=False)
    served.gate.clear()
    running = a.submit(*_project_args(digit_png, 30), api_name="/project")
    assert _wait(lambda: served.steps["n"] > 5)
    waiting = b.submit(*_project_args(digit_png, 3), api_name="/project")  # fills the one queue place
    assert _wait(lambda: len(demo._queue) == 1, 30)
    fn_index = next(i for i, f in demo.fns.items() if f.api_name == "project")
    r = httpx.post(f"{demo.local_url}gradio_api/queue/join",
                   json={"data": [], "fn_index": fn_index, "session_hash": "third", "event_data": None, "trigger_id": None})
    assert r.status_code == 503
    assert r.json()["detail"] == "Busy: 1 requests are ahead of you. Please try again in a minute."
    served.gate.set()
    assert running.result()[3].startswith("**Done.**") and waiting.result()[3].startswith("**Done.**")
    a.close()
    b.close()


KILLED_CLIENT = r"""
import os, signal, sys
from gradio_client import Client, handle_file
job = Client(sys.argv[1], verbose=False).submit("small_ae/digits", handle_file(sys.argv[2]), "latent", "mean", "mse",
                                                 int(sys.argv[3]), False, 0, False, api_name="/project")
for _ in job:  # the first output has arrived: die without a goodbye, mid-job
    print("started", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_clients_projection_stops(served, digit_png, tmp_path):
    demo = served(concurrency=1)
    client = subprocess.run([sys.executable, "-c", KILLED_CLIENT, demo.local_url, digit_png, "100000"], timeout=120,
                            capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert client.returncode == -signal.SIGKILL and "started" in client.stdout, client.stderr
    # The job stops advancing within 5 s of the kill (Gradio notices the closed stream; the projection checks).
    deadline = time.monotonic() + 5
    last, still = served.steps["n"], True
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = served.steps["n"]
        still, last = now > last, now
        if not still:
            break
    assert not still, f"the projection kept running: {last} steps"
    assert last < 100_000
    time.sleep(1.0)
    assert served.steps["n"] == last  # and it stays stopped


def test_a_session_cannot_use_another_sessions_output_as_input(served, digit_png):
    """Private sessions through the API (demos/file_access.py + AppContext.own_input): B may neither download A's
    output nor give its server path as an input; A may."""
    import httpx

    from tests.test_privacy_server import _call, _file, _upload

    demo = served(concurrency=2)
    url = demo.local_url
    with httpx.Client(timeout=60) as alice, httpx.Client(timeout=60) as bob:  # each keeps its own cookie jar
        uploaded = _upload(alice, url, Path(digit_png))
        args = ["latent", "mean", "mse", 3, False, 0, False, 512, True]
        kind, out = _call(alice, url, "project", [DIGITS, _file(uploaded), *args])
        assert kind == "complete", out
        output = out[0]["path"]  # the target image alice's job wrote
        assert bob.get(out[0]["url"]).status_code == 404
        kind, msg = _call(bob, url, "project", [DIGITS, _file(output), *args])
        assert kind == "error" and "not available to your session" in str(msg)
        kind, out = _call(alice, url, "project", [DIGITS, _file(output), *args])
        assert kind == "complete", out  # her own output is hers to reuse


# ----- bounded memory ------------------------------------------------------------------------------------------------
def test_the_registry_keeps_at_most_max_models_loaded():
    from plugins.registry import Registry

    reg = Registry(max_models=1).discover(None, use_entry_points=False)
    digits = reg.get(DIGITS)
    assert reg.status(DIGITS) == "loaded"
    reg.get("small_ae/faces")
    assert reg.status("small_ae/faces") == "loaded" and reg.status(DIGITS) != "loaded"  # freed, loads again on use
    again = reg.get(DIGITS)
    assert again is not digits and reg.status("small_ae/faces") != "loaded"
    with pytest.raises(ValueError, match="max-models"):
        Registry(max_models=0)


def test_a_byte_budget_frees_the_least_recently_used_models_but_never_the_one_returned():
    from plugins.registry import Registry, model_bytes, parse_bytes

    sizes = {}
    probe = Registry().discover(None, use_entry_points=False)
    for name in (DIGITS, "small_ae/faces"):
        m = probe.get(name)
        sizes[name] = sum(p.numel() * p.element_size() for mod in m.modules() for p in (*mod.parameters(), *mod.buffers()))
        assert model_bytes(m) == sizes[name] > 0
    assert probe.loaded_bytes() == sum(sizes.values())

    # Room for the faces model, not for both: loading one frees the other.
    reg = Registry(max_bytes=max(sizes.values()) + 1).discover(None, use_entry_points=False)
    reg.get(DIGITS)
    reg.get("small_ae/faces")
    assert reg.status("small_ae/faces") == "loaded" and reg.status(DIGITS) != "loaded"
    assert reg.loaded_bytes() == sizes["small_ae/faces"]
    # A budget smaller than any model: the model asked for still loads, alone.
    tiny = Registry(max_bytes=1).discover(None, use_entry_points=False)
    assert tiny.get(DIGITS) is tiny.get(DIGITS)
    tiny.get("small_ae/faces")
    assert [n for n in (DIGITS, "small_ae/faces") if tiny.status(n) == "loaded"] == ["small_ae/faces"]
    # Both fit: both stay.
    roomy = Registry(max_bytes=sum(sizes.values())).discover(None, use_entry_points=False)
    roomy.get(DIGITS), roomy.get("small_ae/faces")
    assert roomy.status(DIGITS) == roomy.status("small_ae/faces") == "loaded"

    assert parse_bytes("2GB") == 2 * 1024**3 and parse_bytes("512 mb") == 512 * 1024**2 and parse_bytes("1.5k") == 1536
    for bad in ("lots", "2 parsecs", "0"):
        with pytest.raises(ValueError, match="memory"):
            parse_bytes(bad)


def test_dataset_and_map_caches_drop_the_least_recently_used():
    from core.latent_map import MapCache
    from demos.common import AppContext
    from plugins.registry import Registry

    ctx = AppContext(Registry().discover(None, use_entry_points=False), max_datasets=1)
    name, other = DIGITS, "small_ae/faces"
    ds = next(iter(ctx.model(name).datasets()))
    first = ctx.dataset(name, ds)
    assert ctx.dataset(name, ds) is first  # kept while within the budget
    ctx.dataset(other, next(iter(ctx.model(other).datasets())))
    assert ctx.dataset(name, ds) is not first  # dropped for the other one, built again

    maps = MapCache(None, max_items=2)
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    for seed in range(3):
        maps.get("m", "d", x, "pca", 2, seed)
    assert len(maps._mem) == 2
    assert not maps.get("m", "d", x, "pca", 2, 0).cached  # the oldest was evicted
    assert maps.get("m", "d", x, "pca", 2, 2).cached


def test_session_end_clears_its_heavy_slot_and_caches():
    from demos.common import AppContext
    from plugins.registry import Registry

    ctx = AppContext(Registry().discover(None, use_entry_points=False))

    class Req:
        session_hash = "abc"
        cookies: dict = {}
        username = None

    ctx.session_cache(Req())["x"] = 1
    ctx.end_session(Req())
    assert "abc" not in ctx._caches


def test_concurrency_defaults_follow_the_machine(monkeypatch):
    from demos import serving

    monkeypatch.setattr(serving, "cpu_count", lambda: 16)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert serving.default_concurrency() == 4 and serving.light_concurrency() == 32
    monkeypatch.setattr(serving, "cpu_count", lambda: 2)
    assert serving.default_concurrency() == 1 and serving.light_concurrency() == 4




def test_the_reaper_hands_memory_back_after_sessions_end():
    from demos.common import AppContext
    from plugins.registry import Registry

    ctx = AppContext(Registry().discover(None, use_entry_points=False), idle_s=0.4)
    calls = []
    ctx.start_reaper(after=lambda: calls.append(1))
    try:
        time.sleep(0.5)
        assert calls == []  # nothing ended: nothing to hand back

        class Req:
            session_hash = "gone"
            cookies: dict = {}
            username = None

        ctx.session_cache(Req())["x"] = np.zeros(1000)
        assert _wait(lambda: calls, 10)  # the idle session expired, then the hook ran
        assert "gone" not in ctx._caches
    finally:
        ctx.close()


def test_heavy_handlers_run_on_lower_priority_threads_in_the_callers_context():
    import asyncio
    import contextvars

    from demos.serving import HeavyThreads

    var = contextvars.ContextVar("request", default=None)
    threads = HeavyThreads(1)
    seen, cleaned, after = [], [], []

    def stream(n):
        try:
            for i in range(n):
                seen.append((threading.current_thread().name, var.get(),
                             os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
                yield i
        finally:
            cleaned.append(threading.current_thread().name)

    async def consume(n, take):
        var.set("visitor-a")
        out = []
        steps = threads.astream(stream(n), after=lambda: after.append(len(out)))
        async for item in steps:
            out.append(item)
            if len(out) == take:
                await steps.aclose()  # a Stop or a gone client at a yield
                break
        return out

    try:
        assert asyncio.run(consume(3, 99)) == [0, 1, 2]
        assert all(name.startswith("latent-lab-heavy") and value == "visitor-a" for name, value, _ in seen)
        if threads.niced[0]:
            assert all(nice > os.getpriority(os.PRIO_PROCESS, 0) for *_, nice in seen)
        assert asyncio.run(consume(10, 1)) == [0]
        assert _wait(lambda: len(after) == 2, 10)  # the slot is handed back after the clean-up ...
        assert cleaned[-1].startswith("latent-lab-heavy") and len(seen) == 4  # ... which ran on its thread
        work = threads.submit(lambda x, y=1: (threading.current_thread().name, x + y), 2, y=3)
        assert work.result(10)[0].startswith("latent-lab-heavy") and work.result()[1] == 5
    finally:
        threads.close()
    assert threads.submit(lambda: 7).result() == 7  # once stopping, work runs in the caller (clean-ups still run)


def test_queued_events_are_found_by_session_and_endpoint():
    from types import SimpleNamespace as NS

    from demos.serving import queued_events
    from demos.sessions import session_key

    def event(session, api, eid):
        return NS(session_hash=session, fn=NS(api_name=api), _id=eid)

    queue = NS(event_queue_per_concurrency_id={
        "heavy": NS(queue=[event("a", "project", "1"), event("b", "project", "2"), event("a", "family_project", "3")]),
        "light": NS(queue=[event("a", "proj_model_card", "4")])})
    queued = queued_events(NS(_queue=queue))
    assert queued(session_key("a"), ("project",)) == {"1"}
    assert queued(session_key("a"), ("family_project", "family_children")) == {"3"}
    assert queued(session_key("c"), ("project",)) == set()
    assert queued_events(NS())(session_key("a"), ("project",)) == set()  # before the queue exists


def test_start_up_objects_leave_the_cycle_collector_and_later_cycles_are_still_freed():
    import gc
    import weakref

    from demos import serving

    class Node:
        pass

    before = Node()
    before.self = before  # a cycle made before the freeze: frozen with the rest
    try:
        frozen = serving.freeze_startup_objects()
        assert frozen > 1000 and gc.get_freeze_count() > 1000  # (other tests' threads may free a few meanwhile)
        assert not any(o is before for o in gc.get_objects())  # out of the collector's generations
        after = Node()
        after.self = after
        gone = weakref.ref(after)
        del after
        serving.release_memory()
        assert gone() is None  # what sessions make later is still collected
    finally:
        gc.unfreeze()


def test_a_batch_keeps_each_visitors_request_and_refuses_a_mismatch():
    """Gradio hands a batch=True function only the first request; keep_batch_requests restores one per item."""
    import asyncio

    from demos import serving

    class Blocks:  # Blocks.call_function's signature: the queue passes the batch's requests as ``requests``
        async def call_function(self, block_fn, processed_input, iterator=None, requests=None, *args, **kwargs):
            return serving.batch_requests(len(processed_input), "first only")

    demo = Blocks()
    serving.keep_batch_requests(demo)
    assert asyncio.run(demo.call_function(None, [1, 2], None, ["alice", "bob"])) == ["alice", "bob"]
    assert asyncio.run(demo.call_function(None, [1], None, ["alice"])) == ["alice"]
    assert asyncio.run(demo.call_function(None, [1, 2], None, None)) == ["first only"] * 2  # not from the queue
    with pytest.raises(RuntimeError, match="not decoded"):
        asyncio.run(demo.call_function(None, [1, 2, 3], None, ["alice", "bob"]))
    assert serving.batch_requests(2, "direct") == ["direct", "direct"]  # outside a call: nothing left behind
