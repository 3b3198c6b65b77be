"""Decoders: each parameterises one modality's likelihood p(x_m | z, s).

Every decoder has two parts:
- ``log_size(x)``: the cell-specific size term read from the observed counts
  (log library size, or PeakVI's cell factor); 0 gives normalized values.
- ``forward(z, cov, log_size, batch)``: the likelihood object for the counts.
Decoders are registered by likelihood name in ``DECODERS``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..likelihoods import NegativeBinomial, PeakBernoulli, Poisson, ZeroInflatedNegativeBinomial
from .mlp import MLP


def _log_library(x: torch.Tensor) -> torch.Tensor:
    # (N, F) -> (N, 1); validation guarantees every present cell has a count somewhere,
    # the clamp only protects rows of absent cells, which are never scored.
    return torch.log(x.sum(dim=-1, keepdim=True).clamp(min=1.0))


class _Decoder(nn.Module):
    def __init__(self, n_latent, n_features, n_cov, n_hidden, n_layers, dropout):
        super().__init__()
        self.body = MLP(n_latent, n_cov, n_hidden, n_layers, dropout)
        self.out = nn.Linear(self.body.n_out, n_features)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        # log1p only inside the encoder; the likelihood sees raw counts.
        return torch.log1p(x)

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The values the likelihood scores (raw counts unless the likelihood binarizes)."""
        return x


class NBDecoder(_Decoder):
    """x_ng ~ NB(l_n * softmax(f(z, s))_g, theta_g), optionally zero-inflated."""

    def __init__(
        self,
        n_latent,
        n_features,
        n_cov,
        n_hidden,
        n_layers,
        dropout,
        *,
        zero_inflated: bool = False,
        n_dispersion_groups: int = 1,
    ):
        super().__init__(n_latent, n_features, n_cov, n_hidden, n_layers, dropout)
        self.log_theta = nn.Parameter(torch.zeros(n_dispersion_groups, n_features))
        self.zi = nn.Linear(self.body.n_out, n_features) if zero_inflated else None

    def log_size(self, x: torch.Tensor) -> torch.Tensor:
        return _log_library(x)

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        log_mu = F.log_softmax(self.out(h), dim=-1) + log_size
        log_theta = self.log_theta[batch if self.log_theta.shape[0] > 1 else 0]
        if self.zi is None:
            return NegativeBinomial(log_mu, log_theta)
        return ZeroInflatedNegativeBinomial(log_mu, log_theta, self.zi(h))


class BernoulliDecoder(_Decoder):
    """PeakVI: y_np ~ Bernoulli(sigmoid(f(z, s))_p * sigmoid(c_n) * sigmoid(r_p))."""

    def __init__(self, n_latent, n_features, n_cov, n_hidden, n_layers, dropout, **_):
        super().__init__(n_latent, n_features, n_cov, n_hidden, n_layers, dropout)
        self.region_logit = nn.Parameter(torch.zeros(n_features))
        # The cell factor c_n is read off the cell's own peaks (PeakVI's l-encoder).
        self.cell_factor_body = MLP(n_features, 0, n_hidden, 1, dropout, sparse_input=True)
        self.cell_factor = nn.Linear(n_hidden, 1)

    def encoder_input(self, x):
        return self.observed(x)

    def observed(self, x):
        return (x > 0).to(x.dtype)

    def log_size(self, x):
        x = self.observed(x)
        return F.logsigmoid(self.cell_factor(self.cell_factor_body(x, x[:, :0])))

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        log_p = F.logsigmoid(self.out(h)) + F.logsigmoid(self.region_logit) + log_size
        return PeakBernoulli(log_p)


class PoissonDecoder(_Decoder):
    """y_np ~ Poisson(l_n * softmax(f(z, s))_p), l_n the cell's fragment count."""

    def __init__(self, n_latent, n_features, n_cov, n_hidden, n_layers, dropout, **_):
        super().__init__(n_latent, n_features, n_cov, n_hidden, n_layers, dropout)

    def log_size(self, x):
        return _log_library(x)

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        return Poisson(F.log_softmax(self.out(h), dim=-1) + log_size)


DECODERS: dict[str, type[_Decoder]] = {
    "nb": NBDecoder,
    "zinb": NBDecoder,
    "bernoulli": BernoulliDecoder,
    "poisson": PoissonDecoder,
}
