"""Networks: MLP blocks, Gaussian encoders, encoder inputs, the decoder base class (each
kind's decoders are in ``scamort/kinds``)."""

from .decoders import Decoder, DecoderShape
from .encoders import GaussianEncoder
from .inputs import Binarize, EncoderInput, Log1p, TfIdf
from .mlp import MLP, one_hot_covariates
from .sparse import SparseRows

__all__ = [
    "MLP",
    "Binarize",
    "Decoder",
    "DecoderShape",
    "EncoderInput",
    "GaussianEncoder",
    "Log1p",
    "SparseRows",
    "TfIdf",
    "one_hot_covariates",
]
