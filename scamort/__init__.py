"""scamort: a product-of-experts deep generative model for cells that carry any subset of
their modalities (RNA, ATAC), with semi-amortized inference.

The names below are imported when first used, so that ``scamort --help`` and light
imports do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# public name -> (module, attribute)
_EXPORTS = {
    "SCAMORT": (".model", "SCAMORT"),
    "ModelOptions": (".model", "ModelOptions"),
    "Modality": (".kinds", "Modality"),
    "TrainingOptions": (".train.options", "TrainingOptions"),
    "TrainingInterrupted": (".model.training", "TrainingInterrupted"),
    "DataError": (".data", "DataError"),
    "DataWarning": (".data", "DataWarning"),
    "EmptyFeaturesWarning": (".data", "EmptyFeaturesWarning"),
    "ReadError": (".readers", "ReadError"),
    "read": (".readers", "read"),
    "read_10x_multiome": (".readers", "read_10x_multiome"),
    "combine": (".experiments", "combine"),
}
_SUBMODULES = ("datasets", "gaps", "kinds", "metrics", "pl")

__all__ = [
    "SCAMORT",
    "DataError",
    "DataWarning",
    "EmptyFeaturesWarning",
    "Modality",
    "ModelOptions",
    "ReadError",
    "TrainingInterrupted",
    "TrainingOptions",
    "__version__",
    "combine",
    "datasets",
    "gaps",
    "kinds",
    "metrics",
    "pl",
    "read",
    "read_10x_multiome",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module, __name__), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'scamort' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools and IDEs see
    from . import datasets, gaps, kinds, metrics, pl
    from .data import DataError, DataWarning, EmptyFeaturesWarning
    from .experiments import combine
    from .kinds import Modality
    from .model import SCAMORT, ModelOptions
    from .model.training import TrainingInterrupted
    from .readers import ReadError, read, read_10x_multiome
    from .train.options import TrainingOptions
