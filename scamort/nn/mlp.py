"""Fully connected blocks with covariates injected at every layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sparse import SparseRows


def one_hot_covariates(codes: torch.Tensor, n_categories: tuple[int, ...]) -> torch.Tensor:
    """(N, K) integer codes -> (N, sum(n_categories)) float one-hot block."""
    if not n_categories:
        return codes.new_zeros((codes.shape[0], 0), dtype=torch.float32)
    parts = [F.one_hot(codes[:, k], n) for k, n in enumerate(n_categories)]
    return torch.cat(parts, dim=-1).float()


class CountsLinear(nn.Module):
    """x @ W + b for sparse count input, computed over the non-zero entries only.

    Count matrices are 90-99.5 % zeros, so ``embedding_bag`` over the non-zeros costs a
    small fraction of a dense matmul, forward and backward. Initialised like nn.Linear.
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))

    def forward(self, x: SparseRows | torch.Tensor) -> torch.Tensor:
        # x: N rows of n_in columns, sparse (or a dense (N, n_in) tensor) -> (N, n_out)
        if isinstance(x, torch.Tensor):
            return torch.addmm(self.bias, x, self.weight)
        out = F.embedding_bag(
            x.col.long(),
            self.weight,
            x.crow,
            mode="sum",
            per_sample_weights=x.val,
            include_last_offset=True,
        )
        return out + self.bias


class MLP(nn.Module):
    """(Linear -> LayerNorm -> ReLU -> Dropout) x ``n_layers``.

    The covariate one-hot enters every layer, as in scvi-tools'
    ``FCLayers(inject_covariates=True)``, so deep layers cannot forget the batch; a linear
    layer on ``[h, cov]`` is written as ``W_h h + W_c cov``. ``sparse_input`` computes the
    first layer over the non-zero counts of a :class:`SparseRows` block only. LayerNorm
    rather than BatchNorm: minibatches mix paired and unpaired cells in varying
    proportions, and per-cell refinement must not depend on batch statistics.
    """

    def __init__(
        self,
        n_in: int,
        n_cov: int,
        n_hidden: int,
        n_layers: int,
        dropout: float,
        sparse_input: bool = False,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError("n_layers must be at least 1.")
        self.linear = nn.ModuleList(
            [CountsLinear(n_in, n_hidden) if sparse_input else nn.Linear(n_in, n_hidden)]
            + [nn.Linear(n_hidden, n_hidden) for _ in range(n_layers - 1)]
        )
        self.cov = nn.ModuleList(
            [nn.Linear(n_cov, n_hidden, bias=False) for _ in range(n_layers)] if n_cov else []
        )
        self.post = nn.ModuleList(
            [
                nn.Sequential(nn.LayerNorm(n_hidden), nn.ReLU(), nn.Dropout(dropout))
                for _ in range(n_layers)
            ]
        )
        self.n_out = n_hidden

    def forward(self, x: torch.Tensor | SparseRows, cov: torch.Tensor | None) -> torch.Tensor:
        # x: (N, n_in) (SparseRows when sparse_input), cov: (N, n_cov) -> (N, n_hidden)
        for i, (linear, post) in enumerate(zip(self.linear, self.post)):
            h = linear(x)
            if self.cov:
                h = h + self.cov[i](cov)
            x = post(h)
        return x
