"""A plugin installed as a package: built as a wheel, installed into a --target folder, found by its entry point when
the app runs from another folder (not only from its checkout), listed in `app.py models` and projecting in the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plugins.registry import ENTRY_POINT_GROUP
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PYPROJECT = f'''
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "lab-sample-plugin"
version = "0.1.0"
requires-python = ">=3.11"

[project.entry-points."{ENTRY_POINT_GROUP}"]
sample = "lab_sample_plugin"

[tool.setuptools]
packages = ["lab_sample_plugin"]
'''

# A parameterless linear model (no torch module at all: modules() keeps its default) with an exact encoder.
PLUGIN = '''
"""Sample plugin: a fixed random linear map from 6 numbers to 8x8 colour images."""

import torch

from core.card import LatentSpace, ModelCard
from core.model import LatentModel
from plugins.contract import ModelEntry

CARD = ModelCard("sample/linear", "Sample linear", "A fixed random linear map.", "nothing", 8, "MIT", "tests")


class SampleLinear(LatentModel):
    card, image_size, channels, default_space, has_encoder = CARD, 8, 3, "latent", True
    spaces = {"latent": LatentSpace("latent", (6,), prior="gaussian")}

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = (torch.randn(192, 6, generator=g) * 0.2).to(self.device)

    def _sample(self, n, generator):
        return torch.randn(n, 6, generator=generator), "latent"

    def _decode(self, z, space, **kwargs):
        return (z @ self.weight.T).clamp(-1, 1).reshape(-1, 3, 8, 8)

    def _encode(self, x, space):
        return torch.linalg.lstsq(self.weight, x.reshape(len(x), -1).T).solution.T


def get_models():
    return [ModelEntry(card=CARD, load=SampleLinear)]
'''


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_pip_installed_plugin_is_listed_and_projects_from_another_folder(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel offline needs setuptools in this environment")
    package = tmp_path / "lab-sample-plugin"
    (package / "lab_sample_plugin").mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "lab_sample_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(package)],
                 cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp_path / "dist").glob("lab_sample_plugin-0.1.0-*.whl"))
    site = tmp_path / "site"
    installed = _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site / "lab_sample_plugin-0.1.0.dist-info" / "entry_points.txt").read_text().count(ENTRY_POINT_GROUP) == 1

    elsewhere = tmp_path / "elsewhere"  # not the checkout, not the package's folder
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "LATENT_LAB_CACHE": str(tmp_path / "cache"),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    app = str(ROOT / "app.py")
    listed = _run([sys.executable, app, "models"], cwd=elsewhere, env=env)
    assert listed.returncode == 0, listed.stderr
    row = next((line for line in listed.stdout.splitlines() if line.startswith("sample/linear")), "")
    assert "ready" in row, listed.stdout
    assert "plugin failed" not in listed.stdout + listed.stderr, listed.stdout + listed.stderr

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(elsewhere / "photo.png")
    projected = _run([sys.executable, app, "project", "photo.png", "--model", "sample/linear", "--steps", "5", "--out", "out"],
                     cwd=elsewhere, env=env)
    assert projected.returncode == 0, projected.stdout + projected.stderr
    npz = list((elsewhere / "out").glob("*.npz"))
    assert len(npz) == 1, sorted(p.name for p in (elsewhere / "out").iterdir())
    with np.load(npz[0]) as data:
        assert data["latent"].shape[-1] == 6  # the plugin's latent space, written by the app's own workflow
