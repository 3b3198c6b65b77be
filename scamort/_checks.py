"""Checks of option values shared by every layer: one ValueError that says what is valid."""

from __future__ import annotations

from dataclasses import fields, replace

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


def with_fields(cls, options, given: dict, caller: str, note: str = ""):
    """``options`` (an instance of the dataclass ``cls``, or None: its defaults) with the
    fields in ``given`` set; a name that is not a field is a TypeError listing them."""
    base = cls() if options is None else options
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise TypeError(
            f"{caller}() got an unexpected option {unknown[0]!r}; its options are its "
            f"arguments and the fields of {cls.__name__}: {valid}{note}."
        )
    return replace(base, **given) if given else base
