"""Cells in memory: counts aligned to one cell index, modality masks, covariate codes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..nn.sparse import SparseRows


@dataclass
class CellData:
    """Counts aligned to one cell index; rows of cells lacking a modality are empty."""

    obs_names: pd.Index
    x: dict[str, sp.csr_matrix]  # (n_cells, F_m) float32
    mask: np.ndarray  # (n_cells, M) bool
    cov: np.ndarray  # (n_cells, K) int64

    @property
    def n_cells(self) -> int:
        return len(self.obs_names)

    def subset(self, idx: np.ndarray) -> CellData:
        return CellData(
            self.obs_names[idx],
            {m: X[idx] for m, X in self.x.items()},
            self.mask[idx],
            self.cov[idx],
        )

    def cells_per_feature(self, m: str) -> np.ndarray:
        """(F,) number of cells with a stored count of each feature of ``m``."""
        return np.bincount(self.x[m].indices, minlength=self.x[m].shape[1])

    @cached_property
    def tensors(self):
        """The same cells as a :class:`~scamort.data.loaders.CellTensors` (shares memory)."""
        from .loaders import CellTensors

        return CellTensors(
            {m: SparseRows.from_scipy(X) for m, X in self.x.items()},
            torch.from_numpy(self.mask.astype(np.float32)),
            torch.from_numpy(self.cov),
            np.asarray(self.mask, dtype=bool),
        )


def batches_without_paired(mask: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Codes of the batches with no cell measured in every modality (empty with one
    modality)."""
    if mask.shape[1] < 2:
        return np.zeros(0, dtype=np.asarray(batch).dtype)
    codes = np.asarray(batch)
    return np.setdiff1d(np.unique(codes), np.unique(codes[mask.all(axis=1)]))


def concat_cells(parts: list[CellData]) -> CellData:
    """The cells of ``parts`` stacked in order."""
    return CellData(
        parts[0].obs_names.append([p.obs_names for p in parts[1:]]),
        {m: sp.vstack([p.x[m] for p in parts], format="csr") for m in parts[0].x},
        np.concatenate([p.mask for p in parts]),
        np.concatenate([p.cov for p in parts]),
    )
