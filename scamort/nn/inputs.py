"""What an expert reads of its modality's counts (the likelihood always sees raw counts)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .sparse import SparseRows


class EncoderInput(nn.Module):
    """A transform of a sparse block of counts; ``fit`` sets what it learns from the data."""

    # whether the encoder can read a decoded expected profile through this transform
    # (batch-swap consistency feeds one to the encoders)
    reads_expected_profile = True

    def fit(self, cells_per_feature: np.ndarray, n_cells: int) -> None:
        """Set statistics from the training cells that have the modality (none here)."""


class Log1p(EncoderInput):
    """log1p of the counts: log only inside the encoder."""

    def forward(self, x: SparseRows) -> SparseRows:
        return x.with_values(torch.log1p(x.val))


class Binarize(EncoderInput):
    """Presence (count > 0) of each feature, as PeakVI reads peaks."""

    def forward(self, x: SparseRows) -> SparseRows:
        return x.with_values((x.val > 0).to(x.val.dtype))


class TfIdf(EncoderInput):
    """log1p(1e4 x TF x IDF) of the binarized counts. TF: over the cell's present
    features; IDF: cells with the modality / (1 + cells where the feature is present),
    from the training data (:meth:`fit`)."""

    reads_expected_profile = False

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("idf", torch.ones(n_features))

    def fit(self, cells_per_feature: np.ndarray, n_cells: int) -> None:
        idf = n_cells / (1.0 + np.asarray(cells_per_feature))
        self.idf.copy_(torch.as_tensor(idf, dtype=torch.float32))

    def forward(self, x: SparseRows) -> SparseRows:
        b = (x.val > 0).to(x.val.dtype)
        rows = x.row_ids()
        n_open = b.new_zeros(x.n_rows).index_add_(0, rows, b).clamp_min(1.0)
        return x.with_values(torch.log1p(1e4 * b * self.idf[x.col.long()] / n_open[rows]))
