"""The plugin registry: discovery from folders and entry points, lazy loading, broken plugins isolated."""

import re
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from plugins import registry as registry_mod
from plugins.registry import ModelEntry, Registry
from tests.conftest import ROOT

GOOD = '''
from core.card import ModelCard
from plugins.registry import ModelEntry

LOADS = []

def _load():
    LOADS.append(1)
    from tests.toy import ToyLinear
    return ToyLinear()

def get_models():
    card = ModelCard("user/toy", "User toy", "d", "nothing", 8, "MIT", "tests")
    return [ModelEntry(card=card, load=_load)]
'''


def _write(folder, name, text):
    (folder / name).write_text(textwrap.dedent(text))


def test_user_folder_plugin_is_found_and_loaded_lazily(tmp_path):
    _write(tmp_path, "good.py", GOOD)
    reg = Registry().discover(tmp_path, use_entry_points=False)
    assert "user/toy" in reg.names()
    mod = sys.modules["latent_lab_user_plugins.good"]
    assert mod.LOADS == []  # nothing loaded at discovery
    assert reg.status("user/toy") == "ready"
    model = reg.get("user/toy")
    assert reg.get("user/toy") is model and mod.LOADS == [1]  # loaded once, cached
    assert reg.status("user/toy") == "loaded"


def test_broken_plugins_are_listed_and_the_rest_works(tmp_path):
    _write(tmp_path, "good.py", GOOD)
    _write(tmp_path, "syntax.py", "def get_models(:\n")
    _write(tmp_path, "raises.py", "raise ImportError('needs a package that is not installed')\n")
    _write(tmp_path, "nothing.py", "x = 1\n")
    _write(tmp_path, "badload.py", GOOD.replace("user/toy", "user/bad").replace("LOADS.append(1)", "raise OSError('weights missing')"))
    reg = Registry().discover(tmp_path, use_entry_points=False)
    assert {"user/toy", "user/bad"} <= set(reg.names())
    failed = {e.plugin.rsplit("/", 1)[-1]: e.message for e in reg.errors}
    assert set(failed) == {"syntax.py", "raises.py", "nothing.py"}
    assert "SyntaxError" in failed["syntax.py"]
    assert "needs a package" in failed["raises.py"]
    assert "get_models" in failed["nothing.py"]
    with pytest.raises(RuntimeError, match="could not be loaded: weights missing"):
        reg.get("user/bad")
    assert reg.status("user/bad").startswith("failed: weights missing")
    assert reg.get("user/toy").image_size == 8  # the good plugin still works


def test_missing_folder_is_reported(tmp_path):
    reg = Registry().discover(tmp_path / "nope", use_entry_points=False)
    assert any("does not exist" in e.message for e in reg.errors)


def test_duplicate_names_are_refused(tmp_path):
    _write(tmp_path, "a.py", GOOD)
    _write(tmp_path, "b.py", GOOD)
    reg = Registry().discover(tmp_path, use_entry_points=False)
    assert reg.names().count("user/toy") == 1
    assert any("already registered" in e.message for e in reg.errors)


def test_entry_point_plugins(tmp_path, monkeypatch):
    _write(tmp_path, "ep_plugin.py", GOOD.replace("user/toy", "ep/toy"))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("toy", "ep_plugin", "latent_lab.plugins"), EntryPoint("fn", "ep_plugin:get_models", "latent_lab.plugins"),
           EntryPoint("broken", "no_such_module_xyz", "latent_lab.plugins")]
    monkeypatch.setattr(registry_mod, "entry_points", lambda group: [e for e in eps if e.group == group])
    reg = Registry()
    reg.discover(None)
    assert "ep/toy" in reg.names()
    assert any("already registered" in e.message for e in reg.errors)  # the same models via the callable form
    assert any("no_such_module_xyz" in e.message for e in reg.errors)


def test_builtin_plugins_are_discovered():
    reg = Registry().discover(None, use_entry_points=False)
    assert not [e for e in reg.errors if e.plugin.startswith("plugins.")], reg.errors
    assert any(n.startswith("small_ae/") for n in reg.names())


def test_get_unknown_model():
    with pytest.raises(KeyError, match="Unknown model"):
        Registry().get("nope")


def test_unknown_model_names_the_nearest_without_quotes():
    reg = Registry().discover(None, use_entry_points=False)
    with pytest.raises(KeyError) as e:
        reg.entry("stylegan2/ffhq256")
    assert str(e.value).startswith("Unknown model stylegan2/ffhq256. Did you mean stylegan2/ffhq-256")
    assert "'" not in str(e.value)


CONTRACT = '''
from pathlib import Path

from core.card import ModelCard
from plugins.contract import FACES, Loss, ModelEntry


def _load():
    from tests.toy import ToyLinear
    return ToyLinear()


def _entry(name, tags=()):
    return ModelEntry(card=ModelCard(name, name.title(), "d", "nothing", 8, "MIT", "tests"), load=_load, tags=tags)


def get_models():
    return [_entry("user/contract", (FACES,))]


def get_losses():
    return [Loss("user-l1", "mean absolute error", lambda device: lambda x, y: (x - y).abs().flatten(1).mean(1))]


def read_toy(path, *, title=None, tags=(), copy=False):
    text = Path(path).read_text()
    if not text.startswith("toy"):
        raise ValueError(f"{Path(path).name} is not a toy model file.")
    return _entry("user/file-" + text.strip(), tags)


def get_file_loaders():
    return {".toy": read_toy}
'''


