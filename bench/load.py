"""Many visitors on one app: N gradio_client users x M mixed requests against ``python app.py`` on loopback.

Prints, per endpoint, ok / failed / p50 / p95 seconds (light and heavy events apart, from three rounds), the
server's RSS after a warm-up and after each round, the files left once the sessions have closed and after the
server stops, the server's CPU while idle after the clients disconnect, and how fast a killed client's
1000-step projection stops (server CPU in the seconds after the kill). Light events are reported twice: those of the
crowd (each visitor sends them right after its own heavy job, when many visitors' requests arrive at once) and those
of one more visitor alone in its process sending light requests only, one a second, while the crowd's heavy jobs
run. The clients share the server's cores here; ``--profile`` adds the server's own time per phase (Gradio's
``GRADIO_PROFILING``), which tells the server's part of a wait from the clients' and the transport's.

    python -m bench.load                       # 20 clients x 10 requests, three rounds
    python -m bench.load --clients 4 --requests 5 --rounds 1      # a quick look
    python -m bench.load --flood               # one client floods heavy jobs; how long another visitor waits

``--flood``: one ``gradio_client`` session submits 20 face projections at once (100 steps, then pivotal tuning), then
one raw-HTTP client (its cookie kept, a fresh session hash per call) submits 20 more; each time it prints how many ran
and how many were refused, and how long a second visitor's 5-step projection waited for its turn and took in all.

Bounded: every request has a timeout, each round a deadline (``--round-timeout``), and the server is stopped at the
end whatever happens. The Family requests need the London photos in ../shared (they are skipped without them).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FACES, DIGITS = "small_ae/faces", "small_ae/digits"
LIGHT = ("proj_model_card", "map_datasets", "map_decode_point", "family_align")  # the lone visitor cycles through them
PHOTOS = [ROOT.parent / "shared" / "data" / "faces" / "london" / "neutral" / f"{n}_03.jpg" for n in ("001", "002")]
OWNER_FILE = ".latent_lab_owner"
PROBE = "probe:"  # results of the light-only visitor
START_DELAY_S = 10.0  # a round's client processes start and import gradio_client before its visitors begin


# ----- the server ------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, tmp: Path, idle_s: float, concurrency: int | None, profile: bool = False) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.tmp = tmp
        env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "GRADIO_SHARE")}
        env.update(TMPDIR=str(tmp), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        if profile:
            env["GRADIO_PROFILING"] = "1"  # Gradio's own per-phase timings, read back by ``traces``
        args = ["--idle-timeout", str(idle_s)] + (["--concurrency", str(concurrency)] if concurrency else [])
        self.log = tmp.parent / "server.log"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port), *args], cwd=ROOT,
                                     env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while "is running at" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("the app did not start:\n" + self.log.read_text(errors="replace")[-2000:])
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def traces(self) -> tuple[list[dict], dict]:
        """Gradio's per-request phase timings (queue wait, pre/postprocess, the function) and its summary (which
        alone has the uploads' times): only with ``GRADIO_PROFILING``."""
        import httpx

        get = lambda what: httpx.get(self.url + f"gradio_api/profiling/{what}", timeout=30).json()  # noqa: E731
        return get("traces"), get("summary")

    def files(self) -> list[Path]:
        return [p for p in self.tmp.rglob("*") if p.is_file() and p.name != OWNER_FILE]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


# ----- one visitor -----------------------------------------------------------------------------------------------
def plan(m: int, family: bool) -> list[str]:
    """The visitor's requests: heavy and light events interleaved (the same mix for everyone)."""
    mix = ["project", "proj_model_card", "interpolate", "family_align", "family_project", "map_datasets",
           "family_children", "map_decode_point", "map", "proj_model_card"]
    if not family:
        mix = [e for e in mix if not e.startswith("family")] + ["project", "map_decode_point"]
    return [mix[i % len(mix)] for i in range(m)]


