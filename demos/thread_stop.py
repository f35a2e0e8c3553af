"""Ending a computation that offers no way to stop it (a UMAP or t-SNE fit) from another thread, safely."""

from __future__ import annotations

import threading


class MapStopped(BaseException):
    """Raised inside the map's worker thread by Stop. A BaseException, so library code that catches Exception (and
    would carry on) lets it through."""


def interrupt(thread: threading.Thread) -> bool:
    """Raise :class:`MapStopped` in ``thread`` at its next Python step, unless it is importing a module or compiling
    numba code (an import cut short leaves the module broken for the whole process); True when sent.

    UMAP (umap-learn has no per-epoch callback) and scikit-learn's t-SNE fit in Python loops around compiled steps
    (UMAP: an epoch; t-SNE: a gradient step), so the fit ends within one of them and its memory is freed. A child
    process could be killed outright, but a fresh one compiles UMAP's numba code again every time (the warm-up at
    start-up only helps this process)."""
    import ctypes
    import os
    import sys

    unsafe = ("importlib", f"{os.sep}numba{os.sep}", f"{os.sep}llvmlite{os.sep}")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # the worker must not move on between the look at its stack and the exception
    try:
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if any(u in frame.f_code.co_filename for u in unsafe):
                return False
            frame = frame.f_back
        hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(MapStopped))
        if hit > 1:  # never: one thread id is one thread; undo rather than hit others
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
        return hit == 1
    finally:
        sys.setswitchinterval(interval)
