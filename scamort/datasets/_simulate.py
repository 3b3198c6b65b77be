"""A simulated multiome experiment with known cell types, batches and pairing."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp


def simulate_multiome(
    n_cells: int = 3000,
    n_genes: int = 500,
    n_peaks: int = 3000,
    n_cell_types: int = 6,
    n_batches: int = 2,
    frac_paired: float = 1 / 3,
    frac_rna_only: float = 1 / 3,
    n_latent: int = 8,
    batch_effect: float = 0.5,
    rna_library: float = 60.0,
    seed: int = 0,
) -> md.MuData:
    """Simulate RNA + ATAC counts from a shared latent space.

    Each cell type is a centre in an ``n_latent``-dimensional space; a cell's latent
    state z is its type's centre plus noise. Both modalities are read from the same z:
    - RNA: NB(l * softmax(W z + b + batch shift), theta=5) with l log-normal around
      ``rna_library`` (about 5-10 % non-zero entries at the defaults);
    - ATAC: open with probability sigmoid(V z + c + batch shift) times a cell factor,
      peaks mostly at 1 with a few 2s (about 1-4 % non-zero).
    The batch shifts are per-feature offsets of scale ``batch_effect``. Cells are split
    at random into paired, RNA-only (``frac_rna_only``) and ATAC-only (the rest). Any
    all-zero cell row or feature column receives a single count, so the result passes
    validation.

    Returns
    -------
    MuData with modalities ``rna`` and ``atac`` holding only the cells measured in each
    (int32 CSR counts), and ground truth in ``.obs``: ``cell_type``, ``batch``,
    ``modality`` (paired / rna_only / atac_only); the true latent is in
    ``.obsm["X_true"]``.
    """
    if frac_paired < 0 or frac_rna_only < 0 or frac_paired + frac_rna_only > 1:
        raise ValueError(
            "need frac_paired, frac_rna_only >= 0 and frac_paired + "
            "frac_rna_only <= 1 (the rest is ATAC-only)."
        )
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, size=(n_cell_types, n_latent))
    genes = _loadings(rng, n_latent, n_genes, 0.5, 0.0, 1.0, n_batches, batch_effect)
    peaks = _loadings(rng, n_latent, n_peaks, 0.7, -5.0, 0.8, n_batches, batch_effect)
    # Cells are drawn in blocks of _BLOCK with their own child generators, so memory stays
    # at a block's dense arrays whatever n_cells is.
    parts = [
        _cells(
            np.random.default_rng(child),
            min(_BLOCK, n_cells - start),
            centres,
            genes,
            peaks,
            n_batches,
            rna_library,
            (frac_paired, frac_rna_only),
        )
        for start, child in zip(
            range(0, n_cells, _BLOCK), np.random.SeedSequence(seed).spawn(-(-n_cells // _BLOCK))
        )
    ]
    cell_type, batch, status, z = (np.concatenate([p[k] for p in parts]) for k in range(4))
    rna = sp.vstack([p[4] for p in parts], format="csr")
    atac = sp.vstack([p[5] for p in parts], format="csr")
    names = pd.Index([f"cell_{i}" for i in range(n_cells)])
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t}" for t in cell_type]),
            "batch": pd.Categorical([f"batch_{b}" for b in batch]),
            "modality": pd.Categorical(status, categories=["paired", "rna_only", "atac_only"]),
        },
        index=names,
    )
    has_rna, has_atac = status != "atac_only", status != "rna_only"
    mods = {
        "rna": _anndata(rna[has_rna], obs[has_rna], [f"gene_{g}" for g in range(n_genes)], rng),
        "atac": _anndata(atac[has_atac], obs[has_atac], [f"peak_{p}" for p in range(n_peaks)], rng),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
    mdata.obs = obs.loc[mdata.obs_names].copy()
    mdata.obsm["X_true"] = z[names.get_indexer(mdata.obs_names)]
    return mdata


_BLOCK = 4096


def _loadings(rng, n_latent, n_features, scale, offset, spread, n_batches, batch_effect):
    """(weights (D, F), per-feature offset (F,), per-batch shift (B, F))."""
    weights = rng.normal(0.0, scale, size=(n_latent, n_features))
    base = rng.normal(offset, spread, size=n_features)
    shift = rng.normal(0.0, batch_effect, size=(n_batches, n_features))
    return weights, base, shift


def _cells(rng, n, centres, genes, peaks, n_batches, rna_library, fracs):
    """One block of n cells: types, batches, status, latent, RNA and ATAC (CSR int32)."""
    cell_type = rng.integers(centres.shape[0], size=n)
    batch = rng.integers(n_batches, size=n)
    z = centres[cell_type] + rng.normal(0.0, 0.5, size=(n, centres.shape[1]))

    weights, base, shift = genes
    logits = z @ weights + base + shift[batch]
    rho = np.exp(logits - logits.max(1, keepdims=True))
    rho /= rho.sum(1, keepdims=True)
    library = rng.lognormal(np.log(rna_library), 0.4, size=(n, 1))
    rna = rng.poisson(rng.gamma(5.0, library * rho / 5.0)).astype(np.int32)

    weights, base, shift = peaks
    logits = z @ weights + base + shift[batch]
    p = rng.beta(5.0, 2.0, size=(n, 1)) / (1.0 + np.exp(-logits))
    atac = ((rng.random(p.shape) < p) * (1 + (rng.random(p.shape) < 0.05))).astype(np.int32)

    status = rng.choice(["paired", "rna_only", "atac_only"], size=n, p=[*fracs, 1 - sum(fracs)])
    return cell_type, batch, status, z, sp.csr_matrix(rna), sp.csr_matrix(atac)


def _anndata(counts: sp.csr_matrix, obs: pd.DataFrame, var_names, rng) -> ad.AnnData:
    counts = counts.tolil() if _has_empty(counts) else counts
    for row in np.flatnonzero(np.asarray(counts.sum(1)).ravel() == 0):
        counts[row, rng.integers(counts.shape[1])] = 1
    for col in np.flatnonzero(np.asarray(counts.sum(0)).ravel() == 0):
        counts[rng.integers(counts.shape[0]), col] = 1
    counts = sp.csr_matrix(counts, dtype=np.int32)
    return ad.AnnData(counts, obs=obs.copy(), var=pd.DataFrame(index=var_names))


def _has_empty(counts: sp.csr_matrix) -> bool:
    return bool(
        (np.diff(counts.indptr) == 0).any()
        or (np.bincount(counts.indices, minlength=counts.shape[1]) == 0).any()
    )
