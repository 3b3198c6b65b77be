"""Amortized Gaussian experts: q_m(z | x_m) = N(mu_m(x_m), sigma_m(x_m)^2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from .mlp import MLP

# Floor on the expert's scale: the product of experts sums precisions 1 / sigma^2,
# which must stay finite in float32.
MIN_SCALE = 1e-4


class GaussianEncoder(nn.Module):
    """Maps a modality's transformed counts (and optionally covariates) to a Normal expert."""

    def __init__(
        self, n_in: int, n_latent: int, n_cov: int, n_hidden: int, n_layers: int, dropout: float
    ):
        super().__init__()
        self.body = MLP(n_in, n_cov, n_hidden, n_layers, dropout, sparse_input=True)
        self.loc = nn.Linear(self.body.n_out, n_latent)
        self.raw_scale = nn.Linear(self.body.n_out, n_latent)

    def forward(self, x: torch.Tensor, cov: torch.Tensor) -> Normal:
        h = self.body(x, cov)
        # softplus rather than exp: the scale grows linearly, not explosively, with the
        # pre-activation, which keeps early training stable. float32 also under bf16
        # autocast: the product of experts sums precisions.
        loc, raw = self.loc(h).float(), self.raw_scale(h).float()
        return Normal(loc, F.softplus(raw) + MIN_SCALE, validate_args=False)