def test_plugin_contract_losses_and_file_loaders(tmp_path, monkeypatch):
    from core import losses
    from core.losses import available

    monkeypatch.setattr(losses, "_LOSSES", dict(losses._LOSSES))  # the plugin's loss must not leak into later tests
    (tmp_path / "plugins").mkdir()
    _write(tmp_path / "plugins", "contract.py", CONTRACT)
    reg = Registry().discover(tmp_path / "plugins", use_entry_points=False)
    assert not reg.errors and reg.entry("user/contract").name == "user/contract"  # the name comes from the card
    assert "user-l1" in available()  # registered because the registry asked the plugin
    model_file = tmp_path / "mine.TOY"
    model_file.write_text("toy1")
    name = reg.add_file(model_file)
    assert name == "user/file-toy1" and reg.entry(name).tags == ()
    assert reg.add_file(model_file, tags=("faces",)) == name and reg.entry(name).tags == ("faces",)  # same file: tags added
    bad = tmp_path / "other.toy"
    bad.write_text("nope")
    with pytest.raises(ValueError, match="not a toy model file"):
        reg.add_file(bad)
    with pytest.raises(ValueError, match=r"No plugin reads '\.bin' files \(model files it can add: \.pkl, \.toy\)"):
        reg.add_file(tmp_path / "w.bin")


def test_losses_are_not_registered_by_importing_a_plugin():
    import subprocess
    import sys

    code = ("import plugins.stylegan; from core.losses import available, downloadable; "
            "assert 'lpips' not in {**available(), **downloadable()}; "
            "from plugins.registry import Registry; Registry().discover(None, use_entry_points=False); "
            "assert 'lpips' in {**available(), **downloadable()}")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_add_rejects_non_entries():
    with pytest.raises(TypeError):
        Registry().add("not an entry")  # type: ignore[arg-type]
    assert ModelEntry  # the public name exists for plugin authors


def _docs_block(marker: str) -> str:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", guide, re.S)
    assert m, f"docs/plugins.md must contain a python block after <!-- {marker} -->"
    return m.group(1)


def test_docs_plugin_example_works(tmp_path):
    """The plugin guide's "a plugin in one file" example (no parameters, no modules()), run exactly as printed."""
    import torch

    example = _docs_block("plugin-example")
    assert "def modules" not in example
    (tmp_path / "pca_digits.py").write_text(example)
    reg = Registry().discover(tmp_path, use_entry_points=False)
    assert not reg.errors, reg.errors
    name = next(n for n in reg.names() if n.startswith("example/"))
    model = reg.get(name)
    z = model.sample(4, seed=0) * 0.1  # near the mean digit, where no pixel is clamped
    x = model.decode(z)
    assert x.shape == (4, model.channels, model.image_size, model.image_size) and model.modules() == []
    assert torch.allclose(model.encode(x), z, atol=1e-4)  # its encoder inverts its decoder


@pytest.mark.slow
def test_docs_plugin_test_template_passes_on_the_example(tmp_path):
    """The guide's test template, run as a plugin author would, against the guide's example plugin."""
    import subprocess

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "pca_digits.py").write_text(_docs_block("plugin-example"))
    template = _docs_block("plugin-test-template").replace("PLUGINS_DIR = None", f"PLUGINS_DIR = {str(plugins)!r}", 1)
    (tmp_path / "test_my_plugin.py").write_text(template)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          str(tmp_path / "test_my_plugin.py")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "4 passed" in run.stdout, run.stdout[-2000:]


def test_a_slow_load_holds_up_neither_other_models_nor_loads_twice():
    """A model loads under its own lock: others are served meanwhile, and two callers of it share one load."""
    import threading

    from core.card import ModelCard
    from tests.toy import ToyLinear

    gate, loads = threading.Event(), []

    def slow():
        loads.append(1)
        assert gate.wait(30)
        return ToyLinear()

    reg = Registry()
    reg.add(ModelEntry(card=ModelCard("t/slow", "Slow", "d", "nothing", 8, "MIT", "tests"), load=slow))
    reg.add(ModelEntry(card=ModelCard("t/fast", "Fast", "d", "nothing", 8, "MIT", "tests"), load=ToyLinear))
    fast = reg.get("t/fast")
    got = []
    callers = [threading.Thread(target=lambda: got.append(reg.get("t/slow"))) for _ in range(2)]
    for t in callers:
        t.start()
    while not loads:
        threading.Event().wait(0.01)
    assert reg.get("t/fast") is fast  # answered while t/slow is still loading
    assert reg.status("t/slow") != "loaded"
    gate.set()
    for t in callers:
        t.join(30)
    assert len(loads) == 1 and len(got) == 2 and got[0] is got[1] is reg.get("t/slow")
