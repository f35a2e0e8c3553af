"""Safe reader for NVIDIA StyleGAN2-ADA / StyleGAN3 network pickles (``ffhq.pkl``, ``stylegan3-t-*.pkl``, ...).

The official loader executes the Python source embedded in every pickle (``module_src``) and
lets ``torch.storage._load_from_bytes`` run ``torch.load(weights_only=False)``: opening a
pickle runs its code. Here a restricted unpickler resolves only an allow-list of globals,
each mapped to an inert stand-in:

* persistent objects become :class:`PersistentRecord` (class name + state); ``module_src``
  is dropped unread and never executed;
* tensor storages go through ``torch.load(..., weights_only=True)``; tensors are rebuilt
  with bounds checks; numpy scalars/arrays are decoded from their bytes (numeric dtypes only).

Pickles re-saved with protocol 2 name ``__builtin__.set`` and encode bytes as
``_codecs.encode(text, 'latin1')``: both are allowed, the latter only with exactly that codec.
Any other global (``os.system``, ``builtins.exec``, ...) raises :class:`UnsafePickleError`.
The generator ``G_ema`` is then rebuilt as our own module from the stored attributes, and
every tensor is checked by name and shape. Attributes are untrusted too: those that size the network are
compared with the stored tensors first, and building it may not allocate more than the stored weights explain
(:func:`build_checked`), so a few tampered bytes cannot cost gigabytes before the shape check.

Why one file (over 450 lines): the restricted unpickler, its allow-list and the reconstruction of each network
class are one security boundary, reviewed as a whole.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from plugins.stylegan import networks_stylegan2 as sg2
from plugins.stylegan import networks_stylegan3 as sg3


class NetworkPickleError(ValueError):
    """The file is not a usable StyleGAN network pickle (wrong format, truncated, unsupported variant)."""


class UnsafePickleError(NetworkPickleError):
    """The pickle asks for something a network pickle never contains (a foreign global, code, a persistent id)."""


class PersistentRecord:
    """Inert stand-in for one of NVIDIA's persistent objects: its class name and ``__dict__`` state."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name, self.state = class_name, state

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("refused extra state on a persistent object (official pickles never set one)")

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a plain dict here)."""


class _NDArrayMarker:
    """Stand-in for the ``numpy.ndarray`` class argument of ``_reconstruct``."""


class _ArrayStub:
    """A numpy array being unpickled: ``_reconstruct`` then BUILD with ``(version, shape, dtype, fortran, bytes)``."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("refused numpy array state of an unexpected form")
        _version, shape, dtype, fortran, data = state
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes | bytearray):
            raise UnsafePickleError(f"refused numpy array of dtype {dtype!r} (only numeric arrays are allowed)")
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) * dtype.itemsize != len(data):
            raise NetworkPickleError("corrupt numpy array: its byte count does not match its shape")
        self.array = np.frombuffer(bytes(data), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError("refused a persistent object that is not a plain class record")
    if meta.get("version") != 6:
        raise NetworkPickleError(f"unsupported persistence format version {meta.get('version')!r} (expected 6)")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise NetworkPickleError("corrupt persistent object: missing class_name or state")
    return PersistentRecord(name, state)  # meta['module_src'] is deliberately ignored


def _load_storage(data: Any) -> Any:
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError("refused a tensor storage that is not a byte string")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafePickleError(f"refused tensor storage: torch.load(weights_only=True) rejected it ({first})") from None
    except Exception as e:
        raise NetworkPickleError(f"corrupt tensor storage ({type(e).__name__}: {e})") from None
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise UnsafePickleError(f"refused a tensor storage that decodes to {type(storage).__name__}")
    untyped = storage._untyped_storage if isinstance(storage, torch.TypedStorage) else storage
    if untyped.nbytes() > len(data):  # the budget check in build_checked counts storage bytes as bytes of the file
        raise NetworkPickleError("corrupt tensor storage: it holds more bytes than the file stores for it")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError("refused a tensor without a typed storage")
    ints = [storage_offset, *size, *stride]
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in ints):
        raise NetworkPickleError("corrupt tensor header (size/stride/offset)")
    untyped = storage._untyped_storage
    numel = untyped.nbytes() // storage.dtype.itemsize
    if math.prod(size) > 0 and storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= numel:
        raise NetworkPickleError("corrupt tensor: its view reaches past the end of its storage")
    t = torch.empty((0,), dtype=storage.dtype)
    return t.set_(untyped, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("refused a parameter that does not wrap a tensor")
    return data


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"refused numpy scalar of dtype {dtype!r} (only numeric scalars are allowed)")
    return np.frombuffer(data, dtype=dtype)[0]


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise UnsafePickleError("refused a numpy dtype that is not given by name")
    return np.dtype(spec, bool(align), bool(copy))


