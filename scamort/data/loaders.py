"""Minibatches of {counts per modality, masks, covariate codes} from :class:`CellData`."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .setup import CellData


class CellBatches(Dataset):
    """Indexed by an array of cell positions; returns one densified minibatch."""

    def __init__(self, cells: CellData, indices: np.ndarray):
        self.cells, self.indices = cells, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, batch: list[int]) -> dict:
        idx = self.indices[np.asarray(batch)]
        return {
            "x": {m: torch.from_numpy(X[idx].toarray()) for m, X in self.cells.x.items()},
            "mask": torch.from_numpy(self.cells.mask[idx].astype(np.float32)),
            "cov": torch.from_numpy(self.cells.cov[idx]),
        }


def make_loader(
    cells: CellData, indices: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """One minibatch per step: the sampler yields index lists, the dataset slices CSR rows."""
    ds = CellBatches(cells, indices)
    base = (
        RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
        if shuffle
        else SequentialSampler(ds)
    )
    return DataLoader(
        ds, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None, num_workers=0
    )
