"""A simulated multiome experiment with known cell types, batches and pairing."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import h5py
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
    frac_informative: float = 1.0,
    separate_experiments: bool = False,
    keep_hidden: bool = False,
) -> md.MuData:
    """Simulate RNA + ATAC counts from a shared latent space.

    Each cell type is a centre in an ``n_latent``-dimensional space; a cell's latent
    state z is its type's centre plus noise. Both modalities are read from the same z:
    - RNA: NB(l * softmax(W z + b + batch shift), theta=5) with l log-normal around
      ``rna_library`` (about 5-10 % non-zero entries at the defaults);
    - ATAC: open with probability sigmoid(V z + c + batch shift) times a cell factor,
      peaks mostly at 1 with a few 2s (about 1-4 % non-zero).
    The batch shifts are per-feature offsets of scale ``batch_effect``.
    ``frac_informative < 1`` leaves only that fraction of the genes and of the peaks
    driven by the latent state; the others have the same mean in every cell type
    (differ only by batch), so the truth of differential analyses is sparse. Cells are split
    at random into paired, RNA-only (``frac_rna_only``) and ATAC-only (the rest). A cell
    with no count in a modality it has receives one at a random feature (such a cell
    could not be embedded from that modality); a feature may have no counts at all, as
    in real data.

    ``separate_experiments=True`` simulates separate experiments instead of one: batch b
    is a paired experiment when b % 3 == 0, an RNA-only one when b % 3 == 1 and an
    ATAC-only one when b % 3 == 2 (``frac_paired`` and ``frac_rna_only`` do not apply;
    needs ``n_batches >= 3``), so modality status is confounded with batch; each batch
    has its own cell-type proportions (Dirichlet(2)) and each experiment its own batch
    effect size (the batch shifts of its batches scaled by a log-normal factor, sd 0.5).

    ``keep_hidden=True`` keeps both profiles of every cell (the counts its status would
    hide, e.g. to score imputation against them); ``obs["modality"]`` still holds the
    status, and the same cells, counts and truth are drawn as with ``False``.

    Returns
    -------
    MuData with modalities ``rna`` and ``atac`` holding only the cells measured in each
    (int32 CSR counts), and ground truth in ``.obs``: ``cell_type``, ``batch``,
    ``modality`` (paired / rna_only / atac_only); the true latent is in
    ``.obsm["X_true"]``; each modality's ``varm["true_profile"]`` holds, per feature and
    cell type, the true mean expression / accessibility (:func:`true_profiles`), from
    which the features that differ between two types can be read.
    """
    _, blocks, loadings = _blocks(
        n_cells,
        n_genes,
        n_peaks,
        n_cell_types,
        n_batches,
        frac_paired,
        frac_rna_only,
        n_latent,
        batch_effect,
        rna_library,
        seed,
        frac_informative,
        separate_experiments,
    )
    parts = list(blocks)
    cell_type, batch, status, z = (np.concatenate([p[k] for p in parts]) for k in range(4))
    rna = sp.vstack([p[4] for p in parts], format="csr")
    atac = sp.vstack([p[5] for p in parts], format="csr")
    obs = _obs(cell_type, batch, status)
    names = obs.index
    has_rna, has_atac = status != "atac_only", status != "rna_only"
    if keep_hidden:
        has_rna = has_atac = np.ones(len(status), dtype=bool)
    mods = {
        "rna": _anndata(rna[has_rna], obs[has_rna], _names("gene", n_genes)),
        "atac": _anndata(atac[has_atac], obs[has_atac], _names("peak", n_peaks)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
    mdata.obs = obs.loc[mdata.obs_names].copy()
    mdata.obsm["X_true"] = z[names.get_indexer(mdata.obs_names)]
    for m, profile in zip(("rna", "atac"), true_profiles(z, cell_type, *loadings)):
        mdata.mod[m].varm["true_profile"] = profile.set_axis(mdata.mod[m].var_names)
    return mdata


def true_profiles(z, cell_type, genes, peaks) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per feature and cell type, the simulator's true mean normalized expression
    (softmax of the gene logits) and accessibility (sigmoid of the peak logits, without
    cell factor), averaged over the type's cells, without batch shifts: what differential
    expression and accessibility between types should recover."""
    types = np.unique(cell_type)
    out = []
    for (weights, base, _), link in ((genes, "softmax"), (peaks, "sigmoid")):
        sums = np.zeros((len(types), weights.shape[1]))
        block = _block_size(weights.shape[1])
        for start in range(0, len(z), block):
            logits = z[start : start + block] @ weights + base
            if link == "softmax":
                v = np.exp(logits - logits.max(1, keepdims=True))
                v /= v.sum(1, keepdims=True)
            else:
                v = 1.0 / (1.0 + np.exp(-logits))
            t = np.searchsorted(types, cell_type[start : start + block])
            np.add.at(sums, t, v)
        means = sums / np.bincount(np.searchsorted(types, cell_type))[:, None]
        out.append(pd.DataFrame(means.T, columns=[f"type_{t}" for t in types]))
    return out[0], out[1]


