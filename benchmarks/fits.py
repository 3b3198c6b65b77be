"""Fits of scamort and of scvi-tools' MULTIVI, scVI and PeakVI on a design's split, each
returning its embeddings, imputations and timings in one dict (GLUE: glue.py)."""

from __future__ import annotations

import time
import warnings

import numpy as np


def fit_scamort(split, epochs: int, seed: int, **kw):
    """scamort on ``split``; ``kw``: ``model`` (SCAMORT's options), ``modalities`` (each
    modality's options, ``{"atac": {"peak_sampling": 2048}}``), ``train``, ``latent``."""
    import scamort

    declared = {m: scamort.Modality(m, **kw.get("modalities", {}).get(m, {})) for m in split.mod}
    scamort.SCAMORT.setup_mudata(split, declared, batch_key="batch")
    model = scamort.SCAMORT(split, seed=seed, **kw.get("model", {}))
    train = {"max_epochs": epochs, **kw.get("train", {})}  # "max_epochs": null: its default
    t = time.perf_counter()
    model.train(seed=seed, progress_bar=False, **train)
    out = _outputs(
        split,
        time.perf_counter() - t,
        lambda modality="joint": model.get_latent_representation(
            modality=modality, **kw.get("latent", {})
        ),
        ("rna", "atac"),
        lambda cells: model.get_normalized_expression(indices=cells),
        lambda cells: model.get_accessibility_estimates(indices=cells),
    )
    out["epochs_run"] = model.history.n_epochs
    return out


def _outputs(split, train_s, latent, modalities, impute_rna, impute_atac) -> dict:
    """What is scored of a joint model: the joint and single-modality latents and, for
    the cells whose other modality was hidden, its prediction (same calls for both
    models; ``modalities`` are the model's names for the RNA-alone and ATAC-alone ones)."""
    status = split.obs["modality"].to_numpy()
    t = time.perf_counter()
    out = {"train_s": train_s, "joint": latent(), "embed_s": time.perf_counter() - t}
    out["rna"], out["atac"] = (latent(m) for m in modalities)
    for key, hidden, impute in (
        ("rna_from_atac", "atac_only", impute_rna),
        ("atac_from_rna", "rna_only", impute_atac),
    ):
        if (status == hidden).any():
            out[key] = np.asarray(impute(np.flatnonzero(status == hidden)))
    return out


def _padded_mudata(split):
    """MULTIVI's input: both modalities over every cell, hidden profiles as zero rows
    (MULTIVI tells a missing modality by an all-zero row)."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    mods = {}
    for name in ("rna", "atac"):
        mod = split[name]
        pos = split.obs_names.get_indexer(mod.obs_names)
        x = sp.csr_matrix(mod.X)
        rows = sp.csr_matrix(
            (np.ones(len(pos)), (pos, np.arange(len(pos)))), shape=(split.n_obs, len(pos))
        )
        mods[name] = ad.AnnData(
            X=(rows @ x).tocsr().astype(np.float32),
            obs=split.obs[[]].copy(),
            var=mod.var[[]].copy(),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = md.MuData(mods)
    out.obs = split.obs.copy()
    return out


def multivi_model(split, setup: dict | None = None):
    """MULTIVI on the padded MuData. ``setup``: ``batch`` (obs column used as MULTIVI's
    batch: ``"batch"``, the library, by default; its tutorial uses ``"modality"``) and
    ``modality_covariate`` (modality status as a categorical covariate; default True
    where cells differ in status)."""
    import scvi

    setup = setup or {}
    mdata = _padded_mudata(split)
    several = split.obs["modality"].nunique() > 1
    covs = ["modality"] if several and setup.get("modality_covariate", True) else None
    scvi.model.MULTIVI.setup_mudata(
        mdata,
        batch_key=setup.get("batch", "batch"),
        categorical_covariate_keys=covs,
        modalities={"rna_layer": "rna", "atac_layer": "atac"},
    )
    return scvi.model.MULTIVI(mdata)


def fit_multivi(split, epochs: int, seed: int, **kw):
    import scvi

    scvi.settings.seed = seed
    model = multivi_model(split, kw.get("multivi"))
    t = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False, **kw.get("train", {}))
    return _outputs(
        split,
        time.perf_counter() - t,
        lambda modality="joint": model.get_latent_representation(modality=modality),
        ("expression", "accessibility"),
        lambda cells: model.get_normalized_expression(indices=cells),
        lambda cells: model.get_normalized_accessibility(indices=cells),
    )


def fit_single(split, epochs: int, seed: int, which: str, **kw):
    """scVI on the cells with RNA, or PeakVI on the cells with ATAC."""
    import scvi

    scvi.settings.seed = seed
    adata = split["rna" if which == "scvi" else "atac"].copy()
    adata.obs = split.obs.loc[adata.obs_names].copy()
    cls = scvi.model.SCVI if which == "scvi" else scvi.model.PEAKVI
    cls.setup_anndata(adata, batch_key="batch")
    model = cls(adata)
    t = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    return {
        "train_s": time.perf_counter() - t,
        "cells": split.obs_names.get_indexer(adata.obs_names),
        "joint": model.get_latent_representation(),
    }
