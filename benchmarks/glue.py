"""GLUE (scglue, Cao & Gao 2022) as a peer of the quality benchmark.

Its documented preprocessing and defaults (the scglue RNA-ATAC tutorial): RNA counts
kept in a layer, normalized, log-transformed, scaled, PCA (100 components); ATAC LSI
(100 components); negative binomial likelihoods on both; the library as batch;
``fit_SCGLUE`` with its own training schedule. GLUE treats the two modalities as
unpaired data sets: its RNA data set is every cell with RNA, its ATAC data set every cell
with ATAC. The guidance graph comes from SNARE-seq's own gene-region links
(``atac.var["linked_gene"]``): an edge per region and its gene in both directions,
weight 1, sign +1, and a self-loop on every node, so no genome annotation or bedtools is
needed. A paired cell's joint embedding is the mean of its RNA and ATAC embeddings.
GLUE's cross-modal imputation is not scored.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np


def guidance_graph(rna, atac):
    """The gene-region graph from ``atac.var["linked_gene"]`` (see the module docstring)."""
    import networkx as nx

    graph = nx.MultiDiGraph()
    genes = set(rna.var_names)
    for region, gene in atac.var["linked_gene"].astype(str).items():
        if gene in genes:
            graph.add_edge(gene, region, weight=1.0, sign=1, type="fwd")
            graph.add_edge(region, gene, weight=1.0, sign=1, type="rev")
    for node in [*rna.var_names, *atac.var_names]:
        graph.add_edge(node, node, weight=1.0, sign=1, type="loop")
    return graph


def fit_glue(split, epochs: int, seed: int, **kw):
    """GLUE on the split; returns what quality.py scores (``epochs`` is not used: GLUE
    picks its own schedule, as its users run it)."""
    import scanpy as sc
    import scglue

    scglue.config.PRINT_LOADER_WARNING = False
    rna = split["rna"].copy()
    atac = split["atac"].copy()
    for a in (rna, atac):
        a.obs = split.obs.loc[a.obs_names, ["batch"]].copy()
    t = time.perf_counter()
    rna.layers["counts"] = rna.X.copy()
    rna.var["highly_variable"] = True  # SNARE-seq's curated 1,677 genes are all kept
    sc.pp.normalize_total(rna)
    sc.pp.log1p(rna)
    sc.pp.scale(rna)
    sc.tl.pca(rna, n_comps=100, svd_solver="auto", random_state=seed)
    scglue.data.lsi(atac, n_components=100, n_iter=15, random_state=seed)
    graph = guidance_graph(rna, atac)
    atac.var["highly_variable"] = [graph.has_node(r) for r in atac.var_names]
    scglue.models.configure_dataset(
        rna, "NB", use_highly_variable=True, use_layer="counts", use_rep="X_pca", use_batch="batch"
    )
    scglue.models.configure_dataset(
        atac, "NB", use_highly_variable=True, use_rep="X_lsi", use_batch="batch"
    )
    with tempfile.TemporaryDirectory() as scratch:
        glue = scglue.models.fit_SCGLUE(
            {"rna": rna, "atac": atac},
            graph,
            init_kws={"random_seed": seed},
            fit_kws={"directory": scratch},
        )
    train_s = time.perf_counter() - t
    z = {"rna": glue.encode_data("rna", rna), "atac": glue.encode_data("atac", atac)}
    d = z["rna"].shape[1]
    latents = {}
    for m, a in (("rna", rna), ("atac", atac)):
        full = np.full((split.n_obs, d), np.nan, dtype=np.float32)
        full[split.obs_names.get_indexer(a.obs_names)] = z[m]
        latents[m] = full
    joint = np.nanmean(np.stack([latents["rna"], latents["atac"]]), axis=0)
    return {"train_s": train_s, "joint": joint, "rna": latents["rna"], "atac": latents["atac"]}