def _blocks(
    n_cells,
    n_genes,
    n_peaks,
    n_cell_types,
    n_batches,
    frac_paired,
    frac_rna_only,
    n_latent,
    batch_effect,
    rna_library,
    seed,
    frac_informative=1.0,
    separate_experiments=False,
):
    """The shared generator, an iterator over blocks of cells (type, batch, status,
    latent, RNA CSR, ATAC CSR) and the (gene, peak) loadings, each block from its own
    child generator, so that memory stays at one block's dense arrays whatever n_cells
    is."""
    if not 0 < frac_informative <= 1:
        raise ValueError(f"frac_informative must be in (0, 1], got {frac_informative}.")
    if frac_paired < 0 or frac_rna_only < 0 or frac_paired + frac_rna_only > 1:
        raise ValueError(
            "need frac_paired, frac_rna_only >= 0 and frac_paired + "
            "frac_rna_only <= 1 (the rest is ATAC-only)."
        )
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, size=(n_cell_types, n_latent))
    genes = _loadings(rng, n_latent, n_genes, 0.5, 0.0, 1.0, n_batches, batch_effect)
    peaks = _loadings(rng, n_latent, n_peaks, 0.7, -5.0, 0.8, n_batches, batch_effect)
    if frac_informative < 1:  # drawn after the loadings: the default stream is unchanged
        for weights, _, _ in (genes, peaks):
            silent = rng.random(weights.shape[1]) >= frac_informative
            weights[:, silent] = 0.0
    block = _block_size(max(n_genes, n_peaks))
    design = None
    if separate_experiments:  # drawn last: the default stream is unchanged
        if n_batches < 3:
            raise ValueError(
                "separate_experiments needs n_batches >= 3 (a paired, an RNA-only and an "
                f"ATAC-only experiment), got n_batches={n_batches}."
            )
        design = rng.dirichlet(np.full(n_cell_types, 2.0), size=n_batches)
        effect = np.exp(rng.normal(0.0, 0.5, size=3))[np.arange(n_batches) % 3]
        for _, _, shift in (genes, peaks):
            shift *= effect[:, None]
    children = np.random.SeedSequence(seed).spawn(-(-n_cells // block))
    loadings = (genes, peaks)
    blocks = (
        _cells(
            np.random.default_rng(child),
            min(block, n_cells - start),
            centres,
            genes,
            peaks,
            n_batches,
            rna_library,
            (frac_paired, frac_rna_only),
            design,
        )
        for start, child in zip(range(0, n_cells, block), children)
    )
    return rng, blocks, loadings


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(n)]


def _obs(cell_type, batch, status) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t}" for t in cell_type]),
            "batch": pd.Categorical([f"batch_{b}" for b in batch]),
            "modality": pd.Categorical(status, categories=["paired", "rna_only", "atac_only"]),
        },
        index=pd.Index(_names("cell", len(status))),
    )


_BLOCK = 4096
# Dense entries per block (cells x features): 4,096 cells up to 25,000 features, fewer
# cells per block beyond, so that 250k peaks simulate in a few GB.
_BLOCK_ENTRIES = 4096 * 25_000


