"""Checks of values that come from people (widgets, flags, the API), each failing with a plain sentence."""

from __future__ import annotations

import math


def whole_number(value: float | int | None, what: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a ValueError that says what was wrong (2.5 frames is refused, not rounded)."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"Give the {what} as a whole number from {low} to {high}.")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Give the {what} as a whole number from {low} to {high}.") from None
    if not math.isfinite(f) or f != int(f) or not low <= f <= high:
        raise ValueError(f"The {what} must be a whole number from {low} to {high}, not {value}.")
    return int(f)
