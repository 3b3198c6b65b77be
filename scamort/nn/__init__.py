"""Networks: MLP blocks, Gaussian encoders, likelihood decoders."""

from .decoders import DECODERS, BernoulliDecoder, NBDecoder, PoissonDecoder
from .encoders import GaussianEncoder
from .mlp import MLP, one_hot_covariates
from .sparse import SparseRows

__all__ = [
    "DECODERS",
    "MLP",
    "BernoulliDecoder",
    "GaussianEncoder",
    "NBDecoder",
    "PoissonDecoder",
    "SparseRows",
    "one_hot_covariates",
]
