"""Decoders: each parameterises one modality's likelihood p(x_m | z, s).

Every decoder has three parts:
- ``log_size(x)``: the cell-specific size term read from the observed counts
  (log library size, or PeakVI's cell factor); 0 gives normalized values.
- ``forward(z, cov, log_size, batch)``: the likelihood object for the counts.
- ``log_prob(z, cov, log_size, batch, x)``: log p(x_n | z_n) per cell for a sparse block
  of counts; the ATAC decoders read only its non-zero entries.
Decoders are registered by likelihood name in ``DECODERS``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..likelihoods import (
    NegativeBinomial,
    PeakBernoulli,
    Poisson,
    ZeroInflatedNegativeBinomial,
    peak_bernoulli_log_lik,
)
from ..likelihoods.sampled import sampled_peak_bernoulli_log_lik
from .mlp import MLP
from .sparse import SparseRows


def _log_library(x: SparseRows) -> torch.Tensor:
    # N rows -> (N, 1); validation guarantees every present cell has a count somewhere,
    # the clamp only protects rows of absent cells, which are never scored.
    return torch.log(x.row_sums().clamp(min=1.0))[:, None]


class _Decoder(nn.Module):
    def __init__(
        self, n_latent, n_features, n_cov, n_hidden, n_layers, dropout, output_covariates=False
    ):
        super().__init__()
        self.body = MLP(n_latent, n_cov, n_hidden, n_layers, dropout)
        self.out = nn.Linear(self.body.n_out, n_features)
        # The covariates also enter the output layer: a per-feature offset of every
        # category on the output scale (logits), so an additive batch effect of each
        # feature is modelled exactly, not through the hidden layer's nonlinearity.
        # Starts at zero (no batch effect).
        self.out_cov = None
        if output_covariates and n_cov:
            self.out_cov = nn.Linear(n_cov, n_features, bias=False)
            nn.init.zeros_(self.out_cov.weight)

    def logits(self, h: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """The output layer on the body's ``h`` (plus the covariates' offsets)."""
        out = self.out(h)
        return out if self.out_cov is None else out + self.out_cov(cov)

    def output_layer(self, h: torch.Tensor, cov: torch.Tensor):
        """``(input, weight)`` of the output layer as one linear map (``input @ weight.T +
        out.bias``), for likelihoods that apply it to a subset of the features."""
        if self.out_cov is None:
            return h, self.out.weight
        return torch.cat([h, cov], -1), torch.cat([self.out.weight, self.out_cov.weight], -1)

    def encoder_input(self, x: SparseRows) -> SparseRows:
        # log1p only inside the encoder; the likelihood sees raw counts.
        return x.with_values(torch.log1p(x.val))

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The values the likelihood scores (raw counts unless the likelihood binarizes)."""
        return x

    def expected_input(self, z, cov, log_size, batch) -> torch.Tensor:
        """(N, F) dense: what the encoder would read of the expected profile of p(x | z, s)
        (log1p of the expected counts; for binarized peaks, the probability of being open)."""
        return torch.log1p(self(z, cov, log_size, batch).mean)

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        """(N,) log p(x_n | z_n); this default densifies the block (fine for genes)."""
        return self(z, cov, log_size, batch).log_prob(self.observed(x.dense())).sum(-1)


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
        output_covariates: bool = False,
    ):
        super().__init__(
            n_latent, n_features, n_cov, n_hidden, n_layers, dropout, output_covariates
        )
        self.log_theta = nn.Parameter(torch.zeros(n_dispersion_groups, n_features))
        self.zi = nn.Linear(self.body.n_out, n_features) if zero_inflated else None

    def log_size(self, x: torch.Tensor) -> torch.Tensor:
        return _log_library(x)

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        log_mu = F.log_softmax(self.logits(h, cov), dim=-1) + log_size
        log_theta = self.log_theta[batch if self.log_theta.shape[0] > 1 else 0]
        if self.zi is None:
            return NegativeBinomial(log_mu, log_theta)
        return ZeroInflatedNegativeBinomial(log_mu, log_theta, self.zi(h))


class BernoulliDecoder(_Decoder):
    """PeakVI: y_np ~ Bernoulli(sigmoid(f(z, s))_p * sigmoid(c_n) * sigmoid(r_p))."""

    def __init__(
        self,
        n_latent,
        n_features,
        n_cov,
        n_hidden,
        n_layers,
        dropout,
        *,
        cell_factor_hidden: int | None = None,
        n_sampled: int | None = None,
        output_covariates: bool = False,
    ):
        super().__init__(
            n_latent, n_features, n_cov, n_hidden, n_layers, dropout, output_covariates
        )
        # Training scores the closed peaks on n_sampled random columns (unbiased; see
        # likelihoods/sampled.py); evaluation mode is always exact.
        self.n_sampled = n_sampled if n_sampled is not None and n_sampled < n_features else None
        self.region_logit = nn.Parameter(torch.zeros(n_features))
        # The cell factor c_n is read off the cell's own peaks (PeakVI's l-encoder), by a
        # network of one hidden layer of width cell_factor_hidden (default n_hidden).
        width = cell_factor_hidden or n_hidden
        self.cell_factor_body = MLP(n_features, 0, width, 1, dropout, sparse_input=True)
        self.cell_factor = nn.Linear(width, 1)

    def encoder_input(self, x: SparseRows) -> SparseRows:
        return x.with_values((x.val > 0).to(x.val.dtype))

    def observed(self, x):
        return (x > 0).to(x.dtype)

    def log_size(self, x: SparseRows) -> torch.Tensor:
        return F.logsigmoid(self.cell_factor(self.cell_factor_body(self.encoder_input(x), None)))

    def expected_input(self, z, cov, log_size, batch) -> torch.Tensor:
        return self(z, cov, log_size, batch).mean

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        log_p = F.logsigmoid(self.logits(h, cov)) + F.logsigmoid(self.region_logit) + log_size
        return PeakBernoulli(log_p)

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        h = self.body(z, cov)
        if self.training and self.n_sampled is not None:
            open_w = (x.val > 0).float()
            h_in, weight = self.output_layer(h, cov)
            return sampled_peak_bernoulli_log_lik(
                h_in, weight, self.out.bias, self.region_logit, log_size, x.crow, x.col,
                open_w, self.n_sampled,
            )  # fmt: skip
        rid, cid = x.row_ids(), x.col.long()
        logits = self.logits(h, cov)
        open_w = (x.val > 0).to(logits.dtype)
        return peak_bernoulli_log_lik(logits, self.region_logit, log_size, rid, cid, open_w)


class PoissonDecoder(_Decoder):
    """y_np ~ Poisson(l_n * softmax(f(z, s))_p), l_n the cell's fragment count."""

    def log_size(self, x):
        return _log_library(x)

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        return Poisson(F.log_softmax(self.logits(h, cov), dim=-1) + log_size)

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        # sum_p rate_np = l_n exactly (softmax), so only the non-zero counts are read:
        # sum_p [x log rate - rate - log x!] = sum_nz [x log rate - log x!] - l_n.
        log_rate = F.log_softmax(self.logits(self.body(z, cov), cov), dim=-1) + log_size
        rid = x.row_ids()
        terms = x.val * log_rate[rid, x.col.long()] - torch.lgamma(x.val + 1.0)
        return log_rate.new_zeros(x.n_rows).index_add_(0, rid, terms) - log_size[:, 0].exp()


DECODERS: dict[str, type[_Decoder]] = {
    "nb": NBDecoder,
    "zinb": NBDecoder,
    "bernoulli": BernoulliDecoder,
    "poisson": PoissonDecoder,
}
