"""Count matrices: checked float32 CSR, placing rows in a cell index, cells without counts.

Used by registration (data in memory) and by backed data (read from disk in chunks)
alike, so both apply the same checks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DataError, DataWarning


def as_counts(X, where: str) -> sp.csr_matrix:
    """Checked float32 CSR counts without stored zeros (a private copy only where the
    input is not canonical or stores zeros; the user's matrix is never changed).

    A stored zero is no count: a cell whose stored entries are all zeros has no counts,
    and a feature stored as zero in a cell is not counted as measured there."""
    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    _check_values(np.asarray(X.data), where)
    zeros = bool((np.asarray(X.data) == 0).any())
    X = sp.csr_matrix(X, dtype=np.float32, copy=zeros or not X.has_canonical_format)
    if not X.has_canonical_format:  # a private copy: duplicate entries summed, sorted
        X.sum_duplicates()
    if zeros:  # a private copy
        X.eliminate_zeros()
    return X


def _check_values(v: np.ndarray, where: str) -> None:
    hint = " scamort needs raw counts: pass the layer that holds them."
    if not np.isfinite(v).all():
        raise DataError(f"{where} contains NaN or inf values.{hint}")
    if (v < 0).any():
        raise DataError(f"{where} contains negative values (min {v.min():g}).{hint}")
    if np.issubdtype(v.dtype, np.floating) and (v != np.round(v)).any():
        bad = v[v != np.round(v)][0]
        raise DataError(
            f"{where} contains non-integer values (e.g. {bad:g}); it looks "
            f"normalized or log-transformed.{hint}"
        )


def place_rows(X: sp.csr_matrix, pos: np.ndarray, n: int) -> sp.csr_matrix:
    """Rows of X at positions ``pos`` (increasing) of an (n, F) CSR; other rows empty."""
    lengths = np.zeros(n, dtype=np.int64)
    lengths[pos] = np.diff(X.indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((X.data, X.indices, indptr), shape=(n, X.shape[1]))


def align_rows(X: sp.csr_matrix, pos: np.ndarray, n: int) -> sp.csr_matrix:
    """Rows of X placed at rows ``pos`` (any order) of an (n, F) CSR; other rows empty."""
    order = np.argsort(pos, kind="stable")
    return place_rows(X[order], pos[order], n)


def check_cells_have_counts(
    obs_names: pd.Index, x: dict[str, sp.csr_matrix], mask: np.ndarray
) -> np.ndarray:
    """Raise if a cell has no count in every modality it has (nothing to embed it from).
    Returns ``mask`` with a modality of a cell that has no count in it but has counts in
    another set to not measured (said in one :class:`DataWarning` per modality): an empty
    profile (a failed library) says nothing of the cell, and as data it would draw every
    such cell to one point of that modality's expert."""
    has_counts = np.stack([np.diff(X.indptr) > 0 for X in x.values()], axis=1)
    empty = ~(has_counts & mask).any(1)
    if empty.any():
        raise DataError(
            f"{int(empty.sum())} cells have zero counts in every modality they have (e.g. "
            f"{obs_names[empty][:3].tolist()}). Remove them, e.g. scanpy.pp.filter_cells("
            "adata, min_counts=1) on each modality."
        )
    hollow = mask & ~has_counts
    for j, m in enumerate(x):
        if hollow[:, j].any():
            cells = obs_names[hollow[:, j]]
            warnings.warn(
                f"{len(cells)} cells are in modality {m!r} with no counts there (e.g. "
                f"{cells[:3].tolist()}); they are treated as not measured in {m!r} (embedded "
                "from their other modalities, their profile imputed).",
                DataWarning,
                stacklevel=4,
            )
    return mask & has_counts
