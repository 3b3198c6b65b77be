"""Counts that stay on disk: AnnData / MuData opened backed, read in contiguous chunks.

A :class:`BackedCells` keeps in memory only the per-cell metadata (names, modality
masks, covariate codes and, per modality, the row of each cell in that modality's
matrix): about 100 bytes a cell. The count matrices stay in the file and are read with
:meth:`BackedCells.take`, which reads one contiguous row range per modality (the span of
the rows asked for) and never the whole matrix.

Training reads the data in **chunks** of ``chunk_size`` consecutive cells (in the order of
``obs_names``). Every epoch the chunks are put in a fresh random order (drawn from
``(seed, epoch)``); ``buffer_chunks`` chunks at a time are read into memory, their cells
shuffled together and cut into minibatches (:class:`ChunkBatches`). A minibatch therefore
mixes cells from ``buffer_chunks`` random places in the file: if the file is sorted (by
sample, by cell type) raise ``buffer_chunks`` or shuffle the rows once when writing it.
Memory is bounded by the buffer, whatever the number of cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cells import CellData, concat_cells
from .counts import as_counts, check_cells_have_counts, place_rows
from .errors import DataError
from .loaders import rank_and_world, rank_share


@dataclass
class BackedCells:
    """Cells whose counts are read from disk on demand (see the module docstring)."""

    obs_names: pd.Index
    sources: dict[str, object]  # per modality: the on-disk matrix (row-sliceable)
    rows: dict[str, np.ndarray]  # per modality: (n_cells,) row in its matrix, -1 if absent
    mask: np.ndarray  # (n_cells, M) bool
    cov: np.ndarray  # (n_cells, K) int64
    n_features: dict[str, int]
    chunk_size: int = 4096
    feature_cells: dict[str, np.ndarray] | None = None  # filled by the validation pass

    @property
    def n_cells(self) -> int:
        return len(self.obs_names)

    def chunks(self) -> list[tuple[int, int]]:
        """Consecutive ``[start, stop)`` blocks of ``chunk_size`` cells."""
        return [
            (s, min(s + self.chunk_size, self.n_cells))
            for s in range(0, self.n_cells, self.chunk_size)
        ]

    def take(self, cells: np.ndarray) -> CellData:
        """The cells ``cells`` (positions, any order) read from disk as a :class:`CellData`.

        Per modality, the rows asked for are read as one contiguous range when they are
        close together (as for a chunk of consecutive cells), else row by row in
        increasing order; then put in the order of ``cells``.
        """
        cells = np.asarray(cells, dtype=np.int64)
        x = {}
        for m, source in self.sources.items():
            r = self.rows[m][cells]
            has = np.flatnonzero(r >= 0)
            x[m] = place_rows(_read_rows(source, r[has], self.n_features[m], m), has, len(cells))
        return CellData(self.obs_names[cells], x, self.mask[cells], self.cov[cells])

    def cells_per_feature(self, m: str) -> np.ndarray:
        """(F,) number of cells with a stored count of each feature (from :meth:`validate`)."""
        return self.feature_cells[m]

    def validate(self) -> None:
        """One pass over the file: checks every count and that every cell has some;
        records the number of cells in which each feature has a stored count."""
        nnz = {m: np.zeros(f, dtype=np.int64) for m, f in self.n_features.items()}
        for start, stop in self.chunks():
            part = self.take(np.arange(start, stop))
            for m, X in part.x.items():
                nnz[m] += np.bincount(X.indices, minlength=X.shape[1])
            check_cells_have_counts(part.obs_names, part.x, part.mask)
        self.feature_cells = nnz


def is_backed_matrix(X) -> bool:
    """True for a matrix that AnnData left on disk (backed mode)."""
    import anndata as ad
    import h5py

    return isinstance(X, (ad.abc.CSRDataset, ad.abc.CSCDataset, h5py.Dataset))


def check_backed_matrix(X, m: str) -> None:
    import anndata as ad

    if isinstance(X, ad.abc.CSCDataset):
        raise DataError(
            f"modality {m!r} is stored on disk as CSC, which cannot be read by rows; "
            "write it as CSR (adata.X = adata.X.tocsr()) to fit it backed."
        )


def _read_rows(source, rows: np.ndarray, n_features: int, m: str) -> sp.csr_matrix:
    """Rows ``rows`` (any order) of an on-disk matrix, as checked float32 CSR."""
    where = f"modality {m!r} (on disk)"
    if len(rows) == 0:
        return sp.csr_matrix((0, n_features), dtype=np.float32)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if hi - lo <= 3 * len(rows) + 64:  # close together: one contiguous read
        return as_counts(source[lo:hi], where)[rows - lo]
    unique, inverse = np.unique(rows, return_inverse=True)
    return as_counts(source[unique], where)[inverse]


class ChunkBatches:
    """Minibatches (host tensors) streamed from disk, chunk by chunk.

    Each epoch: the chunks ``chunk_ids`` in an order drawn from ``(seed, epoch)`` (or as
    given when ``shuffle=False``); with N distributed ranks each rank takes every N-th
    chunk (wrapping around so that all ranks get as many). ``buffer_chunks`` chunks are
    read at a time and their cells shuffled together. Every rank yields exactly
    ``len(self)`` minibatches of ``ceil(batch_size / N)`` cells, so the ranks stay in
    step; with one rank every cell is seen once per epoch.
    """

    def __init__(
        self,
        cells: BackedCells,
        chunk_ids: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        buffer_chunks: int = 4,
    ):
        if buffer_chunks < 1:
            raise ValueError(f"buffer_chunks must be >= 1, got {buffer_chunks}.")
        self.cells, self.chunk_ids = cells, np.asarray(chunk_ids)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.buffer_chunks = buffer_chunks
        self.epoch = 0
        # Lightning calls loader.sampler.set_epoch(epoch) and inspects batch_sampler.
        self.sampler, self.batch_sampler = self, None
        spans = cells.chunks()
        self._sizes = np.array([spans[i][1] - spans[i][0] for i in self.chunk_ids])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> tuple[np.ndarray, int, int]:
        """This rank's chunks, the step size and the number of steps."""
        _, world = rank_and_world()
        step = -(-self.batch_size // world)
        k = -(-len(self.chunk_ids) // world)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.chunk_ids))
        else:
            order = np.arange(len(self.chunk_ids))
        mine = rank_share(order)
        # the fewest cells any rank can get: k - 1 full chunks and the smallest one
        fewest = (
            (k - 1) * int(self._sizes.max()) + int(self._sizes.min())
            if world > 1
            else int(self._sizes.sum())
        )
        return self.chunk_ids[mine], step, -(-fewest // step)

    def __len__(self) -> int:
        return self._plan()[2]

    def __iter__(self):
        chunks, step, n_steps = self._plan()
        rank, _ = rank_and_world()
        rng = np.random.default_rng([self.seed, self.epoch, rank, 1])
        spans = self.cells.chunks()
        carry: CellData | None = None
        done = 0
        for b in range(0, len(chunks), self.buffer_chunks):
            cells = np.concatenate(
                [np.arange(*spans[c]) for c in chunks[b : b + self.buffer_chunks]]
            )
            if self.shuffle:
                cells = rng.permutation(cells)
            part = self.cells.take(cells)
            if carry is not None:
                part = concat_cells([carry, part])
            store = part.tensors
            n_full = part.n_cells // step
            for s in range(n_full):
                if done == n_steps:
                    return
                yield store.batch(np.arange(s * step, (s + 1) * step))
                done += 1
            rest = np.arange(n_full * step, part.n_cells)
            carry = part.subset(rest) if len(rest) else None
        if carry is not None and done < n_steps:
            yield carry.tensors.batch(np.arange(carry.n_cells))
