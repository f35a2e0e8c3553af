"""Hostile model files: constructor arguments that claim a far larger network than the weights stored.

Each file is a clean fixture re-saved with changed arguments (``tests.pickle_resave``). It must be refused with one
sentence naming the problem and no server path, before the network is allocated: the peak memory of a fresh
process during the refusal is measured (its peak resident memory), since a network built as claimed needs gigabytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, SHARED
from tests.pickle_resave import resave

FIXTURES = SHARED / "fixtures" / "stylegan"
PEAK_GROWTH_LIMIT_MB = 100  # a network built as these files claim needs 1 GB or more

pytestmark = pytest.mark.skipif(not (FIXTURES / "ada_r32.pkl").exists(), reason="shared StyleGAN fixtures not present")


def _records(meta: dict):
    """Every persistent record (its ``meta``) under ``meta``, itself first."""
    yield meta
    for sub in (meta["state"].get("_modules") or {}).values():
        if sub is not None:
            yield from _records(sub.meta)


def _generator_only(data: dict) -> dict:
    for key in ("G", "D", "augment_pipe"):  # the hostile file carries G_ema alone: ~1.2 MB, as in the report
        data.pop(key, None)
    return data["G_ema"].meta


def w_dim_claimed(data: dict) -> None:
    """Only the generator's ``w_dim`` changed."""
    _generator_only(data)["state"]["w_dim"] = 400_000


def w_dim_everywhere(data: dict) -> None:
    """``w_dim`` changed in every module, and ``w_avg`` a view repeating one stored float 400000 times: the
    shapes a cheap check compares agree, so only the allocation budget stands between it and the memory."""
    top = _generator_only(data)
    for meta in _records(top):
        if "w_dim" in meta["state"]:
            meta["state"]["w_dim"] = 400_000
    mapping = top["state"]["_modules"]["mapping"].meta
    mapping["state"]["_buffers"]["w_avg"] = torch.zeros(1).expand(400_000)


def mapping_layers_claimed(data: dict) -> None:
    """A hundred thousand mapping layers claimed (each would be a module), eight stored."""
    top = _generator_only(data)
    top["state"]["_modules"]["mapping"].meta["state"]["num_layers"] = 100_000


def sg3_channels_claimed(data: dict) -> None:
    """A StyleGAN3 layer claims a million input channels (its spec comes from attributes, not from tensors)."""
    top = _generator_only(data)
    synthesis = top["state"]["_modules"]["synthesis"].meta
    first = synthesis["state"]["layer_names"][0]
    synthesis["state"]["_modules"][first].meta["state"]["in_channels"] = 1_000_000


# name -> (fixture it is made from, edit, words the refusal must contain)
HOSTILE: dict[str, tuple[str, Callable[[dict], None], tuple[str, ...]]] = {
    "w_dim_400000": ("ada_r32.pkl", w_dim_claimed, ("w_dim is 400000", "mapping.w_avg")),
    "w_dim_400000_strided": ("ada_r32.pkl", w_dim_everywhere, ("larger than the weights it stores",)),
    "mapping_layers": ("ada_r32.pkl", mapping_layers_claimed, ("claims 100000 layers", "holds 8")),
    "sg3_channels": ("sg3_r_r32.pkl", sg3_channels_claimed, ("larger than the weights it stores",)),
}


def make_hostile(name: str, folder: Path) -> Path:
    fixture, edit, _ = HOSTILE[name]
    path = folder / f"{name}.pkl"
    path.write_bytes(resave(FIXTURES / fixture, 4, edit))
    return path


# The peak is read from /proc/self/status (VmHWM): getrusage's ru_maxrss survives exec, so in a child of pytest
# it would start at pytest's own peak and hide the growth.
_MEASURE = """
import json, sys, time
sys.path.insert(0, {root!r})
from plugins.stylegan.download import verify_network_pickle
import plugins.stylegan.pickle_loader, plugins.stylegan.networks_stylegan3  # imports are not the refusal's cost
def peak_mb():
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM:")).split()[1]) / 1024
before = peak_mb()
start = time.perf_counter()
try:
    verify_network_pickle(sys.argv[1])
    message = None
except ValueError as e:
    message = str(e)
seconds = time.perf_counter() - start
print(json.dumps({{"message": message, "growth_mb": peak_mb() - before, "seconds": seconds}}))
"""


