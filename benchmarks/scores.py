"""The quality measures of the benchmarks, on embeddings (scib-metrics for silhouette,
iLISI and graph connectivity; the rest scamort's own or here)."""

from __future__ import annotations

import numpy as np


def _neighbors(x: np.ndarray, k: int = 90):
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    d, i = NearestNeighbors(n_neighbors=min(k, len(x) - 1)).fit(x).kneighbors(x)
    return NeighborsResults(indices=i, distances=d)


def cluster_scores(z: np.ndarray, obs, label_key: str, seed: int) -> dict:
    import scib_metrics

    from scamort import metrics

    labels = obs[label_key].astype(str).to_numpy()
    sweep = metrics.leiden_sweep(z, labels, seed=seed)
    nn = _neighbors(z)
    out = {
        "ARI": sweep["ari"],
        "NMI": sweep["nmi"],
        "silhouette": float(scib_metrics.silhouette_label(z, labels)),
        "graph connectivity": float(scib_metrics.graph_connectivity(nn, labels)),
        "iLISI batch": float(scib_metrics.ilisi_knn(nn, obs["batch"].astype(str).to_numpy())),
    }
    if obs["modality"].nunique() > 1:
        out["iLISI modality"] = float(
            scib_metrics.ilisi_knn(nn, obs["modality"].astype(str).to_numpy())
        )
    return out


def model_views(model):
    """``views(m)`` of a fitted scamort model: its embedding of every cell by modality
    ``m`` ("rna", "atac"; "joint": all it has), as :func:`pairing_scores` reads it."""
    return lambda m: model.get_latent_representation(modality=m)


def pairing_scores(joint: np.ndarray, views, obs, label_key: str) -> dict:
    """FOSCTTM of the paired cells' RNA-alone and ATAC-alone embeddings (``views(m)``:
    the latent of modality ``m``, read only when there are paired cells) and label
    transfer from the RNA-only cells to the ATAC-only ones in the joint latent ``joint``."""
    from scamort import metrics

    status = obs["modality"].to_numpy()
    out = {}
    paired = status == "paired"
    if paired.any():
        out["FOSCTTM"] = metrics.foscttm(views("rna")[paired], views("atac")[paired])
    ref, query = status == "rna_only", status == "atac_only"
    if ref.any() and query.any():
        labels = obs[label_key].astype(str).to_numpy()
        out["label transfer"] = metrics.label_transfer_accuracy(
            joint[ref], labels[ref], joint[query], labels[query]
        )
    return out


def mixable_blocks(obs):
    """The cell masks of the experiments (blocks, ``obs["dataset"]``) that hold more than
    one batch: where batch mixing can be measured apart from modality status."""
    blocks = obs["dataset"].astype(str)
    batch = obs["batch"].astype(str).to_numpy()
    for block in blocks.unique():
        keep = (blocks == block).to_numpy()
        if len(np.unique(batch[keep])) > 1:
            yield keep


def block_mixing(z: np.ndarray, obs) -> dict:
    """iLISI of the library within each experiment (block), averaged: mixing across
    blocks is partly confounded with modality and is not read as batch correction."""
    import scib_metrics

    batch = obs["batch"].astype(str).to_numpy()
    values = [
        scib_metrics.ilisi_knn(_neighbors(z[keep]), batch[keep]) for keep in mixable_blocks(obs)
    ]
    return {"iLISI batch within blocks": float(np.mean(values))} if values else {}


def view_mixing(latents: dict, status: np.ndarray) -> dict:
    """iLISI between the paired cells and each single-modality group, every cell embedded
    by that one modality (a paired cell by its view of it): both groups are read with
    the same information, so what keeps them apart is where they come from (on separate
    experiments: the experiment), not how many modalities a cell has."""
    import scib_metrics

    out = {}
    for m in ("rna", "atac"):
        keep = (status == "paired") | (status == f"{m}_only")
        groups = status[keep]
        if (groups == "paired").any() and (groups == f"{m}_only").any():
            nn = _neighbors(latents[m][keep])
            out[f"iLISI paired vs {m}_only, {m} views"] = float(scib_metrics.ilisi_knn(nn, groups))
    return out


def true_latent(full, split) -> np.ndarray | None:
    """A simulation's true latent state of the split's cells (None for real data)."""
    if "X_true" not in full.obsm:
        return None
    return full.obsm["X_true"][full.obs_names.get_indexer(split.obs_names)]


def truth_scores(z: np.ndarray, truth: np.ndarray, obs, label_key: str) -> dict:
    """What a simulation's embedding keeps of the true latent state, beyond the types."""
    from scamort import metrics

    kept = metrics.latent_recovery(z, truth, obs[label_key].astype(str).to_numpy())
    return {"within-type state (R²)": kept["r2_within"], "true 15-NN kept": kept["knn_kept"]}


def _featurewise_pearson(pred: np.ndarray, obs: np.ndarray) -> float:
    pred = pred - pred.mean(0)
    obs = obs - obs.mean(0)
    den = np.sqrt((pred**2).sum(0) * (obs**2).sum(0))
    keep = den > 0
    return float(((pred * obs).sum(0)[keep] / den[keep]).mean())


def _hidden(full, split, modality: str, cells) -> np.ndarray:
    """The hidden profiles of ``cells`` over the features the models saw, dense."""
    x = full[modality][cells, split[modality].var_names].X
    return np.asarray(x.todense() if hasattr(x, "todense") else x)


def imputation_scores(out: dict, full, split) -> dict:
    status = split.obs["modality"].to_numpy()
    scores = {}
    if "rna_from_atac" in out:
        x = _hidden(full, split, "rna", split.obs_names[status == "atac_only"]).astype(np.float64)
        obs_ = np.log1p(1e4 * x / np.maximum(x.sum(1, keepdims=True), 1))
        pred = out["rna_from_atac"]
        pred = np.log1p(1e4 * pred / pred.sum(1, keepdims=True))
        scores["imputation RNA (r)"] = _featurewise_pearson(pred, obs_)
    if "atac_from_rna" in out:
        x = _hidden(full, split, "atac", split.obs_names[status == "rna_only"])
        obs_ = (x > 0).astype(np.float32)
        scores["imputation ATAC (r)"] = _featurewise_pearson(
            out["atac_from_rna"].astype(np.float32), obs_
        )
    return scores


def shuffled_within(labels: np.ndarray, groups: np.ndarray, rng) -> np.ndarray:
    """``labels`` permuted at random within each group."""
    out = labels.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = labels[rng.permutation(idx)]
    return out


def ilisi_against_ceiling(nn, labels: np.ndarray, perms: list[np.ndarray]) -> tuple:
    """iLISI of ``labels`` on the neighbours ``nn``, and its mean over ``perms`` (the same
    labels shuffled within cell types): the ceiling that the embedding's geometry and
    the groups' cell-type compositions allow."""
    import scib_metrics

    ceiling = np.mean([scib_metrics.ilisi_knn(nn, p) for p in perms])
    return float(scib_metrics.ilisi_knn(nn, labels)), float(ceiling)
