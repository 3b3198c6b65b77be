"""Poisson likelihood on fragment counts with a cell depth offset.

rate_np = l_n * softmax(f(z_n, s_n))_p with l_n the cell's observed total count, as in
the fragment-count extension of PeakVI. Evaluated from the log rate.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints


def log_poisson(x: torch.Tensor, log_rate: torch.Tensor) -> torch.Tensor:
    """Elementwise log Poisson(x; rate = exp(log_rate))."""
    return x * log_rate - log_rate.exp() - torch.lgamma(x + 1.0)


class Poisson(Distribution):
    """Thin distribution around :func:`log_poisson`."""

    arg_constraints = {"log_rate": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, log_rate: torch.Tensor):
        self.log_rate = log_rate
        super().__init__(batch_shape=log_rate.shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.log_rate.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return log_poisson(value, self.log_rate)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        return torch.poisson(self.log_rate.exp().expand(sample_shape + self.batch_shape))

    def parameters(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean}