def measure_refusal(path: Path) -> dict:
    """Load ``path`` in a fresh process: the message (None if it loaded), its peak RSS growth (MB) and seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _MEASURE.format(root=str(ROOT)), str(path)], capture_output=True,
                         text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_arguments_are_refused_in_one_sentence(name, tmp_path):
    from plugins.stylegan.pickle_loader import NetworkPickleError, load_network_pickle

    folder = tmp_path / "server" / "private"
    folder.mkdir(parents=True)
    path = make_hostile(name, folder)
    with pytest.raises(NetworkPickleError) as info:
        load_network_pickle(path)
    message = str(info.value)
    assert all(words in message for words in HOSTILE[name][2]), message
    assert str(tmp_path) not in message and "/" not in message, message  # the base name only, never a folder
    assert path.name in message and message.count(". ") == 0 and message.endswith("."), message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
@pytest.mark.parametrize("name", ["w_dim_400000", "w_dim_400000_strided"])
def test_refusal_costs_little_memory(name, tmp_path):
    path = make_hostile(name, tmp_path)
    assert path.stat().st_size < 2_000_000
    result = measure_refusal(path)
    assert result["message"] is not None and "not a usable" not in result["message"]
    assert result["growth_mb"] < PEAK_GROWTH_LIMIT_MB, result


def test_upload_refusal_names_the_file_only(tmp_path):
    from plugins.stylegan import local_model_entry

    folder = tmp_path / "latent_lab_gradio_123" / "0123abcd"
    folder.mkdir(parents=True)
    for path in (make_hostile("w_dim_400000", folder), folder / "tamper_global_exec.pkl"):
        if not path.exists():
            path.write_bytes((FIXTURES / path.name).read_bytes())
        with pytest.raises(ValueError) as info:
            local_model_entry(path)
        message = str(info.value)
        assert message.startswith(f"{path.name} is not a usable StyleGAN network pickle: "), message
        assert str(folder) not in message and "latent_lab_gradio" not in message and message.count(path.name) == 1, message


def test_clean_fixtures_still_load_within_the_budget():
    from plugins.stylegan.pickle_loader import load_network_pickle

    for name in ("ada_r64_fp16_legacy.pkl", "sg3_t_r32_cond.pkl"):
        G = load_network_pickle(FIXTURES / name)
        assert G.img_resolution in (32, 64) and not any(p.is_meta for p in G.state_dict().values())


def test_a_storage_claiming_more_bytes_than_stored_is_refused(tmp_path):
    """A view must lie inside bytes the file really holds (here: a tensor repeating one float as a large one)."""
    from plugins.stylegan.pickle_loader import NetworkPickleError, build_checked, build_generator

    G = load_clean_generator()
    tensors = {k: v.clone() for k, v in G.state_dict().items()}
    key = "mapping.fc0.weight"
    tensors[key] = torch.zeros(1).expand(*tensors[key].shape)  # right shape, 4 bytes stored
    config = G.config
    with pytest.raises(NetworkPickleError, match="stores only"):
        build_checked(config, tensors, "net.pkl (G_ema)")
    assert build_generator(config) is not None


def load_clean_generator():
    from plugins.stylegan.pickle_loader import load_network_pickle

    return load_network_pickle(FIXTURES / "ada_r32.pkl")


# ----- through the app: refused uploads deleted at once, no stray temporary file, no server path -------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.conftest import restore_env, use_private_dirs

    tmp = tmp_path_factory.mktemp("hostile_app")
    old = use_private_dirs(tmp)
    from demos.app import build_app, launch
    from plugins.registry import Registry

    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=50)
    launch(demo, block=False)
    yield demo, tmp
    demo.close()
    restore_env(old)


def test_uploads_leave_no_file_behind(served, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    from tests.conftest import app_error

    demo, tmp = served
    hostile = make_hostile("w_dim_400000", tmp_path)
    client = gradio_client.Client(demo.local_url, verbose=False)
    try:
        root = Path(os.environ["GRADIO_TEMP_DIR"])
        message = app_error(lambda: client.predict(gradio_client.handle_file(str(hostile)), "", "", False,
                                                   api_name="/add_pickle"))
        assert message.startswith("w_dim_400000.pkl is not a usable StyleGAN network pickle: w_dim is 400000"), message
        assert str(root) not in message and "/" not in message
        assert not list(root.rglob("w_dim_400000.pkl"))  # the refused upload is deleted at once
        note = client.predict(gradio_client.handle_file(str(FIXTURES / "ada_r32.pkl")), "", "", False, api_name="/add_pickle")
        assert "Added" in note
        empty = [p for p in root.rglob("*") if p.is_file() and p.stat().st_size == 0]
        assert not empty, empty  # gr.File used to leave one empty temporary file per upload
        shared = tmp_path / "shared_net.pkl"  # with --allow-shared-uploads the cache keeps a copy: the upload goes
        shared.write_bytes((FIXTURES / "ada_r32.pkl").read_bytes())
        demo.latent_lab.models.allow_shared_uploads = True
        note = client.predict(gradio_client.handle_file(str(shared)), "", "", False, api_name="/add_pickle")
        assert "every model list" in note and not list(root.rglob("shared_net.pkl"))
    finally:
        demo.latent_lab.models.allow_shared_uploads = False
        client.close()
