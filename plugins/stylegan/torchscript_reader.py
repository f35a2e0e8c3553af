"""Read the tensors of a TorchScript archive (``torch.jit.save``) without running anything from it.

``torch.jit.load`` compiles and runs the TorchScript code stored in the archive, so a file from the
internet could do anything. The format is a zip file whose entries sit in one top-level folder:

* ``<root>/data.pkl``: a protocol-2 pickle of the module tree. Every module is
  ``GLOBAL '__torch__.<qualified name>'``, ``NEWOBJ`` with no arguments, then ``BUILD`` with a dict
  of its attributes (parameters, buffers, submodules and plain values such as ``training``);
* tensors inside it are ``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``
  whose storage is a persistent id ``('storage', torch.<Type>Storage, key, location, numel)``;
  the raw little-endian bytes of storage ``key`` are the entry ``<root>/data/<key>``;
* ``<root>/code/...`` (the compiled Python-like source), ``constants.pkl``, ``version``,
  ``byteorder``: never read here, apart from checking ``byteorder``.

:func:`read_archive` unpickles ``data.pkl`` with an allow-list: ``__torch__`` classes become inert
:class:`ScriptObject` records, tensors are rebuilt from their bytes with bounds checks, and any
other global (``builtins.exec``, ``os.system``, ``torch.load``, ...) raises :class:`UnsafeArchiveError`.
"""

from __future__ import annotations

import collections
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

MAX_ARCHIVE_ENTRY = 4 << 30  # bytes; far above any checkpoint we read, below what would exhaust memory by accident


class TorchScriptArchiveError(ValueError):
    """The file is not a readable TorchScript archive (not a zip, truncated, unexpected layout)."""


class UnsafeArchiveError(TorchScriptArchiveError):
    """The archive's pickle asks for something a module archive never needs (a foreign global, code)."""


class ScriptObject:
    """Inert stand-in for one TorchScript object: its qualified class name and attribute dict."""

    qualified_name = "?"

    def __new__(cls, *args: Any) -> ScriptObject:
        if args:
            raise UnsafeArchiveError(f"refused constructor arguments for {cls.qualified_name}")
        obj = super().__new__(cls)
        obj.attrs = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise UnsafeArchiveError(f"refused object state of type {type(state).__name__} for {self.qualified_name}")
        self.attrs = dict(state)

    def __repr__(self) -> str:
        return f"ScriptObject({self.qualified_name})"


_CLASSES: dict[str, type] = {}
_QUALNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _script_class(qualified_name: str) -> type:
    """A ScriptObject subclass carrying the name (the name is data; nothing is imported or run)."""
    if len(qualified_name) > 300 or not _QUALNAME.fullmatch(qualified_name):
        raise UnsafeArchiveError(f"refused class name {qualified_name[:80]!r}")
    if qualified_name not in _CLASSES:
        _CLASSES[qualified_name] = type("ScriptObject", (ScriptObject,), {"qualified_name": qualified_name, "__slots__": ()})
    return _CLASSES[qualified_name]


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    """Stand-in for ``torch.<Type>Storage`` in a persistent id: only its dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    """One storage read from ``data/<key>``: a flat tensor of its dtype."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False, hooks: Any = None,
                    metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise UnsafeArchiveError("refused a tensor whose storage is not an archive entry")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise TorchScriptArchiveError("corrupt tensor header (size/stride)")
    ints = [offset, *size, *stride]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise TorchScriptArchiveError("corrupt tensor header (negative or non-integer size/stride/offset)")
    numel = storage.flat.numel()
    if math.prod(size) > 0 and offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= numel:
        raise TorchScriptArchiveError("corrupt tensor: its view reaches past the end of its storage")
    return storage.flat.as_strided(size, stride, offset).clone()


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None, state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafeArchiveError("refused a parameter that does not wrap a tensor")
    return data


def _as_list(values: Any) -> list:
    if not isinstance(values, list):
        raise UnsafeArchiveError("refused a typed list that is not a list")
    return values


def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
    return value  # TorchScript's static type annotation of a container; irrelevant for reading values


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _as_list,
    ("torch.jit._pickle", "build_floatlist"): _as_list,
    ("torch.jit._pickle", "build_boollist"): _as_list,
    ("torch.jit._pickle", "build_doublelist"): _as_list,
    ("torch.jit._pickle", "build_tensorlist"): _as_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(file)
        self._archive, self._root = archive, root
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _script_class(f"{module}.{name}")
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeArchiveError(f"refused global '{module}.{name}'") from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeArchiveError(f"refused persistent id {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise UnsafeArchiveError("refused a storage of an unknown type")
        if not isinstance(key, str) or not key.isdigit() or not isinstance(numel, int) or numel < 0:
            raise UnsafeArchiveError(f"refused storage key {str(key)[:40]!r}")
        if key not in self._storages:
            entry = f"{self._root}/data/{key}"
            try:
                info = self._archive.getinfo(entry)
            except KeyError:
                raise TorchScriptArchiveError(f"the archive lacks the tensor data entry '{entry}'") from None
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if info.file_size != numel * itemsize or info.file_size > MAX_ARCHIVE_ENTRY:
                raise TorchScriptArchiveError(f"tensor data entry '{entry}' has {info.file_size} bytes, expected {numel * itemsize}")
            data = bytearray(self._archive.read(entry))
            flat = torch.frombuffer(data, dtype=kind.dtype) if data else torch.empty(0, dtype=kind.dtype)
            self._storages[key] = _Storage(flat)
        return self._storages[key]


def _root_folder(names: list[str]) -> str:
    roots = {n.split("/", 1)[0] for n in names if n.endswith("/data.pkl") and n.count("/") == 1}
    if len(roots) != 1:
        raise TorchScriptArchiveError("not a TorchScript archive: expected exactly one '<folder>/data.pkl' entry")
    return roots.pop()


def read_archive(path: str | Path) -> ScriptObject:
    """Unpickle the module tree of a TorchScript archive into :class:`ScriptObject` records (no code runs)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise TorchScriptArchiveError(f"'{path.name}' is not a TorchScript archive (not a readable zip file: {e}).") from None
    with archive:
        names = archive.namelist()
        root = _root_folder(names)
        if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() not in (b"little", b""):
            raise TorchScriptArchiveError(f"'{path.name}' stores big-endian tensors, which are not supported.")
        info = archive.getinfo(f"{root}/data.pkl")
        if info.file_size > 64 << 20:
            raise TorchScriptArchiveError(f"'{path.name}' has an implausibly large module pickle ({info.file_size} bytes).")
        try:
            with archive.open(info) as f:
                obj = _Unpickler(f, archive, root).load()
        except TorchScriptArchiveError as e:
            raise type(e)(f"'{path.name}' was refused: {e}") from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
            raise TorchScriptArchiveError(f"'{path.name}' is truncated or corrupt ({type(e).__name__}: {e}).") from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError, RecursionError, RuntimeError) as e:
            raise TorchScriptArchiveError(f"'{path.name}' is corrupt ({type(e).__name__}: {e}).") from None
    if not isinstance(obj, ScriptObject):
        raise TorchScriptArchiveError(f"'{path.name}' holds a {type(obj).__name__}, not a TorchScript module.")
    return obj


def named_tensors(root: ScriptObject) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the module tree by dotted path, like a state dict ("layers.conv1.weight")."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(obj: ScriptObject, prefix: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for name, value in obj.attrs.items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
            elif isinstance(value, ScriptObject):
                walk(value, f"{prefix}{name}.")

    walk(root, "")
    return out
