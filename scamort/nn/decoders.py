"""The decoder base class: each kind of data's decoders (``scamort/kinds/``) derive from it.

Every decoder parameterises one modality's likelihood p(x_m | z, s) in three parts:
- ``log_size(x)``: the cell-specific size term read from the observed counts
  (log library size, or PeakVI's cell factor); 0 gives normalized values.
- ``forward(z, cov, log_size, batch)``: the likelihood object for the counts.
- ``log_prob(z, cov, log_size, batch, x)``: log p(x_n | z_n) per cell for a sparse block
  of counts; a decoder may read only its non-zero entries.
and says what its normalized values are (``normalized_mean``, ``scales_with_library``)
and what it scores (``observed``, ``binary_observations``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .mlp import MLP
from .sparse import SparseRows


def log_library(x: SparseRows) -> torch.Tensor:
    """N rows -> (N, 1) log total count; validation guarantees every present cell has a
    count somewhere, the clamp only protects rows of absent cells, which are never scored."""
    return torch.log(x.row_sums().clamp(min=1.0))[:, None]


@dataclass(frozen=True)
class DecoderShape:
    """Everything a decoder takes from the model's configuration."""

    n_latent: int
    n_features: int
    n_cov: int  # width of the one-hot covariates
    n_hidden: int
    n_layers: int
    dropout: float
    output_covariates: bool = False
    n_batches: int = 1


class Decoder(nn.Module):
    """An MLP body on (z, covariates) and an output layer with one value per feature."""

    # whether get_normalized's library_size scales the normalized values
    scales_with_library = True
    # whether the likelihood scores presence (x > 0) rather than the counts
    binary_observations = False

    def __init__(self, shape: DecoderShape):
        super().__init__()
        self.body = MLP(shape.n_latent, shape.n_cov, shape.n_hidden, shape.n_layers, shape.dropout)
        self.out = nn.Linear(self.body.n_out, shape.n_features)
        # The covariates also enter the output layer: a per-feature offset of every
        # category on the output scale (logits), so an additive batch effect of each
        # feature is modelled exactly, not through the hidden layer's nonlinearity.
        # Starts at zero (no batch effect).
        self.out_cov = None
        if shape.output_covariates and shape.n_cov:
            self.out_cov = nn.Linear(shape.n_cov, shape.n_features, bias=False)
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

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The values the likelihood scores (raw counts unless the likelihood binarizes)."""
        return x

    def expected_input(self, z, cov, log_size, batch) -> torch.Tensor:
        """(N, F) dense: what the encoder would read of the expected profile of p(x | z, s)
        (log1p of the expected counts; for binarized peaks, the probability of being open)."""
        return torch.log1p(self(z, cov, log_size, batch).mean)

    def normalized_mean(self, dist) -> torch.Tensor:
        """The normalized value of a decoded distribution (its mean by default)."""
        return dist.mean

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        """(N,) log p(x_n | z_n); this default densifies the block (fine for genes)."""
        return self(z, cov, log_size, batch).log_prob(self.observed(x.dense())).sum(-1)
