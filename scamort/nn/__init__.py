"""Networks: MLP blocks, Gaussian encoders, likelihood decoders."""

from .decoders import DECODERS, BernoulliDecoder, NBDecoder, PoissonDecoder
from .encoders import GaussianEncoder
from .mlp import MLP, one_hot_covariates

__all__ = [
    "DECODERS",
    "MLP",
    "BernoulliDecoder",
    "GaussianEncoder",
    "NBDecoder",
    "PoissonDecoder",
    "one_hot_covariates",
]
