"""Run ``python app.py`` as a real server process for tests: its own TMPDIR, loopback only, bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_files(tmpdir: Path) -> list[Path]:
    """Every file under the server's TMPDIR (the app keeps nothing anywhere else)."""
    return sorted(p for p in tmpdir.rglob("*") if p.is_file())


def everything_in(tmpdir: Path) -> list[Path]:
    """Every file *and folder* under the server's TMPDIR: after a stop not even an empty folder may be left."""
    return sorted(tmpdir.rglob("*"))


class ServerProcess:
    def __init__(self, tmpdir: Path, *args: str, ignore_sigint: bool = False, cache: Path | None = None) -> None:
        self.tmpdir = tmpdir
        tmpdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "GRADIO_SHARE")}
        env.update(TMPDIR=str(tmpdir), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
                   LATENT_LAB_CACHE=str(cache or tmpdir.parent / "cache"), PYTHONUNBUFFERED="1")
        self.log = tmpdir.parent / f"server-{self.port}.log"

        def child_setup() -> None:  # what a background job of a non-interactive shell gets: SIGINT ignored
            if ignore_sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=child_setup,
        )
        deadline = time.time() + START_TIMEOUT_S
        while "is running at" not in self.output():
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"the app did not start:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status (``stop_s``: how long the exit took)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
            self.stop_s = time.monotonic() - start
            return code
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