def _block_size(n_features: int) -> int:
    return max(1, min(_BLOCK, _BLOCK_ENTRIES // max(n_features, 1)))


def _loadings(rng, n_latent, n_features, scale, offset, spread, n_batches, batch_effect):
    """(weights (D, F), per-feature offset (F,), per-batch shift (B, F))."""
    weights = rng.normal(0.0, scale, size=(n_latent, n_features))
    base = rng.normal(offset, spread, size=n_features)
    shift = rng.normal(0.0, batch_effect, size=(n_batches, n_features))
    return weights, base, shift


_STATUS = np.array(["paired", "rna_only", "atac_only"])


def _cells(rng, n, centres, genes, peaks, n_batches, rna_library, fracs, proportions=None):
    """One block of n cells: types, batches, status, latent, RNA and ATAC (CSR int32).
    ``proportions`` (batches x types): separate experiments, status set by the batch."""
    if proportions is None:
        cell_type = rng.integers(centres.shape[0], size=n)
        batch = rng.integers(n_batches, size=n)
    else:
        batch = rng.integers(n_batches, size=n)
        cum = proportions.cumsum(1)[batch]
        cell_type = np.minimum((rng.random((n, 1)) > cum).sum(1), centres.shape[0] - 1)
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

    if proportions is None:
        status = rng.choice(_STATUS, size=n, p=[*fracs, 1 - sum(fracs)])
    else:
        status = _STATUS[batch % 3]
    # a cell with no count in a modality it has gets one, at a random feature
    for counts, has in ((rna, status != "atac_only"), (atac, status != "rna_only")):
        empty = np.flatnonzero(has & (counts.sum(1) == 0))
        counts[empty, rng.integers(counts.shape[1], size=len(empty))] = 1
    return cell_type, batch, status, z, sp.csr_matrix(rna), sp.csr_matrix(atac)


def _anndata(counts: sp.csr_matrix, obs: pd.DataFrame, var_names) -> ad.AnnData:
    counts = sp.csr_matrix(counts, dtype=np.int32)
    return ad.AnnData(counts, obs=obs.copy(), var=pd.DataFrame(index=var_names))


def write_simulated_multiome(
    path: str | os.PathLike,
    n_cells: int = 100_000,
    n_genes: int = 2000,
    n_peaks: int = 25_000,
    n_cell_types: int = 10,
    n_batches: int = 2,
    frac_paired: float = 1 / 3,
    frac_rna_only: float = 1 / 3,
    n_latent: int = 8,
    batch_effect: float = 0.5,
    rna_library: float = 60.0,
    seed: int = 0,
    frac_informative: float = 1.0,
) -> Path:
    """:func:`simulate_multiome` written to an ``.h5mu`` file block by block.

    The count matrices are appended to the file one block of cells at a time, so
    memory stays at one block whatever ``n_cells`` is (only the per-cell table is held).
    The file holds the same data as ``simulate_multiome`` with the same arguments; read it
    with ``mudata.read_h5mu(path, backed=True)`` to fit it from disk. The file appears
    (renamed into place) only when complete.
    """
    from .._io import atomic_path

    args = (n_cells, n_genes, n_peaks, n_cell_types, n_batches, frac_paired, frac_rna_only)
    args = (*args, n_latent, batch_effect, rna_library, seed, frac_informative)
    path = Path(path)
    n_features = {"rna": n_genes, "atac": n_peaks}
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        store = h5py.File(Path(scratch) / "counts.h5", "w")
        kept = _append_counts(store, args)
        cell_type, batch, status, z = (np.concatenate(kept[k]) for k in kept)
        obs = _obs(cell_type, batch, status)
        has = {"rna": status != "atac_only", "atac": status != "rna_only"}
        # The MuData's tables with empty count matrices of the right shapes, written by
        # mudata; then the counts are copied in from the scratch store.
        mods = {
            m: ad.AnnData(
                sp.csr_matrix((int(has[m].sum()), f), dtype=np.int32),
                obs=obs[has[m]].copy(),
                var=pd.DataFrame(index=_names("gene" if m == "rna" else "peak", f)),
            )
            for m, f in n_features.items()
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            mdata = md.MuData(mods)
        mdata.obs = obs.loc[mdata.obs_names].copy()
        mdata.obsm["X_true"] = z[obs.index.get_indexer(mdata.obs_names)]
        with atomic_path(path) as tmp:
            mdata.write_h5mu(tmp)
            with h5py.File(tmp, "r+") as f:
                for m in n_features:
                    del f[f"mod/{m}/X"]
                    store.copy(store[m], f[f"mod/{m}"], name="X")
        store.close()
    return path


def _append_counts(store, args):
    """Draw the blocks and append each modality's counts to ``store``; returns the
    per-cell draws."""
    from anndata.io import sparse_dataset, write_elem

    _, blocks, _ = _blocks(*args)
    kept = {"cell_type": [], "batch": [], "status": [], "z": []}
    for cell_type, batch, status, z, rna, atac in blocks:
        for key, v in zip(kept, (cell_type, batch, status, z.astype(np.float32))):
            kept[key].append(v)
        for m, counts, has in (
            ("rna", rna, status != "atac_only"),
            ("atac", atac, status != "rna_only"),
        ):
            counts = counts[has]
            if m in store:
                sparse_dataset(store[m]).append(counts)
            else:
                write_elem(store, m, counts)
    return kept