def _latin1_bytes(text, encoding):
    """``_codecs.encode`` as protocol-2 pickles use it for every ``bytes`` object: ``encode(str, 'latin1')``.

    Any other use (another codec, a non-string argument) is refused: codecs such as zlib or base64 would
    let a file run more than a byte conversion."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(
            f"refused _codecs.encode with encoding {encoding!r} (protocol-2 pickles only encode byte strings as 'latin1')"
        )
    return text.encode("latin-1")


def _np_reconstruct(cls, shape, typecode):
    if cls is not _NDArrayMarker:
        raise UnsafePickleError("refused numpy _reconstruct of a class other than ndarray")
    return _ArrayStub()


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    # protocol 2 (a network re-saved with pickle.dump(..., protocol=2)): Python 2 names, bytes as latin1 text
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): _NDArrayMarker,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`; refuses persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = " (this is a TensorFlow-era StyleGAN pickle; only the PyTorch format is supported)"
            raise UnsafePickleError(f"refused global '{module}.{name}'{hint}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id (network pickles use none)")


def _display_name(source: Any) -> str:
    """The file's base name for messages: they may reach a visitor, who must never see a server path."""
    name = source if isinstance(source, str | Path) else getattr(source, "name", None)
    return Path(name).name if isinstance(name, str | Path) and str(name) else "the pickle"


def read_network_pickle(source: str | Path | IO[bytes]) -> dict:
    """Unpickle a network pickle into plain data: the top-level dict with :class:`PersistentRecord` modules."""
    name = _display_name(source)
    f = open(source, "rb") if isinstance(source, str | Path) else source  # noqa: SIM115
    try:
        head = f.read(2)
        if len(head) < 2:
            raise NetworkPickleError(f"'{name}' is empty or too short to be a network pickle.")
        if head == b"PK":
            raise NetworkPickleError(f"'{name}' is a zip archive (a torch.save checkpoint?), not an NVIDIA network pickle.")
        if head[0] != 0x80 or head[1] not in (2, 3, 4, 5):
            raise NetworkPickleError(f"'{name}' is not a pickle file (it does not start with a pickle protocol 2-5 header).")
        if f.seekable():
            f.seek(f.tell() - 2)
        else:
            f = io.BytesIO(head + f.read())
        try:
            data = RestrictedUnpickler(f).load()
        except NetworkPickleError as e:
            raise type(e)(f"'{name}' was refused: {e}") from None
        except (pickle.UnpicklingError, EOFError) as e:
            raise NetworkPickleError(f"'{name}' is truncated or corrupt ({type(e).__name__}: {e}).") from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError, RecursionError) as e:
            raise NetworkPickleError(f"'{name}' is corrupt or not a network pickle ({type(e).__name__}: {e}).") from None
    finally:
        if f is not source:
            f.close()
    if not isinstance(data, dict):
        raise NetworkPickleError(f"'{name}' holds a {type(data).__name__}, not the dict of networks a network pickle holds.")
    return data


# ----- from records to our modules ------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists (for configs and comparisons)."""
    if isinstance(v, _ArrayStub):
        v = v.array
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _attr(rec: PersistentRecord, key: str, default: Any = KeyError) -> Any:
    if key in rec.state:
        return _plain(rec.state[key])
    if default is KeyError:
        raise NetworkPickleError(f"{rec.class_name} has no attribute '{key}' (not a supported StyleGAN network).")
    return default


def _sub(rec: PersistentRecord, name: str, class_name: str | None = None) -> PersistentRecord:
    mods = rec.state.get("_modules") or {}
    sub = mods.get(name)
    if not isinstance(sub, PersistentRecord):
        raise NetworkPickleError(f"{rec.class_name} has no submodule '{name}' (not a supported StyleGAN network).")
    if class_name is not None and sub.class_name != class_name:
        raise NetworkPickleError(f"'{name}' is a {sub.class_name}, expected {class_name}.")
    return sub


def _tensor(rec: PersistentRecord, name: str) -> torch.Tensor:
    for key in ("_parameters", "_buffers"):
        t = (rec.state.get(key) or {}).get(name)
        if isinstance(t, torch.Tensor):
            return t
    raise NetworkPickleError(f"{rec.class_name} has no tensor '{name}'.")


