"""Bernoulli likelihood on binarized peaks with a cell factor and a region factor.

PeakVI's model: P(peak p open in cell n) = sigmoid(a_np) * sigmoid(c_n) * sigmoid(r_p),
with a_np from the decoder, c_n a cell factor (capture efficiency) and r_p a region
factor. The product of probabilities is formed as a sum of log-sigmoids, and
log(1 - p) from log p with a stable log1mexp, so no probability is ever rounded to 0 or 1.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

# log p is kept strictly below 0 so that log(1 - p) stays finite.
_MAX_LOG_P = -1e-6


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0.

    ``log(-expm1(a))`` is exact in relative terms near 0 (open peaks, p -> 1) and off by
    at most one rounding of 1 - p far from it (absolute error ~1e-7 in float32 per entry).
    That is one branch, about half the cost of Maechler's two-branch form on the
    (cells x peaks) tensor, which dominates the training time.
    """
    return torch.log(-torch.expm1(a))


def log_bernoulli(x: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Elementwise log Bernoulli(x; p = exp(log_p)); x is binarized (> 0 counts as 1)."""
    log_p = log_p.clamp(max=_MAX_LOG_P)
    return torch.where(x > 0, log_p, log1mexp(log_p))


class PeakBernoulli(Distribution):
    """Thin distribution around :func:`log_bernoulli`, parameterised by log p."""

    arg_constraints = {"log_p": constraints.less_than(0.0)}
    support = constraints.boolean

    def __init__(self, log_p: torch.Tensor):
        self.log_p = log_p
        super().__init__(batch_shape=log_p.shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.log_p.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return log_bernoulli(value, self.log_p)
