"""The one place that decides which torch device models run on."""

from __future__ import annotations

import torch

_choice: str = "auto"


def set_device(name: str) -> torch.device:
    """Set the device for models loaded from now on ("auto", "cpu", "cuda", "cuda:1", "mps")."""
    global _choice
    name = (name or "auto").strip().lower()
    if name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise ValueError(f"'{name}' is not a device name; use auto, cpu, cuda or cuda:N.") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device '{name}' was requested but CUDA is not available on this machine.")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"Device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("Device 'mps' was requested but it is not available on this machine.")
    _choice = name
    return get_device()


def get_device() -> torch.device:
    """CUDA when present (unless told otherwise), else CPU."""
    if _choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(_choice)