def detect_family(G: PersistentRecord) -> str:
    """'stylegan2' or 'stylegan3', from the module structure (never from module_src)."""
    if G.class_name != "Generator":
        raise NetworkPickleError(f"G_ema is a {G.class_name}, not a Generator.")
    syn = _sub(G, "synthesis", "SynthesisNetwork")
    mods = syn.state.get("_modules") or {}
    inp = mods.get("input")
    if isinstance(inp, PersistentRecord) and inp.class_name == "SynthesisInput" and "layer_names" in syn.state:
        return "stylegan3"
    b4 = mods.get("b4")
    if isinstance(b4, PersistentRecord) and b4.class_name == "SynthesisBlock":
        return "stylegan2"
    raise NetworkPickleError("G_ema has neither a StyleGAN2 (b4 ...) nor a StyleGAN3 (input, L0 ...) synthesis network.")


def _mapping_kwargs(G: PersistentRecord, c_dim: int) -> dict:
    m = _sub(G, "mapping", "MappingNetwork")
    num_layers = _attr(m, "num_layers")
    fc0 = _sub(m, "fc0", "FullyConnectedLayer")
    kw = dict(
        num_layers=num_layers,
        activation=_attr(fc0, "activation"),
        lr_multiplier=float(_attr(fc0, "bias_gain")),
        w_avg_beta=_attr(m, "w_avg_beta", None),
    )
    if c_dim > 0:
        kw["embed_features"] = int(_tensor(_sub(m, "embed"), "weight").shape[0])
    if num_layers > 1:
        kw["layer_features"] = int(_tensor(fc0, "weight").shape[0])
    return kw


