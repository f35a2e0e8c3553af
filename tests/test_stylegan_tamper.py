"""The pickle loader never runs code from a file, and refuses anything outside the network-pickle format."""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import warnings

import pytest
import torch

from plugins.stylegan.pickle_loader import NetworkPickleError, UnsafePickleError, load_network_pickle
from plugins.stylegan.weights import load_cached
from tests.conftest import shared_path

TAMPERED = {
    # file: what the error must name (None: the file may load, as long as nothing ran)
    "tamper_src.pkl": None,
    "tamper_global_exec.pkl": "builtins.exec",
    "tamper_global_system.pkl": "posix.system",
    "tamper_storage.pkl": "weights_only",
}


def fixture(name):
    return shared_path("fixtures", "stylegan", name)


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "payload-ran.txt"
    monkeypatch.setenv("SG2_PARITY_MARKER", str(path))
    yield path
    assert not path.exists(), "a payload from the pickle was executed"
    assert not [m for m in sys.modules if m.startswith("_imported_module_")]


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_pickle_never_runs_its_payload(name, marker):
    expected = TAMPERED[name]
    if expected is None:
        G = load_network_pickle(fixture(name))  # module_src is ignored, so this is a valid network
        assert G.img_resolution == 32
        return
    with pytest.raises(UnsafePickleError) as info:
        load_network_pickle(fixture(name))
    assert expected in str(info.value) and "refused" in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n, e in TAMPERED.items() if e))
def test_tampered_pickle_refused_through_the_cache_too(name, marker, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UnsafePickleError):
        load_cached(fixture(name), cache)
    assert not [p for p in cache.iterdir() if p.is_dir()], "a refused pickle must not leave a cache entry"


# ----- files that are not network pickles ------------------------------------------------------------------------------


def _pkl_bytes():
    return fixture("ada_r32.pkl").read_bytes()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: b"", "empty"),
        (lambda: os.urandom(4096), "not a pickle"),
        (lambda: b"\x80\x04" + os.urandom(4096), "corrupt"),
        (lambda: b"just some text, not a network\n" * 10, "not a pickle"),
        (lambda: b"PK\x03\x04" + b"\0" * 100, "zip archive"),
        (lambda: pickle.dumps([1, 2, 3], protocol=4), "not the dict"),
        (lambda: pickle.dumps({"G": 1}, protocol=4), "no 'G_ema'"),
    ],
)
def test_not_a_network_pickle_gives_a_plain_error(make, words, tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(make())
    with pytest.raises(NetworkPickleError) as info:
        load_network_pickle(path)
    assert words in str(info.value)


@pytest.mark.parametrize("fraction", [0.001, 0.3, 0.999])
def test_truncated_pickle_gives_a_plain_error(fraction, tmp_path):
    data = _pkl_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(NetworkPickleError, match="truncated|corrupt"):
        load_network_pickle(path)


def test_file_object_and_missing_file():
    G = load_network_pickle(io.BytesIO(_pkl_bytes()))
    assert G.z_dim == 64
    with pytest.raises(FileNotFoundError):
        load_network_pickle("/nonexistent/ffhq.pkl")


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_foreign_globals_and_persistent_ids_are_refused(tmp_path):
    cases = {
        "posix.system": pickle.dumps({"G_ema": _Reduce(os.system, ("true",))}, protocol=4),
        "builtins.getattr": pickle.dumps({"G_ema": _Reduce(getattr, (1, "real"))}, protocol=3),
        "copyreg._reconstructor": pickle.dumps(_Reduce(__import__("copyreg")._reconstructor, (object, object, None)), protocol=4),
    }
    for name, data in cases.items():
        with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
            load_network_pickle(io.BytesIO(data))

    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=4)
    p.persistent_id = lambda obj: "x" if isinstance(obj, bytes) else None
    p.dump({"G_ema": b"payload"})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_network_pickle(io.BytesIO(buf.getvalue()))


def _storage_bytes(n: int) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is deprecated, but it is what network pickles hold
        torch.save(torch.arange(n, dtype=torch.float32).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def test_tensor_view_past_its_storage_is_refused():
    """A tensor header that reads beyond its storage would read foreign memory; it must be an error."""
    storage = _Reduce(torch.storage._load_from_bytes, (_storage_bytes(8),))
    ok = _Reduce(torch._utils._rebuild_tensor_v2, (storage, 0, (8,), (1,), False, collections.OrderedDict()))
    bad = _Reduce(torch._utils._rebuild_tensor_v2, (storage, 4, (1000,), (1,), False, collections.OrderedDict()))
    with pytest.raises(NetworkPickleError, match="no 'G_ema'"):
        load_network_pickle(io.BytesIO(pickle.dumps({"x": ok}, protocol=4)))  # a valid tensor passes the reader
    with pytest.raises(NetworkPickleError, match="past the end"):
        load_network_pickle(io.BytesIO(pickle.dumps({"x": bad}, protocol=4)))