def visitor(url: str, requests: list[str], photo: str, deadline: float, timeout: float, out: list,
            pause: float = 0.0, tag: str = "") -> None:
    """One visitor's requests in order (``pause`` seconds between them); results recorded as ``tag + endpoint``."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    dataset = None
    try:
        for i, api in enumerate(requests):
            if time.time() > deadline:
                out.append((tag + api, False, 0.0, "round deadline"))
                continue
            time.sleep(pause if i else 0.0)
            if api in ("map", "map_decode_point") and dataset is None:
                dataset = client.predict(DIGITS, api_name="/map_datasets")[0]["value"]
            args = {
                "project": (FACES, handle_file(photo), None, "auto", "mse", 10, False, i, False),
                "proj_model_card": (FACES,),
                "interpolate": (DIGITS, "two seeds", i, i + 1, None, None, 8, None, "auto", [], 10, False, 12, False),
                "family_align": (FACES, handle_file(str(PHOTOS[0])), handle_file(str(PHOTOS[1])), 1, 1),  # faces from 1
                "family_project": (FACES, handle_file(str(PHOTOS[0])), handle_file(str(PHOTOS[1])), 5, 1, 1),
                "family_children": (FACES, handle_file(str(PHOTOS[0])), handle_file(str(PHOTOS[1])), 5, 0.5, "blend",
                                    "blend", "blend", 0, 0, None, 0, 0.25, i, 2, 1, 1),
                "map_datasets": (DIGITS,),
                "map": (DIGITS, dataset, "pca", 2, None),
                "map_decode_point": (DIGITS, dataset, "pca", 2, None, i),
            }[api]
            t0 = time.perf_counter()
            try:
                client.submit(*args, api_name=f"/{api}").result(timeout=timeout)
                out.append((tag + api, True, time.perf_counter() - t0, ""))
            except Exception as e:  # noqa: BLE001 - a failed request is a figure, not a crash
                out.append((tag + api, False, time.perf_counter() - t0, f"{type(e).__name__}: {str(e)[:120]}"))
    finally:
        client.close()


def _client_process(nice: int) -> None:
    """A client process starts: lower priority if asked, and gradio_client imported now (a second of CPU each) rather
    than when the visitors start, so the visitors' own start-up is not in the server's figures."""
    os.nice(nice)
    import gradio_client  # noqa: F401


def _group(url: str, plans: list[list[str]], photo: str, start_at: float, deadline: float, timeout: float,
           pause: float = 0.0, tag: str = "") -> list:
    """Some visitors, one thread each, in one process (the results come back to the parent); they start together at
    ``start_at``."""
    time.sleep(max(0.0, start_at - time.time()))
    out: list = []
    threads = [threading.Thread(target=visitor, args=(url, p, photo, deadline, timeout, out, pause, tag), daemon=True)
               for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.time() + timeout))
    return list(out)


def run_round(url: str, n: int, m: int, photo: str, family: bool, round_timeout: float, timeout: float,
              processes: int = 4, nice: int = 0, probe: int = 0) -> list:
    """n visitors spread over ``processes`` client processes (one process's GIL would slow the clients, not the
    server, and the latencies would say so); with ``probe``, one more visitor in its own process sends that many
    light requests only, one a second, while the crowd's heavy jobs run (``PROBE`` + endpoint in the results)."""
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + START_DELAY_S
    deadline = start_at + round_timeout
    plans = [plan(m, family)[k % 2:] + plan(m, family)[:k % 2] for k in range(n)]
    groups = [plans[i::processes] for i in range(min(processes, n))]
    light = [e for e in LIGHT if family or not e.startswith("family")]
    with ProcessPoolExecutor(len(groups) + bool(probe), initializer=_client_process, initargs=(nice,)) as pool:
        futures = [pool.submit(_group, url, g, photo, start_at, deadline, timeout) for g in groups]
        if probe:
            futures.append(pool.submit(_group, url, [[light[i % len(light)] for i in range(probe)]], photo,
                                       start_at + 5.0, deadline, timeout, 1.0, PROBE))
        return [r for f in futures for r in f.result()]


