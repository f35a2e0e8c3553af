"""Resumable, verified downloads of network pickles into the user cache.

A download streams into ``<name>.part`` beside its final path, resumes with an
HTTP Range request after a cut connection (``If-Range`` guards against the file
having changed on the server), restarts from zero when a server ignores Range,
and is checked by a verification callback (by default the safe loader) before
``os.replace`` gives it its final name. So the final name only ever holds a
complete, loadable file. A ``.part`` file is only kept when it is a valid
prefix of the remote file (the connection was cut), or complete but not yet
checkable (our loader missing, out of memory); anything refused is deleted.

``requests`` and ``tqdm`` are imported on use, so listing models stays cheap.
Run ``python -m plugins.stylegan.download --help`` for the command line.

Why one file of ~470 lines, with ``fetch`` and ``_transfer`` over 80 lines: resumable download, retry,
verification and the offline message are one protocol; its steps are kept in order where they can be read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickletools
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.paths import cache_dir

Progress = Callable[[int, "int | None"], None]  # progress(done_bytes, total_bytes or None when unknown)
Verify = Callable[[Path], Any]  # raises when the file is unusable

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # longest silence tolerated mid-transfer
CHUNK = 1 << 18
PICKLE_MAGIC = b"\x80"  # PROTO opcode: every pickle of protocol >= 2 (NVIDIA's use 3 and 4) starts with it


class DownloadError(RuntimeError):
    """A download failed; the message is a plain sentence for the user (URL and manual path included)."""


class NotDownloadedError(FileNotFoundError):
    """A model was asked to load before its weights were on disk."""


class _Interrupted(Exception):
    """The body stopped early; the ``.part`` file holds a valid prefix."""

    def __init__(self, done: int, total: int | None, why: str) -> None:
        super().__init__(why)
        self.done, self.total, self.why = done, total, why


class _Restart(Exception):
    """The partial file cannot be resumed; it was deleted, start again from zero."""


def pickles_dir() -> Path:
    """Where downloaded network pickles live (``$LATENT_LAB_CACHE/stylegan/pickles``)."""
    return cache_dir("stylegan", "pickles")


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


# ----- verification ------------------------------------------------------------------


def check_pickle_stream(path: str | os.PathLike) -> None:
    """Walk the pickle's opcodes without executing any (cheap, torch-free).

    Catches a file that is not a pickle, or one cut short, before the heavier
    loader runs. It says nothing about what the pickle would build.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(1) != PICKLE_MAGIC:
                raise ValueError("it does not start like a pickle (protocol 2 or later)")
            f.seek(0)
            last = None
            for op, _arg, _pos in pickletools.genops(f):
                last = op.name
            if last != "STOP":
                raise ValueError("the pickle stream has no end")
    except ValueError as e:
        raise ValueError(f"'{path.name}' is not a complete pickle: {e}") from None


def verify_network_pickle(path: str | os.PathLike) -> Any:
    """The default check: the pickle is complete and the safe loader builds a generator from it.

    Returns the generator. Nothing in the file is executed (see ``pickle_loader``).
    """
    check_pickle_stream(path)
    from plugins.stylegan.pickle_loader import load_network_pickle

    return load_network_pickle(path)


# ----- download ----------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(dest: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(dest.resolve()), threading.Lock())


@contextlib.contextmanager
def _exclusive(dest: Path):
    """One download per destination: threads wait, another process gets a clear error."""
    with _lock_for(dest):
        try:
            import fcntl
        except ImportError:  # Windows: the in-process lock is all we have
            yield
            return
        with open(dest.with_name(dest.name + ".lock"), "a") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise DownloadError(f"'{dest.name}' is being downloaded by another process; wait for it to finish.") from None
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _manual(url: str, dest: Path) -> str:
    return f"To install it by hand, download {url} (e.g. in a browser) and put the file at {dest}"


def _discard(dest: Path) -> None:
    for p in (part_path(dest), _meta_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not possible on every OS / file system
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _why_unreachable(e: Exception) -> str:
    """A plain reason for a failed connection, from requests' exception chain."""
    import requests

    chain, seen = [], e
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args and isinstance(seen.args[0], Exception) else None)
    names = " ".join(type(x).__name__ for x in chain) + " " + " ".join(str(x) for x in chain)
    if isinstance(e, requests.exceptions.SSLError):
        return "the secure connection failed (check the system clock, or a proxy that intercepts HTTPS)"
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return "the connection timed out (offline, or a firewall blocks it)"
    if isinstance(e, requests.exceptions.ReadTimeout):
        return "the server did not answer in time"
    if "NameResolution" in names or "getaddrinfo" in names or "Name or service not known" in names:
        return "the server name could not be resolved (no internet connection, or a DNS failure)"
    if "ConnectionRefused" in names or "Connection refused" in names:
        return "the connection was refused (the server is down or unreachable)"
    return "no connection could be made (no internet connection?)"


