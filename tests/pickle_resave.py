"""Re-save a (trusted) network-pickle fixture with another pickle protocol, as ``pickle.dump(..., protocol=2)`` of a
loaded network would: the test's own stand-ins pickle themselves back under the original global names."""

from __future__ import annotations

import io
import pickle
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


class _Persistent:
    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def _reconstruct_persistent_obj(meta: dict) -> _Persistent:
    return _Persistent(meta)


class EasyDict(dict):
    pass


def _load_from_bytes(b: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(b), weights_only=True)


_FAKE = {
    "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
    "dnnlib.util": {"EasyDict": EasyDict},
}


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in _FAKE:
            return _FAKE[module][name]
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_from_bytes
        return super().find_class(module, name)


def resave(src: Path, protocol: int, edit: Callable[[dict], None] | None = None) -> bytes:
    """The bytes of ``src`` re-pickled with ``protocol`` (globals keep their original module and name).

    ``edit`` may change the unpickled data first (persistent objects are ``_Persistent`` with their ``meta``)."""
    with open(src, "rb") as f:
        data = _Reader(f).load()
    if edit is not None:
        edit(data)
    saved = {}
    for qual, attrs in _FAKE.items():  # make the stand-ins findable under the original names while pickling
        parts = qual.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            saved[name] = sys.modules.get(name)
            sys.modules.setdefault(name, types.ModuleType(name))
        for attr, obj in attrs.items():
            setattr(sys.modules[qual], attr, obj)
            obj.__module__, obj.__qualname__ = qual, attr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pickle.dumps(data, protocol=protocol)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
