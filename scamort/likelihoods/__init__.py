"""Count likelihoods: a pure log-prob function and a thin Distribution in each file."""

from .bernoulli import PeakBernoulli, log1mexp, log_bernoulli, peak_bernoulli_log_lik
from .negative_binomial import NegativeBinomial, ZeroInflatedNegativeBinomial, log_nb, log_zinb
from .poisson import Poisson, log_poisson

__all__ = [
    "NegativeBinomial",
    "PeakBernoulli",
    "Poisson",
    "ZeroInflatedNegativeBinomial",
    "log1mexp",
    "log_bernoulli",
    "log_nb",
    "log_poisson",
    "log_zinb",
    "peak_bernoulli_log_lik",
]
