"""Network pickles re-saved with ``pickle.dump(..., protocol=2)`` load, and still run nothing from the file."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import pickletools
import sys

import numpy as np
import pytest
import torch

from plugins.stylegan.pickle_loader import UnsafePickleError, load_network_pickle
from tests.conftest import shared_path
from tests.pickle_resave import resave


def fixture(name):
    return shared_path("fixtures", "stylegan", name)


def _globals(data: bytes) -> set[str]:
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.parametrize("name", ["ada_r32", "sg3_t_r32_cond"])
def test_protocol2_resave_loads_and_gives_the_same_output(name, tmp_path):
    data = resave(fixture(f"{name}.pkl"), protocol=2)
    assert data[:2] == b"\x80\x02"
    assert {"__builtin__ set", "_codecs encode"} <= _globals(data)  # what makes protocol 2 different
    path = tmp_path / f"{name}_p2.pkl"
    path.write_bytes(data)
    G2, G = load_network_pickle(path), load_network_pickle(fixture(f"{name}.pkl"))
    a, b = G2.state_dict(), G.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = np.load(fixture(f"{name}.npz"), allow_pickle=False)
    with torch.no_grad():
        img = G2.synthesis(torch.from_numpy(ref["ws_psi1.00"]), noise_mode="const")
        assert torch.equal(img, G.synthesis(torch.from_numpy(ref["ws_psi1.00"]), noise_mode="const"))
    assert (img - torch.from_numpy(ref["img_psi1.00_const"])).abs().max().item() <= 1e-4


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "payload-ran.txt"
    yield path
    assert not path.exists(), "a payload from the pickle was executed"


def test_protocol2_payloads_are_refused_by_name(marker):
    shell = f"echo ran >> {marker}"
    cases = {
        "posix.system" if os.name == "posix" else "nt.system": _Reduce(os.system, (shell,)),
        "__builtin__.exec": _Reduce(exec, (f"open({str(marker)!r}, 'w').write('ran')",)),
        "__builtin__.getattr": _Reduce(getattr, (_Reduce(codecs.encode, ("x", "latin1")), "decode")),
        # _codecs.encode is allowed only as protocol 2 uses it for bytes: text + 'latin1'
        "encoding 'zlib'": _Reduce(codecs.encode, (b"x" * 10, "zlib")),
        "encoding 'rot13'": _Reduce(codecs.encode, ("payload", "rot13")),
    }
    for words, payload in cases.items():
        data = pickle.dumps({"G_ema": payload, "bytes": b"\x00\xff"}, protocol=2)
        assert data[:2] == b"\x80\x02"
        with pytest.raises(UnsafePickleError) as info:
            load_network_pickle(io.BytesIO(data))
        assert words in str(info.value) and "refused" in str(info.value)
    assert not [m for m in sys.modules if m.startswith("_imported_module_")]
