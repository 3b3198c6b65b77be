"""The data layer's error and warning types."""

from __future__ import annotations


class DataError(ValueError):
    """The data cannot be used as given; the message names the problem and the fix."""


class DataWarning(UserWarning):
    """The data can be used, but something in them is likely a mistake (the message says
    what and how to check)."""


class EmptyFeaturesWarning(UserWarning):
    """Some features have no counts in any cell that has their modality (they are kept)."""
