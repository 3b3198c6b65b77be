"""The layout of the covariate codes: one integer column per categorical covariate, the
batch first, then each ``categorical_covariate_keys`` column in order.

Every reader of the batch goes through these names, not a column index.
"""

from __future__ import annotations

import numpy as np
import torch

# the batch's column among the covariate codes (DataSpec.categories follows the same order)
BATCH = 0


def batch_codes(cov: torch.Tensor | np.ndarray):
    """(N,) batch codes of (N, K) covariate codes."""
    return cov[:, BATCH]


def with_batch(cov: torch.Tensor, codes) -> torch.Tensor:
    """A copy of the (N, K) covariate codes with the batch set to ``codes`` (a code or (N,)
    codes); the other covariates are kept."""
    out = cov.clone()
    out[:, BATCH] = codes
    return out
