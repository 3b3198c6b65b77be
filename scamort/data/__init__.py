"""The data layer: the only place that touches AnnData / MuData."""

from .errors import DataWarning
from .loaders import CellTensors, make_loader, resolve_placement
from .setup import CellData, DataError, DataSpec, EmptyFeaturesWarning, register, to_cell_data

__all__ = [
    "CellData",
    "CellTensors",
    "DataError",
    "DataSpec",
    "DataWarning",
    "EmptyFeaturesWarning",
    "make_loader",
    "register",
    "resolve_placement",
    "to_cell_data",
]
