"""scamort: a product-of-experts deep generative model for paired and unpaired RNA + ATAC."""

__version__ = "0.1.0"

from . import datasets, gaps, metrics  # noqa: E402
from .data import DataError  # noqa: E402
from .model import SCAMORT  # noqa: E402

__all__ = ["SCAMORT", "DataError", "__version__", "datasets", "gaps", "metrics"]
