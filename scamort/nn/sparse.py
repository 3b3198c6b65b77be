"""Rows of a sparse count matrix as torch tensors (CSR), sliced without Python loops.

Counts stay sparse from the AnnData to the first layer of each encoder and to the
likelihoods: an encoder's first layer is an ``embedding_bag`` over the non-zeros, the
Bernoulli and Poisson likelihoods read only the non-zero entries, and only the small RNA
block of a minibatch is densified (on the device) for the negative binomial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class SparseRows:
    """A CSR block: row ``i`` holds ``val[crow[i]:crow[i+1]]`` at columns ``col[...]``."""

    crow: torch.Tensor  # (N + 1,) int64
    col: torch.Tensor  # (nnz,) int32 or int64
    val: torch.Tensor  # (nnz,) float32
    n_cols: int

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, X: sp.csr_matrix) -> SparseRows:
        """Shares the column and value arrays with ``X`` (no copy on the host)."""
        X = X.tocsr()
        return cls(
            torch.from_numpy(np.asarray(X.indptr, dtype=np.int64)),
            torch.from_numpy(X.indices),
            torch.from_numpy(np.asarray(X.data, dtype=np.float32)),
            X.shape[1],
        )

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> SparseRows:
        rows, cols = x.nonzero(as_tuple=True)
        crow = torch.zeros(x.shape[0] + 1, dtype=torch.long, device=x.device)
        crow[1:] = torch.bincount(rows, minlength=x.shape[0]).cumsum(0)
        return cls(crow, cols, x[rows, cols], x.shape[1])

    # ---- shape and placement -----------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return self.crow.shape[0] - 1

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    @property
    def device(self) -> torch.device:
        return self.val.device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (self.crow, self.col, self.val))

    def to(self, device, non_blocking: bool = False) -> SparseRows:
        return SparseRows(
            self.crow.to(device, non_blocking=non_blocking),
            self.col.to(device, non_blocking=non_blocking),
            self.val.to(device, non_blocking=non_blocking),
            self.n_cols,
        )

    def pin_memory(self) -> SparseRows:
        return SparseRows(
            self.crow.pin_memory(), self.col.pin_memory(), self.val.pin_memory(), self.n_cols
        )

    # ---- views -------------------------------------------------------------------------
    def lengths(self) -> torch.Tensor:
        return self.crow[1:] - self.crow[:-1]

    def row_ids(self) -> torch.Tensor:
        """(nnz,) row of every stored entry."""
        return torch.repeat_interleave(
            torch.arange(self.n_rows, device=self.device),
            self.lengths(),
            output_size=self.col.shape[0],
        )

    def rows(self, idx: torch.Tensor) -> SparseRows:
        """The rows ``idx`` (any order, repeats allowed), gathered with tensor ops only."""
        idx = idx.to(self.crow.device, torch.long)
        starts = self.crow[idx]
        lens = self.crow[idx + 1] - starts
        crow = torch.zeros(idx.shape[0] + 1, dtype=torch.long, device=idx.device)
        torch.cumsum(lens, 0, out=crow[1:])
        nnz = int(crow[-1])
        shift = torch.repeat_interleave(starts - crow[:-1], lens, output_size=nnz)
        pos = torch.arange(nnz, device=idx.device) + shift
        return SparseRows(crow, self.col[pos].long(), self.val[pos], self.n_cols)

    def repeat(self, times: int) -> SparseRows:
        """The block stacked ``times`` times along the rows."""
        if times == 1:
            return self
        return self.rows(torch.arange(self.n_rows, device=self.device).repeat(times))

    def with_values(self, val: torch.Tensor) -> SparseRows:
        return SparseRows(self.crow, self.col, val, self.n_cols)

    def dense(self) -> torch.Tensor:
        out = self.val.new_zeros(self.shape)
        out[self.row_ids(), self.col.long()] = self.val
        return out

    def row_sums(self) -> torch.Tensor:
        """(N,) sum of each row."""
        return self.val.new_zeros(self.n_rows).index_add_(0, self.row_ids(), self.val)