def _generator_sizes(G: PersistentRecord) -> dict:
    """The constructor arguments both generator families share."""
    sizes = {k: _attr(G, k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
    return {**sizes, "mapping_kwargs": _mapping_kwargs(G, sizes["c_dim"])}


def _stylegan2_config(G: PersistentRecord) -> dict:
    syn = _sub(G, "synthesis", "SynthesisNetwork")
    res_list = [int(r) for r in _attr(syn, "block_resolutions")]
    blocks = [_sub(syn, f"b{r}", "SynthesisBlock") for r in res_list]
    for b in blocks:
        arch = _attr(b, "architecture", "skip")
        if arch != "skip":
            raise NetworkPickleError(f"StyleGAN2 architecture '{arch}' is not supported (released generators use 'skip').")
    layer = _sub(blocks[0], "conv1", "SynthesisLayer")
    n_fp16 = sum(bool(_attr(b, "use_fp16", False)) for b in blocks)
    f = _tensor(blocks[0], "resample_filter")
    a = f.sum(dim=1) / f.sum().sqrt()
    taps = (a / a.min()).round().tolist() if a.min() > 0 else [1, 3, 3, 1]
    return dict(
        **_generator_sizes(G),
        synthesis_kwargs=dict(
            channels=[int(_tensor(_sub(b, "conv1"), "weight").shape[0]) for b in blocks],
            num_fp16_res=n_fp16,
            conv_clamp=_attr(layer, "conv_clamp"),
            use_noise=bool(_attr(layer, "use_noise")),
            activation=_attr(layer, "activation"),
            resample_filter=[int(t) for t in taps],
        ),
    )


def _stylegan3_config(G: PersistentRecord) -> dict:
    syn = _sub(G, "synthesis", "SynthesisNetwork")
    inp = _sub(syn, "input", "SynthesisInput")
    size = _attr(inp, "size")
    layers = []
    for name in _attr(syn, "layer_names"):
        rec = _sub(syn, name, "SynthesisLayer")
        spec = {"name": name}
        for k in sg3.LAYER_KEYS[1:]:
            v = _attr(rec, k)
            spec[k] = [int(s) for s in np.broadcast_to(v, [2])] if k in ("in_size", "out_size") else v
        spec["padding"] = [int(p) for p in spec["padding"]]
        layers.append(spec)
    return dict(
        **_generator_sizes(G),
        synthesis_kwargs=dict(
            input=dict(
                channels=_attr(inp, "channels"),
                size=[int(s) for s in np.broadcast_to(size, [2])],
                sampling_rate=float(_attr(inp, "sampling_rate")),
                bandwidth=float(_attr(inp, "bandwidth")),
            ),
            layers=layers,
            output_scale=float(_attr(syn, "output_scale", 0.25)),
            num_fp16_res=int(_attr(syn, "num_fp16_res", 4)),
        ),
    )


# attributes that must agree between the file and the module we built, per class
_CHECKED_ATTRS = {
    "Generator": ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws"),
    "MappingNetwork": ("z_dim", "c_dim", "w_dim", "num_ws", "num_layers"),
    "FullyConnectedLayer": ("activation", "weight_gain", "bias_gain"),
    "SynthesisBlock": (
        "in_channels",
        "resolution",
        "img_channels",
        "is_last",
        "architecture",
        "use_fp16",
        "num_conv",
        "num_torgb",
    ),
    "ToRGBLayer": ("conv_clamp", "weight_gain"),
    "SynthesisInput": ("w_dim", "channels", "size", "sampling_rate", "bandwidth"),
}
_SG2_LAYER = ("resolution", "up", "use_noise", "activation", "conv_clamp", "padding", "act_gain")
_SG2_NET = ("w_dim", "img_resolution", "img_channels", "block_resolutions", "num_ws")
_SG3_NET = ("w_dim", "img_resolution", "img_channels", "num_ws", "num_layers", "layer_names", "output_scale")


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, list) or isinstance(b, list):
        a, b = np.broadcast_to(a, np.shape(b) if isinstance(b, list) else np.shape(a)).tolist(), b
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _verify_tree(module: torch.nn.Module, rec: PersistentRecord, path: str, family: str) -> None:
    if rec.class_name == "SynthesisLayer":
        keys = _SG2_LAYER if family == "stylegan2" else sg3.LAYER_KEYS[1:] + ("w_dim",)
    elif rec.class_name == "SynthesisNetwork":
        keys = _SG2_NET if family == "stylegan2" else _SG3_NET
    else:
        keys = _CHECKED_ATTRS.get(rec.class_name, ())
    for k in keys:
        if k in rec.state and not _same(getattr(module, k), rec.state[k]):
            raise NetworkPickleError(
                f"{path or 'G_ema'}.{k} is {_plain(rec.state[k])!r} in the file, but the rebuilt network has "
                f"{getattr(module, k)!r}: this variant of {rec.class_name} is not supported."
            )
    ours = dict(module.named_children())
    for name, sub in (rec.state.get("_modules") or {}).items():
        if sub is None:
            continue
        if name not in ours:
            raise NetworkPickleError(
                f"{path + '.' if path else ''}{name} ({sub.class_name}) is not part of a supported generator."
            )
        _verify_tree(ours[name], sub, f"{path}.{name}" if path else name, family)


def _collect_tensors(rec: PersistentRecord, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for key in ("_parameters", "_buffers"):
        for name, t in (rec.state.get(key) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise NetworkPickleError(f"{prefix}{name} is a {type(t).__name__}, not a tensor.")
            out[prefix + name] = t
    for name, sub in (rec.state.get("_modules") or {}).items():
        if isinstance(sub, PersistentRecord):
            _collect_tensors(sub, f"{prefix}{name}.", out)


def _check_shapes(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    """Every expected tensor present with its shape and a float dtype, and nothing else."""
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s), e.g. {', '.join(extra[:3])}")
        raise NetworkPickleError(f"{source}: {'; '.join(parts)}.")
    for k, t in expected.items():
        if tuple(tensors[k].shape) != tuple(t.shape):
            raise NetworkPickleError(f"{source}: tensor {k} has shape {list(tensors[k].shape)}, expected {list(t.shape)}.")
        if not tensors[k].is_floating_point():
            raise NetworkPickleError(f"{source}: tensor {k} has dtype {tensors[k].dtype}, expected a float tensor.")


def load_state_checked(G: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors into G by name; every expected tensor must be present with its shape, and nothing else."""
    expected = G.state_dict()
    _check_shapes(expected, tensors, source)
    with torch.no_grad():
        for k, t in expected.items():
            t.copy_(tensors[k])


def build_generator(config: dict) -> torch.nn.Module:
    """Our Generator module from a normalised config (as ``Generator.config`` returns it), weights uninitialised."""
    config = dict(config)
    family = config.pop("family", None)
    if family == "stylegan2":
        return sg2.Generator(**config)
    if family == "stylegan3":
        return sg3.Generator(**config, design_filters=False)
    raise NetworkPickleError(f"Unknown generator family {family!r} (expected 'stylegan2' or 'stylegan3').")


class _AllocationBudget(TorchFunctionMode):
    """While a generator is built: refuse any new tensor that would take the total past ``limit`` bytes, before it exists.

    Every tensor of our modules' constructors comes from a factory with an explicit size (``randn``, ``zeros``,
    ``eye``, ...), so counting those bounds what building costs, whatever the arguments claim. Modes are per thread.
    """

    _SIZED = (torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full)

    def __init__(self, limit: int, stored: int, source: str) -> None:
        super().__init__()
        self.limit, self.stored, self.source, self.used = limit, stored, source, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shape = self._shape(func, args, kwargs)
        if shape is not None:
            self.used += 4 * math.prod(shape)  # our modules hold float32
            if self.used > self.limit:
                raise NetworkPickleError(
                    f"{self.source}: its arguments describe a network larger than the weights it stores "
                    f"(a tensor of shape {shape} would be needed; the file stores {self.stored:,} bytes of weights)."
                )
        return func(*args, **kwargs)

    def _shape(self, func, args, kwargs) -> list[int] | None:
        try:
            if func is torch.eye:
                n = int(args[0] if args else kwargs["n"])
                m = args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else kwargs.get("m")
                return [n, n if m is None else int(m)]
            if func in self._SIZED:
                size = kwargs.get("size", args[0] if len(args) == 1 or func is torch.full else args)
                size = [size] if isinstance(size, int) else size
                shape = [int(v) for v in size]
                return shape if all(v >= 0 for v in shape) else None
        except (TypeError, ValueError, KeyError, IndexError):
            return None  # not a size we can read: torch itself refuses it
        return None


# NVIDIA's largest released generators make 1024 px images; a file claiming more than this is refused before
# anything is built (the image and its activations would be allocated at the first render).
MAX_RESOLUTION = 4096


def _positive_int(value: Any, what: str, source: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NetworkPickleError(f"{source}: {what} is {value!r}, which is not a whole number of at least {minimum}.")
    return value


def _check_declared_sizes(G: PersistentRecord, config: dict, family: str, source: str) -> None:
    """Compare the constructor arguments that size the network with the stored tensors, before anything is built.

    A file may claim any sizes: built as claimed, a network can need gigabytes before a shape check refuses it.
    Here the sizes the weights themselves show win, and what only the arguments decide (how many layers,
    the image size) is bounded by what the file holds.
    """
    z_dim = _positive_int(config["z_dim"], "z_dim", source)
    w_dim = _positive_int(config["w_dim"], "w_dim", source)
    c_dim = _positive_int(config["c_dim"], "c_dim", source, minimum=0)
    _positive_int(config["img_channels"], "img_channels", source)
    res = _positive_int(config["img_resolution"], "img_resolution", source, minimum=4)
    if res > MAX_RESOLUTION:
        raise NetworkPickleError(f"{source}: img_resolution is {res}, larger than the {MAX_RESOLUTION} px this app supports.")
    mapping = _sub(G, "mapping", "MappingNetwork")
    mk = config["mapping_kwargs"]
    fcs = [n for n in (mapping.state.get("_modules") or {}) if re.fullmatch(r"fc\d+", str(n))]
    num_layers = _positive_int(mk["num_layers"], "the mapping network's num_layers", source)
    if num_layers != len(fcs):
        raise NetworkPickleError(
            f"{source}: the mapping network claims {num_layers} layers, but the file holds {len(fcs)}."
        )
    w_avg = _tensor(mapping, "w_avg")
    if tuple(w_avg.shape) != (w_dim,):
        raise NetworkPickleError(
            f"{source}: w_dim is {w_dim}, but the stored tensor mapping.w_avg has shape {list(w_avg.shape)}, not [{w_dim}]."
        )
    fc0 = _tensor(_sub(mapping, "fc0"), "weight")
    inputs = z_dim + (mk.get("embed_features", 0) if c_dim > 0 else 0)
    if fc0.ndim != 2 or fc0.shape[1] != inputs:
        raise NetworkPickleError(
            f"{source}: z_dim is {z_dim}, but the stored tensor mapping.fc0.weight has shape {list(fc0.shape)}, "
            f"not [..., {inputs}]."
        )
    if c_dim > 0:
        embed = _tensor(_sub(mapping, "embed"), "weight")
        if embed.ndim != 2 or embed.shape[1] != c_dim:
            raise NetworkPickleError(
                f"{source}: c_dim is {c_dim}, but the stored tensor mapping.embed.weight has shape "
                f"{list(embed.shape)}, not [..., {c_dim}]."
            )
    syn = config["synthesis_kwargs"]
    if family == "stylegan2":
        stored = [int(r) for r in _attr(_sub(G, "synthesis"), "block_resolutions")]
        if stored != [2**i for i in range(2, int(math.log2(res)) + 1)]:
            raise NetworkPickleError(
                f"{source}: img_resolution is {res}, but the file holds synthesis blocks for {stored}."
            )
        return
    # StyleGAN3: sizes are not visible in any tensor; each must stay near the image size (paper: + 2 * margin)
    limit = 2 * res + 64
    sizes = [("the input", syn["input"]["size"])] + [
        (spec["name"], size) for spec in syn["layers"] for size in (spec["in_size"], spec["out_size"])
    ]
    for name, size in sizes:
        if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit for v in size):
            raise NetworkPickleError(
                f"{source}: {name} claims a feature map of {size} pixels, which does not fit an image of {res} px."
            )


def _stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``: what the file really holds."""
    seen: dict[int, int] = {}
    for t in tensors.values():
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def build_checked(config: dict, tensors: dict[str, torch.Tensor], source: str, max_bytes: int | None = None,
                  record: PersistentRecord | None = None) -> torch.nn.Module:
    """The generator of ``config`` holding ``tensors``, refused before allocating more than they explain.

    The weights really stored (at most ``max_bytes``, the file's size) set the budget for building: fp16 weights
    double as float32, plus 1 MiB for small constants. Then every tensor must match by name and shape, and
    the tensors' own sizes must fit in their storages (no view repeating a few bytes as a large tensor).
    """
    family = config.get("family", "?")
    stored = _stored_bytes(tensors)
    budget = stored if max_bytes is None else min(stored, max_bytes)
    try:
        with _AllocationBudget(2 * budget + (1 << 20), budget, source):
            net = build_generator(config)
    except NetworkPickleError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RuntimeError) as e:
        raise NetworkPickleError(f"{source}: could not rebuild the {family} generator ({type(e).__name__}: {e}).") from None
    if record is not None:
        _verify_tree(net, record, "", family)
    expected = net.state_dict()
    _check_shapes(expected, tensors, source)
    needed = sum(tensors[k].numel() * tensors[k].element_size() for k in expected)
    if needed > stored:
        raise NetworkPickleError(f"{source}: its tensors claim {needed:,} bytes of weights, but the file stores only {stored:,}.")
    load_state_checked(net, tensors, source)
    return net.eval().requires_grad_(False)


def generator_from_record(G: PersistentRecord, source: str = "G_ema", max_bytes: int | None = None) -> torch.nn.Module:
    """Rebuild ``G_ema`` (a record tree) as our module, verify its attributes, and copy its tensors.

    ``max_bytes`` (the file's size) bounds the weights it may claim; sizes are checked before anything is allocated.
    """
    family = detect_family(G)
    try:
        config = _stylegan2_config(G) if family == "stylegan2" else _stylegan3_config(G)
    except NetworkPickleError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise NetworkPickleError(f"{source}: could not read the {family} generator ({type(e).__name__}: {e}).") from None
    config["family"] = family
    _check_declared_sizes(G, config, family, source)
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(G, "", tensors)
    return build_checked(config, tensors, source, max_bytes=max_bytes, record=G)


def _source_size(source: str | Path | IO[bytes]) -> int | None:
    try:
        if isinstance(source, str | Path):
            return os.path.getsize(source)
        return os.fstat(source.fileno()).st_size
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        if isinstance(source, io.BytesIO):
            return source.getbuffer().nbytes
        return None


def load_network_pickle(source: str | Path | IO[bytes]) -> torch.nn.Module:
    """The generator (``G_ema``) of an NVIDIA network pickle as our own module, in eval mode, on the CPU.

    Never executes code from the file, and allocates the network only once its sizes agree with the stored
    weights (a few bytes of tampered arguments must not cost gigabytes). Raises :class:`UnsafePickleError` for
    anything outside the format, :class:`NetworkPickleError` for unreadable or unsupported files; messages
    name the file by its base name only.
    """
    size = _source_size(source)
    data = read_network_pickle(source)
    G = data.get("G_ema")
    if not isinstance(G, PersistentRecord):
        raise NetworkPickleError("The pickle has no 'G_ema' generator (keys: " + ", ".join(map(str, data)) + ").")
    return generator_from_record(G, f"{_display_name(source)} (G_ema)", max_bytes=size)
