"""Checks of option values shared by every layer: one ValueError that says what is valid."""

from __future__ import annotations

import numpy as np


def check_option(name: str, value, valid) -> None:
    """Raise one ValueError that lists the valid choices."""
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {sorted(valid)}.")


def check_weight(name: str, value) -> None:
    """Raise a ValueError unless ``value`` is a real number >= 0 (NaN and strings fail)."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (real and value >= 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}.")
