"""scamort: a product-of-experts deep generative model for cells that carry any subset of
their modalities (RNA, ATAC), with semi-amortized inference."""

__version__ = "0.2.0"

from . import datasets, gaps, kinds, metrics  # noqa: E402
from .data import DataError, DataWarning, EmptyFeaturesWarning  # noqa: E402
from .experiments import combine  # noqa: E402
from .kinds import Modality  # noqa: E402
from .model import SCAMORT, ModelOptions  # noqa: E402
from .readers import ReadError, read, read_10x_multiome  # noqa: E402
from .train.options import TrainingOptions  # noqa: E402

__all__ = [
    "SCAMORT",
    "Modality",
    "ModelOptions",
    "TrainingOptions",
    "kinds",
    "DataError",
    "DataWarning",
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
