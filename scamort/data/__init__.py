"""The data layer: the only place that touches AnnData / MuData."""

from .loaders import CellBatches, make_loader
from .setup import CellData, DataError, DataSpec, register, to_cell_data

__all__ = [
    "CellBatches",
    "CellData",
    "DataError",
    "DataSpec",
    "make_loader",
    "register",
    "to_cell_data",
]
