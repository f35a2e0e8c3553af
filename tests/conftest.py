"""Shared test fixtures.

Tests that need the developers' shared data (``../shared`` beside the project,
or ``$LATENT_LAB_SHARED``) skip with a clear reason when it is absent, as in a
user's clone; CI always has it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENT_LAB_SHARED", ROOT.parent / "shared"))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_path(*parts: str) -> Path:
    """A path inside the shared data, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path} (only developers' machines and CI have ../shared)")
    return path


@pytest.fixture(autouse=True)
def _seeded_rngs():
    """Every test starts from the same global RNG state, so a random draw can't make CI fail once in a hundred runs.

    ``LATENT_LAB_TEST_SEED=N pytest`` replays the suite from another state to look for fragile tests.
    """
    seed = int(os.environ.get("LATENT_LAB_TEST_SEED", "0"))
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture
def shared():
    return shared_path


PRIVATE_VARS = ("GRADIO_TEMP_DIR", "LATENT_LAB_CACHE")


def use_private_dirs(tmp: Path) -> dict[str, str | None]:
    """Point Gradio's files and our cache into ``tmp`` (nothing downloaded there); returns what to restore."""
    old = {k: os.environ.get(k) for k in PRIVATE_VARS}
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    os.environ["LATENT_LAB_CACHE"] = str(tmp / "cache")
    return old


def restore_env(old: dict[str, str | None]) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def app_error(call) -> str:
    """The message of the error a gradio_client call raises (the user's plain sentence)."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        call()
    return str(e.value)
