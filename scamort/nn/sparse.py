"""Rows of a sparse count matrix as torch tensors (CSR), sliced without Python loops.

Counts stay sparse from the AnnData to the first layer of each encoder and to the
likelihoods: an encoder's first layer is an ``embedding_bag`` over the non-zeros, the
Bernoulli and Poisson likelihoods read only the non-zero entries, and only the small RNA
block of a minibatch is densified (on the device) for the negative binomial.

A block keeps a host copy of its row offsets (``host_crow``, 8 bytes per row) wherever
it was built from host data. Gathering rows chosen by a host index then needs no number
from the device: the output's size is known on the host, so a training step on a GPU
never waits for the GPU to report a shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


def host_index_on(idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host index array on ``device``, copied without waiting for the device."""
    return torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(device, non_blocking=True)


@dataclass
class SparseRows:
    """A CSR block: row ``i`` holds ``val[crow[i]:crow[i+1]]`` at columns ``col[...]``."""

    crow: torch.Tensor  # (N + 1,) int64
    col: torch.Tensor  # (nnz,) int32 or int64
    val: torch.Tensor  # (nnz,) float32
    n_cols: int
    host_crow: np.ndarray | None = None  # crow on the host (int64), where known

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_scipy(cls, X: sp.csr_matrix) -> SparseRows:
        """Shares the column and value arrays with ``X`` (no copy on the host)."""
        X = X.tocsr()
        crow = np.asarray(X.indptr, dtype=np.int64)
        return cls(
            torch.from_numpy(crow),
            torch.from_numpy(X.indices),
            torch.from_numpy(np.asarray(X.data, dtype=np.float32)),
            X.shape[1],
            crow,
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
            self.host_crow,
        )

    def pin_memory(self) -> SparseRows:
        return SparseRows(
            self.crow.pin_memory(),
            self.col.pin_memory(),
            self.val.pin_memory(),
            self.n_cols,
            self.host_crow,
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

    def rows(self, idx: np.ndarray | torch.Tensor) -> SparseRows:
        """The rows ``idx`` (any order, repeats allowed), gathered with tensor ops only.

        A host index (NumPy array or CPU tensor) into a block with ``host_crow`` is
        sized on the host and copied over without waiting for the device; the result
        keeps its own ``host_crow``. A device index reads the output size back from
        the device (one synchronisation)."""
        if self.host_crow is None or (isinstance(idx, torch.Tensor) and idx.device.type != "cpu"):
            return self._rows_sized_on_device(torch.as_tensor(idx))
        idx = np.asarray(idx, dtype=np.int64)
        starts = self.host_crow[idx]
        lens = self.host_crow[idx + 1] - starts
        crow = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=crow[1:])
        nnz = int(crow[-1])
        # one host-to-device copy: [shift | lens | crow]
        packed = host_index_on(np.concatenate([starts - crow[:-1], lens, crow]), self.device)
        n = len(idx)
        shift = torch.repeat_interleave(packed[:n], packed[n : 2 * n], output_size=nnz)
        pos = torch.arange(nnz, device=self.device) + shift
        return SparseRows(packed[2 * n :], self.col[pos].long(), self.val[pos], self.n_cols, crow)

    def _rows_sized_on_device(self, idx: torch.Tensor) -> SparseRows:
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
        return self.rows(np.tile(np.arange(self.n_rows), times))

    def with_values(self, val: torch.Tensor) -> SparseRows:
        return SparseRows(self.crow, self.col, val, self.n_cols, self.host_crow)

    def dense(self) -> torch.Tensor:
        out = self.val.new_zeros(self.shape)
        out[self.row_ids(), self.col.long()] = self.val
        return out

    def row_sums(self) -> torch.Tensor:
        """(N,) sum of each row."""
        return self.val.new_zeros(self.n_rows).index_add_(0, self.row_ids(), self.val)