KILLED = r"""
import os, signal, sys
from gradio_client import Client, handle_file
job = Client(sys.argv[1], verbose=False).submit("small_ae/faces", handle_file(sys.argv[2]), None, "auto", "mse", 1000,
                                                 False, 0, False, api_name="/project")
for _ in job:
    print("started", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_client(server: Server, photo: str) -> tuple[float, float]:
    """Server CPU seconds in the 0-5 s and 5-10 s after a client is killed mid-way through a 1000-step projection."""
    subprocess.run([sys.executable, "-c", KILLED, server.url, photo], timeout=300, capture_output=True)
    c0 = server.cpu_s()
    time.sleep(5)
    c5 = server.cpu_s()
    time.sleep(5)
    return c5 - c0, server.cpu_s() - c5


# ----- flood: one client against fair turns --------------------------------------------------------------------------
def _first_output(jobs: list, seen: dict, stop: threading.Event, ended: dict | None = None) -> None:
    """Note when each gradio_client job's first output (or its end) arrives: its turn has come; and its end."""
    ended = {} if ended is None else ended
    while not stop.is_set():
        for i, job in enumerate(list(jobs)):
            if i not in seen and (job.outputs() or job.done()):
                seen[i] = time.monotonic()
            if i not in ended and job.done():
                ended[i] = time.monotonic()
        time.sleep(0.05)


