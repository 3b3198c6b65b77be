"""scamort: a product-of-experts deep generative model for paired and unpaired RNA + ATAC."""

__version__ = "0.1.0"

from . import datasets, gaps, metrics  # noqa: E402
from .data import DataError, EmptyFeaturesWarning  # noqa: E402
from .experiments import combine  # noqa: E402
from .model import SCAMORT  # noqa: E402
from .readers import ReadError, read, read_10x_multiome  # noqa: E402

__all__ = [
    "SCAMORT",
    "DataError",
    "EmptyFeaturesWarning",
    "ReadError",
    "__version__",
    "combine",
    "datasets",
    "gaps",
    "metrics",
    "read",
    "read_10x_multiome",
]
