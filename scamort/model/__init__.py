"""The user-facing model class, one concern per file (see ``_model.py``)."""

from ._model import SCAMORT
from .options import ModelOptions

__all__ = ["ModelOptions", "SCAMORT"]