def _newcomer(url: str, photo: str, timeout: float) -> tuple[float, float, str]:
    """A second visitor's 5-step projection while the flood is on: (wait for its turn s, total s, outcome)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    seen: dict = {}
    stop = threading.Event()
    t0 = time.monotonic()
    job = client.submit(FACES, handle_file(photo), None, "auto", "mse", 5, False, 0, False, tune=False, api_name="/project")
    watch = threading.Thread(target=_first_output, args=([job], seen, stop), daemon=True)
    watch.start()
    try:
        outcome = "ok" if str(job.result(timeout=timeout)[3]).startswith("**Done.**") else "no result"
    except Exception as e:  # noqa: BLE001 - a figure, not a crash
        outcome = f"{type(e).__name__}: {str(e)[:100]}"
    total = time.monotonic() - t0
    stop.set()
    watch.join(5)
    client.close()
    return seen.get(0, t0 + total) - t0, total, outcome


def _sse_outcome(text: str) -> str:
    """'ran' / 'refused' / 'failed: …' from a /call stream."""
    if "event: complete" in text:
        return "ran"
    if "event: error" in text:
        return "refused" if "already have a job running" in text or "Busy:" in text else f"failed: {text[-160:]!r}"
    return f"failed: {text[-160:]!r}"


def flood(server: Server, photo: str, n: int, steps: int, timeout: float) -> list[tuple]:
    """The two floods; per flood: (who, ran, refused, failed, newcomer's wait s, newcomer's total s, its outcome)."""
    import httpx
    from gradio_client import Client, handle_file

    from core.image_input import default_max_side

    rows = []
    # 1. one gradio_client session submits n projections at once (tuning on: the model tunes after projecting)
    client = Client(server.url, verbose=False)
    args = (FACES, handle_file(photo), None, "auto", "mse", steps, False, 0, False)
    jobs = [client.submit(*args, tune=True, api_name="/project") for _ in range(n)]
    seen: dict = {}
    ended: dict = {}
    stop = threading.Event()
    threading.Thread(target=_first_output, args=(jobs, seen, stop, ended), daemon=True).start()
    time.sleep(3.0)  # refusals come at once
    wait, total, outcome = _newcomer(server.url, photo, timeout)
    ran = refused = failed = 0
    took = []
    for i, job in enumerate(jobs):
        try:
            ok = str(job.result(timeout=timeout)[3]).startswith("**Done.**")
            ran, failed = ran + ok, failed + (not ok)
            time.sleep(0.2)
            took.append(ended.get(i, time.monotonic()) - seen.get(i, time.monotonic()))
        except Exception as e:  # noqa: BLE001 - counted
            hit = "already have a job running" in str(e) or "Busy:" in str(e)
            refused, failed = refused + hit, failed + (not hit)
    stop.set()
    client.close()
    rows.append(("one gradio_client session", ran, refused, failed, wait, total, outcome))
    print("  the flood's jobs that ran took (first output to end) "
          + ", ".join(f"{t:.0f}" for t in took) + " s")

    # 2. raw HTTP: one client (its cookie kept), a fresh session hash per call (/call makes one each time)
    with httpx.Client(base_url=server.url, timeout=timeout) as raw:
        raw.get("config")  # the app sets its owner cookie

        def call() -> str:  # each call its own upload (a session's uploads go when that session ends)
            path = raw.post("gradio_api/upload", files={"files": ("photo.jpg", Path(photo).read_bytes())}).json()[0]
            data = [FACES, {"path": path, "meta": {"_type": "gradio.FileData"}}, None, "auto", "mse", steps, False, 0,
                    False, default_max_side(), True]
            return raw.post("gradio_api/call/project", json={"data": data}).json()["event_id"]

        events = [call() for _ in range(n)]
        answers: dict = {}

        def read(event: str) -> None:
            try:
                answers[event] = _sse_outcome(raw.get(f"gradio_api/call/project/{event}").text)
            except Exception as e:  # noqa: BLE001 - counted
                answers[event] = f"failed: {type(e).__name__}"

        readers = [threading.Thread(target=read, args=(e,), daemon=True) for e in events]
        for t in readers:
            t.start()
        time.sleep(3.0)
        wait, total, outcome = _newcomer(server.url, photo, timeout)
        for t in readers:
            t.join(timeout)
    got = list(answers.values())
    rows.append(("raw HTTP, fresh session hash per call", got.count("ran"), got.count("refused"),
                 sum(a.startswith("failed") for a in got), wait, total, outcome))
    for why in sorted({a for a in got if a.startswith("failed")})[:3]:
        print(f"  raw HTTP {why}")
    return rows


def _light(api: str) -> bool:
    return api.removeprefix(PROBE) in LIGHT


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


PHASES = ("queue_wait", "preprocess", "fn_call", "postprocess", "total")


def print_phases(traces: list[dict], summary: dict) -> None:
    """Server-side p50 / p95 per phase for each endpoint (ms), and the uploads: the part of a visitor's wait the
    server spends queueing, converting files, in our function, and saving outputs."""
    by = defaultdict(list)
    for t in traces:
        by[str(t.get("fn_name"))].append(t)
    print("\nserver-side phases, p50 / p95 ms (GRADIO_PROFILING; uploads are separate requests)")
    print("| endpoint | n | " + " | ".join(PHASES) + " |")
    print("|---|---|" + "---|" * len(PHASES))
    for name in sorted(by, key=lambda k: (k not in LIGHT, k)):
        if name == "gradio_file_upload":
            continue
        rows = by[name]
        cells = [f"{_pct([r[p + '_ms'] for r in rows], 50):.0f} / {_pct([r[p + '_ms'] for r in rows], 95):.0f}"
                 for p in PHASES]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    up = summary.get("upload")
    if up:
        print(f"uploads: {up['count']}, p50 {up['p50']:.0f} ms, p95 {up['p95']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=None, help="the server's --concurrency (default: its own choice)")
    ap.add_argument("--idle", type=float, default=5.0, help="the server's --idle-timeout (REST sessions end after it)")
    ap.add_argument("--round-timeout", type=float, default=600.0, help="no new request after this many seconds")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    ap.add_argument("--processes", type=int, default=4, help="client processes the visitors are spread over")
    ap.add_argument("--client-nice", type=int, default=0,
                    help="run the client processes at this nice level (visitors are on other machines in a real "
                         "deployment; here they share the server's cores)")
    ap.add_argument("--probe", type=int, default=60,
                    help="light requests of one more visitor, alone in its process, during each round (0: none)")
    ap.add_argument("--profile", action="store_true",
                    help="also print where light events spend their time on the server (Gradio's GRADIO_PROFILING)")
    ap.add_argument("--flood", action="store_true",
                    help="instead: one client submits --flood-jobs face projections at once, through gradio_client and "
                         "then raw HTTP; a second visitor's 5-step projection is timed during each")
    ap.add_argument("--flood-jobs", type=int, default=20)
    ap.add_argument("--flood-steps", type=int, default=100)
    a = ap.parse_args(argv)
    if a.flood:
        return main_flood(a)
    if min(a.clients, a.requests, a.rounds) < 1:
        ap.error("--clients, --requests and --rounds must be 1 or more")
    family = all(p.is_file() for p in PHOTOS)
    if not family:
        print(f"note: {PHOTOS[0].parent} not found: the Family requests are left out", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="latent_lab_load_") as tmp:
        tmp = Path(tmp)
        photo = tmp / "photo.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
        (tmp / "server").mkdir()
        server = Server(tmp / "server", a.idle, a.concurrency, a.profile)
        traces: tuple[list[dict], dict] = ([], {})
        try:
            t0 = time.time()
            warm = run_round(server.url, 2, len(plan(99, family)[:10]), str(photo), family, a.round_timeout, a.timeout)
            warm_failed = [r for r in warm if not r[1]]
            time.sleep(a.idle * 3)
            rss = [("after warm-up", server.rss_mb())]
            if a.profile:
                import httpx

                httpx.post(server.url + "gradio_api/profiling/clear", timeout=30)
            print(f"warm-up: {len(warm) - len(warm_failed)}/{len(warm)} ok in {time.time() - t0:.0f} s"
                  + "".join(f"\n  failed {api}: {why}" for api, _, _, why in warm_failed))
            results: list = []
            rounds = []
            for r in range(a.rounds):
                t0 = time.time()
                c0 = server.cpu_s()
                out = run_round(server.url, a.clients, a.requests, str(photo), family, a.round_timeout, a.timeout,
                                a.processes, a.client_nice, a.probe)
                wall, cpu = time.time() - t0 - START_DELAY_S, server.cpu_s() - c0
                results += out
                gone = time.time()  # the clients have disconnected: idle CPU, then the sessions' files
                c1 = server.cpu_s()
                time.sleep(5)
                idle_cpu = server.cpu_s() - c1
                while server.files() and time.time() - gone < a.idle * 6 + 10:
                    time.sleep(0.5)
                left = len(server.files())
                rss.append((f"after round {r + 1}", server.rss_mb()))
                rounds.append((r + 1, sum(ok for _, ok, _, _ in out), len(out), wall, cpu, idle_cpu, left,
                               time.time() - gone))
            if a.profile:
                traces = server.traces()
            stop_cpu = killed_client(server, str(photo))
            while server.files() and time.time() - gone < 60:
                time.sleep(0.5)
        finally:
            server_cpu = server.cpu_s() if server.proc.poll() is None else 0.0
            code = server.stop()
        after_stop = sum(1 for p in (tmp / "server").rglob("*") if p.is_file())

    print(f"\n{a.clients} clients x {a.requests} requests x {a.rounds} rounds, {os.cpu_count()} cores, server "
          f"--concurrency {a.concurrency or 'default'}\n")
    print("| round | ok / sent | wall s | server CPU s | CPU s in the 5 s after clients left | files left | s until 0 |")
    print("|---|---|---|---|---|---|---|")
    for r, ok, n, wall, cpu, idle_cpu, left, waited in rounds:
        print(f"| {r} | {ok} / {n} | {wall:.0f} | {cpu:.0f} | {idle_cpu:.2f} | {left} | {waited:.0f} |")
    print("\n| endpoint | kind | ok | failed | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|---|---|")
    by = defaultdict(list)
    for api, ok, dt, why in results:
        by[api].append((ok, dt, why))
    for api in sorted(by, key=lambda k: (k.startswith(PROBE), _light(k), k)):
        ok = [dt for good, dt, _ in by[api] if good]
        kind = "light, alone" if api.startswith(PROBE) else "light" if _light(api) else "heavy"
        print(f"| {api} | {kind} | {len(ok)} | {len(by[api]) - len(ok)} | "
              f"{_pct(ok, 50):.2f} | {_pct(ok, 95):.2f} | {max(ok, default=float('nan')):.2f} |")
    light = [dt for api, ok, dt, _ in results if ok and _light(api) and not api.startswith(PROBE)]
    print(f"\nthe crowd's light events: p50 {_pct(light, 50):.2f} s, p95 {_pct(light, 95):.2f} s (target p95 < 1 s)")
    alone = [dt for api, ok, dt, _ in results if ok and api.startswith(PROBE)]
    if alone:
        print(f"a visitor sending light requests only, one a second, while the crowd's heavy jobs run: "
              f"p50 {_pct(alone, 50):.2f} s, p95 {_pct(alone, 95):.2f} s")
    base = rss[0][1]
    print("server RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss)
          + f"; growth after warm-up {100 * (max(v for _, v in rss) - base) / base:.1f} % (target < 10 %)")
    print(f"killed client's 1000-step projection: server CPU {stop_cpu[0]:.2f} s in the 5 s after the kill, "
          f"{stop_cpu[1]:.2f} s in the 5 s after that")
    print(f"files left after the sessions closed: {left}; after stop (exit {code}): {after_stop}")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    clients = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - server_cpu
    print(f"CPU of the client processes: {clients:.0f} s; load average at the end: "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if traces[0]:
        print_phases(*traces)
    failures = defaultdict(int)
    for api, ok, _, why in results:
        if not ok:
            failures[f"{api}: {why}"] += 1
    for why, count in sorted(failures.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  failed x{count}: {why}")
    return 0


def main_flood(a) -> int:
    photo = PHOTOS[0]
    if not photo.is_file():
        print(f"note: {photo} not found: a random image stands in for the face photo", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="latent_lab_flood_") as tmp:
        tmp = Path(tmp)
        if not photo.is_file():
            photo = tmp / "photo.png"
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
        (tmp / "server").mkdir()
        server = Server(tmp / "server", a.idle, a.concurrency)
        try:
            t0 = time.time()
            warm = _newcomer(server.url, str(photo), a.timeout)  # loads the model: the floods then time turns only
            print(f"warm-up 5-step projection: {warm[1]:.1f} s ({warm[2]})")
            rows = flood(server, str(photo), a.flood_jobs, a.flood_steps, a.timeout)
        finally:
            code = server.stop()
    print(f"\nflood: {a.flood_jobs} projections of {a.flood_steps} steps (then tuning) from one client, {os.cpu_count()} "
          f"cores, server --concurrency {a.concurrency or 'default'}, {time.time() - t0:.0f} s in all (server exit {code})\n")
    print("| flooding client | ran | refused | failed | second visitor's 5-step projection: wait for its turn s | "
          "total s | outcome |")
    print("|---|---|---|---|---|---|---|")
    for who, ran, refused, failed, wait, total, outcome in rows:
        print(f"| {who} | {ran} | {refused} | {failed} | {wait:.1f} | {total:.1f} | {outcome} |")
    print("target: the second visitor's projection done within 45 s on 2 cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
