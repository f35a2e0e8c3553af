"""The plugin contract is checked when a plugin is found and when its model loads: a broken plugin or model is listed
with one sentence naming what is missing, never as ready, never as an AttributeError later; a model without parameters
needs no torch module."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from plugins.registry import Registry, model_bytes
from tests.conftest import ROOT

HEADER = '''
import torch

from core.card import LatentSpace, ModelCard
from core.model import LatentModel
from plugins.contract import ModelEntry


def card(name):
    return ModelCard(name, name, "d", "nothing", 8, "MIT", "tests")


class Good(LatentModel):
    card, image_size, channels, default_space = card("user/good"), 8, 1, "latent"
    spaces = {"latent": LatentSpace("latent", (4,))}

    def _sample(self, n, generator):
        return torch.randn(n, 4, generator=generator), "latent"

    def _decode(self, z, space, **kwargs):
        return torch.tanh(z.repeat(1, 16)).reshape(-1, 1, 8, 8)
'''

# name of the plugin file -> (its models' code, the words its one sentence must contain)
FOUND_BROKEN = {
    "no_channels.py": ('''
class NoChannels(LatentModel):  # no channel count anywhere
    card, image_size, default_space = card("user/no-channels"), 8, "latent"
    spaces = {"latent": LatentSpace("latent", (4,))}
    _sample, _decode = Good._sample, Good._decode

def get_models():
    return [ModelEntry(card=NoChannels.card, load=NoChannels)]
''', ["user/no-channels", "channels"]),
    "no_decode.py": ('''
class NoDecode(LatentModel):
    card, image_size, channels, default_space = card("user/no-decode"), 8, 1, "latent"
    spaces = {"latent": LatentSpace("latent", (4,))}
    _sample = Good._sample

def get_models():
    return [ModelEntry(card=NoDecode.card, load=NoDecode)]
''', ["user/no-decode", "_decode"]),
    "flag_without_encoder.py": ('''
class Flagged(Good):
    card, has_encoder = card("user/flagged"), True

def get_models():
    return [ModelEntry(card=Flagged.card, load=Flagged)]
''', ["user/flagged", "_encode", "has_encoder"]),
    "string_tags.py": ('''
def get_models():
    return [ModelEntry(card=card("user/tags"), load=Good, tags="faces")]
''', ["user/tags", "tags"]),
    "no_get_models.py": ("x = 1\n", ["get_models()"]),
}

LOADED_BROKEN = {
    "user/late-channels": ('''
class Late(LatentModel):  # reads channels, never sets it: only loading shows it
    card, image_size, default_space = card("user/late-channels"), 8, "latent"
    spaces = {"latent": LatentSpace("latent", (4,))}
    _sample, _decode = Good._sample, Good._decode

    def shape(self):
        return (self.channels, 8, 8)
''', "Late", ["user/late-channels", "channels"]),
    "user/no-init": ('''
class NoInit(Good):
    def __init__(self):  # forgot super().__init__()
        self.card = card("user/no-init")
''', "NoInit", ["user/no-init", "super().__init__()"]),
    "user/not-a-model": ('''
class NotAModel:
    pass
''', "NotAModel", ["user/not-a-model", "NotAModel", "LatentModel"]),
    "user/wrong-default": ('''
class WrongDefault(Good):
    default_space = "w"
''', "WrongDefault", ["user/wrong-default", "default_space", "'w'"]),
    "user/zero-size": ('''
class ZeroSize(Good):
    image_size = 0
''', "ZeroSize", ["user/zero-size", "image_size"]),
}


def _found(folder, **kwargs) -> Registry:
    reg = Registry(**kwargs)
    reg.discover_folder(folder)  # the folder's plugins only, not the built-in ones
    return reg


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and "\n" not in message and "Error" not in message, message


def test_a_plugin_found_broken_is_listed_with_one_sentence_and_not_as_a_model(tmp_path):
    for file, (code, _) in FOUND_BROKEN.items():
        (tmp_path / file).write_text(textwrap.dedent(HEADER) + textwrap.dedent(code))
    (tmp_path / "good.py").write_text(textwrap.dedent(HEADER) + "\ndef get_models():\n    return [ModelEntry(card=Good.card, load=Good)]\n")
    reg = _found(tmp_path)
    assert reg.names() == ["user/good"] and reg.status("user/good") == "ready"
    errors = {e.plugin.rsplit("/", 1)[-1]: e.message for e in reg.errors}
    assert set(errors) == set(FOUND_BROKEN)
    for file, (_, words) in FOUND_BROKEN.items():
        _one_sentence(errors[file])
        for word in words:
            assert word in errors[file], (word, errors[file])
    assert reg.get("user/good").decode(torch.zeros(1, 4)).shape == (1, 1, 8, 8)


def test_a_model_found_broken_only_when_loaded_fails_with_one_sentence(tmp_path):
    code = textwrap.dedent(HEADER) + "".join(textwrap.dedent(c) for c, _, _ in LOADED_BROKEN.values())
    code += "\ndef get_models():\n    return [\n"
    code += "".join(f"        ModelEntry(card=card({name!r}), load=lambda: {cls}()),\n" for name, (_, cls, _) in LOADED_BROKEN.items())
    code += "    ]\n"
    (tmp_path / "late.py").write_text(code)
    reg = _found(tmp_path)
    assert not reg.errors, reg.errors
    for name, (_, _, words) in LOADED_BROKEN.items():
        with pytest.raises(RuntimeError) as e:
            reg.get(name)
        _one_sentence(str(e.value))
        for word in words:
            assert word in str(e.value), (word, str(e.value))
        assert reg.status(name) == f"failed: {e.value}"  # the Models tab lists it as failed, with that sentence


def test_the_cli_says_what_a_broken_plugin_lacks_without_a_traceback(tmp_path):
    code = textwrap.dedent(HEADER) + textwrap.dedent(LOADED_BROKEN["user/late-channels"][0])
    (tmp_path / "late.py").write_text(code + "\ndef get_models():\n    return [ModelEntry(card=Late.card, load=lambda: Late())]\n")
    run = subprocess.run([sys.executable, "app.py", "--plugins-dir", str(tmp_path), "interpolate", "--seeds", "1", "2",
                          "--model", "user/late-channels", "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Model user/late-channels is missing channels" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_model_without_parameters_needs_no_module(tmp_path):
    (tmp_path / "plain.py").write_text(textwrap.dedent(HEADER) + textwrap.dedent('''
        class Plain(Good):
            """A PCA-like model in plain tensors: no torch module, so no modules() either."""
            card, has_encoder = card("user/plain"), True

            def __init__(self):
                super().__init__()
                self.weight = torch.linalg.qr(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)))[0].to(self.device)

            def _decode(self, z, space, **kwargs):
                return (z @ self.weight.T).reshape(-1, 1, 8, 8)

            def _encode(self, x, space):
                return x.reshape(len(x), -1) @ self.weight

        def get_models():
            return [ModelEntry(card=Plain.card, load=Plain)]
        '''))
    reg = _found(tmp_path, max_bytes=1)
    assert not reg.errors, reg.errors
    model = reg.get("user/plain")
    assert model.modules() == [] and model_bytes(model) == 0 and reg.loaded_bytes() == 0
    assert model.to("cpu") is model
    z = model.sample(3, seed=1)
    assert torch.allclose(model.encode(model.generate(z)), z, atol=1e-5)  # decode and its exact inverse, batched