def _http_error(status: int, reason: str, url: str, dest: Path) -> DownloadError:
    if status == 404:
        what = "the server has no file there (HTTP 404 Not Found); it may have moved"
    elif status in (401, 403):
        what = f"the server refused access (HTTP {status} {reason})"
    elif status >= 500:
        what = f"the server had an error (HTTP {status} {reason}); try again later"
    else:
        what = f"the server answered HTTP {status} {reason}"
    return DownloadError(f"Could not download {url}: {what}. {_manual(url, dest)}.")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.split("-", 1)[0]
    return (int(start) if start.strip().isdigit() else None), (int(total) if total.strip().isdigit() else None)


def _read_meta(dest: Path) -> dict:
    try:
        return json.loads(_meta_path(dest).read_text())
    except (OSError, ValueError):
        return {}


def _transfer(session, url: str, dest: Path, progress: Progress | None, timeout: tuple[float, float], chunk_size: int) -> None:
    """Fetch (the rest of) ``url`` into the ``.part`` file of ``dest``; raises _Interrupted / _Restart / DownloadError."""
    import requests

    part, meta = part_path(dest), _read_meta(dest)
    offset = part.stat().st_size if part.exists() else 0
    if offset and meta.get("url") != url:  # a leftover we cannot vouch for
        _discard(dest)
        offset, meta = 0, {}
    total = meta.get("total")
    if offset and total is not None and offset > total:
        _discard(dest)
        raise _Restart()
    if offset and total is not None and offset == total:
        return  # complete already (e.g. verification could not run last time)

    headers = {"Accept-Encoding": "identity"}  # byte ranges must refer to the file itself, not a compressed stream
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]  # the server sends the whole new file (200) if it changed
    try:
        r = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.exceptions.RequestException as e:
        raise DownloadError(f"Could not download {url}: {_why_unreachable(e)}. {_manual(url, dest)}.") from None

    with r:
        if r.status_code == 416 and offset:  # range not satisfiable: the part is complete, or not this file's prefix
            if _content_range(r.headers.get("Content-Range"))[1] == offset:
                return
            _discard(dest)
            raise _Restart()
        if r.status_code >= 400:
            raise _http_error(r.status_code, r.reason or "", url, dest)
        encoded = r.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if r.status_code == 206:
            start, total = _content_range(r.headers.get("Content-Range"))
            if start != offset or encoded or (meta.get("total") is not None and total != meta["total"]):  # not our file's tail
                _discard(dest)
                raise _Restart()
            mode = "ab"
        else:  # 200: a fresh start, or a server that ignores Range / a file that changed: start over
            offset = 0
            length = r.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() and not encoded else None
            validator = r.headers.get("ETag", "")
            if not validator or validator.startswith("W/"):  # If-Range needs a strong validator
                validator = r.headers.get("Last-Modified", "")
            part.parent.mkdir(parents=True, exist_ok=True)
            _meta_path(dest).write_text(json.dumps({"url": url, "total": total, "validator": validator}))
            mode = "wb"

        if total is not None:
            free = shutil.disk_usage(part.parent).free
            if free < total - offset:
                raise DownloadError(
                    f"Not enough disk space for {dest.name}: it needs {(total - offset) / 1e6:.0f} MB more in {part.parent}, "
                    f"which has {free / 1e6:.0f} MB free."
                )
        if hasattr(r.raw, "enforce_content_length"):
            r.raw.enforce_content_length = False  # keep every byte of a short body; we compare with the total ourselves
        done = offset
        if progress:
            progress(done, total)
        with open(part, mode) as f:
            try:
                for chunk in r.iter_content(chunk_size):
                    if not chunk:
                        continue
                    if done == 0 and not chunk.startswith(PICKLE_MAGIC):
                        f.close()
                        _discard(dest)
                        kind = r.headers.get("Content-Type", "unknown type")
                        head = chunk[:40].decode("utf-8", "replace").strip()
                        raise DownloadError(
                            f"The server sent something that is not a network pickle ({kind}, starting {head!r}) "
                            f"for {url}; nothing was kept. {_manual(url, dest)}."
                        )
                    f.write(chunk)
                    done += len(chunk)
                    if total is not None and done > total:
                        f.close()
                        _discard(dest)
                        raise DownloadError(f"The server sent more than the announced {total} bytes for {url}; nothing was kept.")
                    if progress:
                        progress(done, total)
            except requests.exceptions.RequestException as e:
                f.flush()
                raise _Interrupted(done, total, f"the connection was cut ({type(e).__name__})") from None
            f.flush()
            os.fsync(f.fileno())
        if total is not None and done < total:
            raise _Interrupted(done, total, "the server closed the connection early")
        if total is None:  # length unknown: remember the size we got, so a re-run does not re-fetch
            _meta_path(dest).write_text(json.dumps({**_read_meta(dest), "total": done}))


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    progress: Progress | None = None,
    verify: Verify | None = verify_network_pickle,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    retries: int = 3,
    backoff_s: float = 1.0,
    chunk_size: int = CHUNK,
    session=None,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic) and return ``dest``.

    ``progress(done_bytes, total_bytes)`` is called as bytes arrive (total is
    None when the server does not say). After a cut connection the transfer
    resumes from the ``.part`` file up to ``retries`` times (waiting
    ``backoff_s`` x the attempt number between tries); if it still fails
    the part is kept so the next call resumes. ``verify(part_path)`` must raise
    if the file is unusable: the part is then deleted. Raises DownloadError
    with a plain message (the URL and where to put the file by hand).
    """
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        if dest.is_file():
            if progress:
                size = dest.stat().st_size
                progress(size, size)
            return dest
        own_session = session is None
        session = session or requests.Session()
        try:
            attempts, restarts = 0, 0
            while True:
                try:
                    _transfer(session, url, dest, progress, timeout, chunk_size)
                    break
                except _Restart:
                    restarts += 1
                    if restarts > 2:
                        raise DownloadError(
                            f"The server at {url} keeps sending inconsistent byte ranges. {_manual(url, dest)}."
                        ) from None
                except _Interrupted as e:
                    attempts += 1
                    if attempts > retries:
                        got = f"{e.done / 1e6:.1f} of {e.total / 1e6:.1f} MB" if e.total else f"{e.done / 1e6:.1f} MB"
                        raise DownloadError(
                            f"The download of {url} stopped after {got}: {e.why}. The part already downloaded is kept "
                            f"({part_path(dest)}): try again to resume. {_manual(url, dest)}."
                        ) from None
                    time.sleep(backoff_s * attempts)
                except OSError as e:  # our side: disk full, no permission (requests' own errors never get here)
                    raise DownloadError(
                        f"Could not write {part_path(dest)}: {e.strerror or e}. Free some space or fix the folder's "
                        f"permissions, then try again (what was downloaded so far is kept)."
                    ) from e
        finally:
            if own_session:
                session.close()

        part = part_path(dest)
        if verify is not None:
            try:
                verify(part)
            except (ImportError, MemoryError) as e:  # our side failed, not the file: keep it for the next try
                why = "not enough memory to load it" if isinstance(e, MemoryError) else str(e)
                raise DownloadError(f"Downloaded {dest.name}, but it could not be checked ({why}); it is kept as {part}.") from e
            except Exception as e:
                _discard(dest)
                raise DownloadError(
                    f"The file downloaded from {url} is not a usable network pickle ({e}); it was deleted. {_manual(url, dest)}."
                ) from e
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        with contextlib.suppress(FileNotFoundError):
            _meta_path(dest).unlink()
        return dest


def partial_bytes(dest: str | os.PathLike) -> tuple[int, int | None]:
    """(bytes already in the .part file, expected total or None): lets the UI say "resume"."""
    dest = Path(dest)
    part = part_path(dest)
    return (part.stat().st_size if part.exists() else 0), _read_meta(dest).get("total")


# ----- terminal progress -------------------------------------------------------------


class TqdmProgress:
    """A ``progress(done, total)`` callback drawing a tqdm bar (for the command line)."""

    def __init__(self, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=True)

    def __call__(self, done: int, total: int | None) -> None:
        if total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        if done < self.bar.n:  # the server made us start over
            self.bar.reset(total=total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m plugins.stylegan.download [NAME ...] [--list] [--all]``."""
    import argparse

    from plugins.stylegan.catalog import CHECKPOINTS, checkpoint

    ap = argparse.ArgumentParser(
        prog="python -m plugins.stylegan.download", description="Download NVIDIA StyleGAN network pickles."
    )
    ap.add_argument("names", nargs="*", help="catalog names, e.g. stylegan2/ffhq-256")
    ap.add_argument("--list", action="store_true", help="list the catalog and what is on disk")
    ap.add_argument("--all", action="store_true", help="download every checkpoint (several GB)")
    args = ap.parse_args(argv)
    if args.list or not (args.names or args.all):
        for c in CHECKPOINTS:
            path = pickles_dir() / c.filename
            print(f"{c.name:28s} {'ready' if path.is_file() else 'not downloaded':15s} {c.url}")
        print(f"\nFolder: {pickles_dir()}  (non-commercial licence: see each model card)")
        return 0
    try:
        todo = list(CHECKPOINTS) if args.all else [checkpoint(n) for n in args.names]
    except KeyError as e:
        print(e.args[0])
        return 2
    failed = 0
    for c in todo:
        with TqdmProgress(c.name) as bar:
            try:
                path = fetch(c.url, pickles_dir() / c.filename, progress=bar)
            except DownloadError as e:
                bar.close()
                print(f"\n{e}")
                failed += 1
                continue
        print(f"{c.name}: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's contents, read in blocks (checkpoints are hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
