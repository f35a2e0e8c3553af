"""The app's private temporary folder: made at start, removed at every stop, and found again after a crash.

A folder that outlives its process holds strangers' photos, so each run writes
an owner file (its pid and the process start time) into its folder. At the
next start, folders of *this* naming, owned by this user, whose owner process
is gone, are removed. Nothing else is ever touched: not other users' folders,
not folders without an owner file, not a running instance's folder, not a
folder kept with ``--keep-files``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "latent_lab_gradio_"
OWNER_FILE = ".latent_lab_owner"
KEEP_FILE = ".latent_lab_keep"
# A session with no open browser tab (REST calls) ends after this many seconds without activity; its files go then.
IDLE_S = 600


def _start_time(pid: int) -> str:
    """The process start time in clock ticks since boot (Linux), or '' where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of the full line; fields 1-2 end at the last ')'


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone's process: treat as alive, never delete under it
    except OSError:
        return True
    now = _start_time(pid)
    return not (started and now and now != started)  # the pid was reused by another process


def create(base: str | os.PathLike | None = None, keep: bool = False) -> Path:
    """A new private folder (mode 700) under ``base`` (default: the system temp folder) with its owner file."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}_", dir=base))
    os.chmod(folder, 0o700)
    pid = os.getpid()
    (folder / OWNER_FILE).write_text(f"{pid} {_start_time(pid)}\n")
    if keep:
        (folder / KEEP_FILE).write_text("kept with --keep-files\n")
    return folder


def stale(base: str | os.PathLike | None = None) -> list[Path]:
    """Folders left by earlier runs of this app that crashed or were killed (see the module doc for the rules)."""
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    found = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return []
    for folder in candidates:
        try:
            st = folder.lstat()
            if not folder.is_dir() or folder.is_symlink() or st.st_uid != os.getuid():
                continue
            if (folder / KEEP_FILE).exists():
                continue
            pid_text, _, started = (folder / OWNER_FILE).read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # not ours, or still being created: leave it alone
        if pid != os.getpid() and not _alive(pid, started.strip()):
            found.append(folder)
    return found


def remove(folder: str | os.PathLike) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def remove_stale(base: str | os.PathLike | None = None) -> list[Path]:
    """Remove what :func:`stale` finds; returns the removed folders."""
    gone = stale(base)
    for folder in gone:
        remove(folder)
    return gone
