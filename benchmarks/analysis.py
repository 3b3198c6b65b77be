"""After the embedding: differential analysis, query mapping and novelty, measured.

    python benchmarks/analysis.py --parts de_sim markers query novelty

- ``de_sim``: the simulator with 30 % of the genes and peaks informative (3,000 cells,
  thirds split, 2 batches); scamort and MULTIVI at their default epochs; for type_0 vs
  each other type, AUROC of ``proba_de`` / ``prob_da`` against the truth (|true log2
  fold change| > 1), and precision / recall of the calls at 5 % FDR.
- ``markers``: SNARE-seq (thirds split), scamort one-vs-rest on the coarse types: the
  rank of known marker genes of the cortical types in their type's list.
- ``query``: SNARE-seq, reference on 8 libraries (paired, encode_covariates=True), the
  other 4 as an RNA-only and as an ATAC-only query (new batch categories); label
  transfer reference -> query (15-NN) and query training time, against a de novo fit
  of reference and query together and against MULTIVI's ``load_query_data`` (its
  reference at ``--multivi-epochs``, library as batch; the query zero-padded in the
  modality it lacks, as MULTIVI reads a missing modality; 50 query epochs like scamort's).
- ``novelty``: SNARE-seq with one coarse type (``--held-out``) left out of the
  reference; AUROC of ``get_novelty`` for that type's cells among the query's.

Rows go to ``--out`` (JSON lines) and are printed.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MARKERS = {
    "L2/3": ["Cux2", "Lamp5", "Calb1"],
    "L4/5": ["Rorb", "Rspo1"],
    "L6": ["Foxp2", "Syt6", "Sema3e"],
    "Astro": ["Gja1", "Aqp4", "Slc1a3", "Gfap"],
    "Oligo": ["Mbp", "Plp1", "Mog", "Mobp"],
    "OPC": ["Pdgfra", "Cspg4"],
    "Pvalb": ["Pvalb"],
    "Sst": ["Sst"],
    "Npy": ["Npy"],
    "CGE": ["Vip", "Cnr1"],
    "MGC": ["Cx3cr1", "C1qa", "Csf1r"],
    "Endo": ["Cldn5", "Flt1"],
    "Peri": ["Pdgfrb", "Vtn"],
    "Clau": ["Nr4a2", "Synpr"],
}


def _quiet():
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)


def _calls(table, truth, prob, call):
    from sklearn.metrics import roc_auc_score

    truth = truth.reindex(table.index)
    c = table[call].astype(bool)
    return {
        "auroc": float(roc_auc_score(truth, table[prob])),
        "precision": float(truth[c].mean()) if c.any() else float("nan"),
        "recall": float(c[truth].mean()),
        "calls": int(c.sum()),
        "base rate": float(truth.mean()),
    }


def de_sim(seed: int = 0) -> list[dict]:
    from fits import multivi_model

    import scamort

    mdata = scamort.datasets.simulate_multiome(
        n_cells=3000, n_genes=1000, n_peaks=5000, seed=seed, frac_informative=0.3
    )
    rows = []
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = scamort.SCAMORT(mdata, seed=seed)
    t = time.perf_counter()
    model.train(progress_bar=False, seed=seed)
    fits = {"scamort": (model, time.perf_counter() - t)}
    import scvi

    scvi.settings.seed = seed
    mv = multivi_model(mdata)
    t = time.perf_counter()
    mv.train(max_epochs=500, enable_progress_bar=False)  # its default, early stopping on
    fits["multivi"] = (mv, time.perf_counter() - t)
    rna_truth = mdata["rna"].varm["true_profile"]
    atac_truth = mdata["atac"].varm["true_profile"]
    types = sorted(mdata.obs["cell_type"].unique())
    for method, (m, train_s) in fits.items():
        obs = mdata.obs if method == "scamort" else m.adata.obs
        for other in types[1:]:
            lfc = np.log2(rna_truth["type_0"] / rna_truth[other])
            lfa = np.log2(atac_truth["type_0"] / atac_truth[other])
            if method == "scamort":
                de = m.differential_expression(groupby="cell_type", group1="type_0", group2=other)
                da = m.differential_accessibility(
                    groupby="cell_type", group1="type_0", group2=other
                )
            else:
                i1 = (obs["cell_type"] == "type_0").to_numpy()
                i2 = (obs["cell_type"] == other).to_numpy()
                de = m.differential_expression(idx1=i1, idx2=i2)
                da = m.differential_accessibility(idx1=i1, idx2=i2)
                de.index = de.index.astype(str)
                da.index = da.index.astype(str)
            for what, table, truth, prob, call in (
                ("DE", de, lfc.abs() > 1, "proba_de", "is_de_fdr_0.05"),
                ("DA", da, lfa.abs() > 1, "prob_da", "is_da_fdr"),
            ):
                truth.index = truth.index.astype(str)
                table = table[~table.index.duplicated()]
                row = {
                    "part": "de_sim",
                    "method": method,
                    "what": what,
                    "pair": f"type_0 vs {other}",
                }
                row.update(_calls(table, truth, prob, call))
                row["train time (s)"] = train_s
                rows.append(row)
    return rows


def _snare_thirds(seed=0):
    import scamort

    full = scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True)
    return scamort.datasets.unpair(full, seed=seed)


def markers(seed: int = 0) -> list[dict]:
    import scamort

    mdata = _snare_thirds(seed)
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = scamort.SCAMORT(mdata, seed=seed)
    model.train(progress_bar=False, seed=seed)
    de = model.differential_expression(groupby="cell_type_coarse", delta=0.5)
    observed = _observed_markers(mdata, "cell_type_coarse")
    rows = []
    for group, genes in MARKERS.items():
        table = de[de["group1"] == group].sort_values("proba_de", ascending=False)
        table = table[table["lfc_mean"] > 0]
        for gene in genes:
            if gene not in de.index:
                continue
            ranked = list(table.index)
            rows.append(
                {
                    "part": "markers",
                    "type": group,
                    "gene": gene,
                    "rank among up-genes": ranked.index(gene) + 1 if gene in ranked else None,
                    "lfc_mean": float(de[(de["group1"] == group)].loc[gene, "lfc_mean"]),
                    "called (5% FDR)": bool(
                        de[(de["group1"] == group)].loc[gene, "is_de_fdr_0.05"]
                    ),
                    **observed(group, gene),
                }
            )
    return rows


def _observed_markers(mdata, groupby: str):
    """What the measured counts say of a gene in a group against the rest: the group's
    cells (with RNA), the log2 ratio of the mean normalized expression (counts per 10k,
    0.01 added) and the fraction of cells detecting it, in and out of the group."""
    import scipy.sparse as sp

    rna = mdata["rna"]
    x = sp.csr_matrix(rna.X, dtype=np.float64)
    norm = sp.diags(1e4 / np.maximum(np.asarray(x.sum(1)).ravel(), 1)) @ x
    groups = mdata.obs.loc[rna.obs_names, groupby].astype(str).to_numpy()

    def observed(group: str, gene: str) -> dict:
        j = rna.var_names.get_loc(gene)
        col = np.asarray(norm[:, j].todense()).ravel()
        seen = np.asarray(x[:, j].todense()).ravel() > 0
        inside = groups == group
        return {
            "cells with RNA": int(inside.sum()),
            "observed log2 ratio": float(
                np.log2((col[inside].mean() + 1e-2) / (col[~inside].mean() + 1e-2))
            ),
            "detected in group": float(seen[inside].mean()),
            "detected in rest": float(seen[~inside].mean()),
        }

    return observed


def _library_split(seed=0, held_out_type=None):
    """SNARE-seq: 8 reference libraries (paired), 4 query libraries; optionally one coarse
    type removed from the reference."""
    import mudata as md

    import scamort

    full = scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True)
    libs = np.random.default_rng(seed).permutation(sorted(full.obs["batch"].unique()))
    in_ref = full.obs["batch"].isin(libs[:8]).to_numpy()
    keep = in_ref.copy()
    if held_out_type is not None:
        keep &= (full.obs["cell_type_coarse"] != held_out_type).to_numpy()

    def part(mask):
        cells = full.obs_names[mask]
        out = md.MuData({m: full[m][cells].copy() for m in ("rna", "atac")})
        out.obs = full.obs.loc[cells].copy()
        return out

    return part(keep), part(~in_ref)


def _zero_padded(part, modality: str | None, like):
    """MULTIVI's input for ``part``: both modalities over every cell of ``part``, the one
    it lacks (``modality`` is the one it has; None: both) as zero rows."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    mods = {}
    for m in ("rna", "atac"):
        if modality in (None, m):
            x = sp.csr_matrix(part[m][part.obs_names].X, dtype=np.float32)
        else:
            x = sp.csr_matrix((part.n_obs, like[m].n_vars), dtype=np.float32)
        mods[m] = ad.AnnData(X=x, obs=part.obs[[]].copy(), var=like[m].var[[]].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = md.MuData(mods)
    out.obs = part.obs.copy()
    return out


def multivi_query(ref, q, seed: int, epochs: int) -> list[dict]:
    import scvi

    from scamort.metrics import label_transfer_accuracy

    scvi.settings.seed = seed
    ref_md = _zero_padded(ref, None, ref)
    scvi.model.MULTIVI.setup_mudata(
        ref_md, batch_key="batch", modalities={"rna_layer": "rna", "atac_layer": "atac"}
    )
    mv = scvi.model.MULTIVI(ref_md)
    t = time.perf_counter()
    mv.train(max_epochs=epochs, enable_progress_bar=False)
    ref_s = time.perf_counter() - t
    zr = mv.get_latent_representation()
    rows = []
    for m in ("rna", "atac"):
        row = {"part": "query", "method": "multivi", "query": f"{m}-only, 4 libraries"}
        try:
            q_md = _zero_padded(q, m, ref)
            qm = scvi.model.MULTIVI.load_query_data(q_md, mv)
            t = time.perf_counter()
            qm.train(max_epochs=50, enable_progress_bar=False, plan_kwargs={"weight_decay": 0.0})
            row["query training (s)"] = time.perf_counter() - t
            zq = qm.get_latent_representation()
            row["label transfer (query mapping)"] = label_transfer_accuracy(
                zr, ref.obs["cell_type"].to_numpy(), zq, q.obs["cell_type"].to_numpy()
            )
        except Exception as e:  # noqa: BLE001 - a peer that fails is a result
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        row["reference training (s)"] = ref_s
        row["reference epochs"] = epochs
        rows.append(row)
    return rows


def query(seed: int = 0, multivi_epochs: int = 50) -> list[dict]:
    import scamort
    from scamort.metrics import label_transfer_accuracy

    ref, q = _library_split(seed)
    scamort.SCAMORT.setup_mudata(ref, batch_key="batch")
    model = scamort.SCAMORT(ref, encode_covariates=True, seed=seed)
    t = time.perf_counter()
    model.train(progress_bar=False, seed=seed)
    ref_s = time.perf_counter() - t
    zr = model.get_latent_representation()
    labels_r = ref.obs["cell_type"].to_numpy()
    rows = []
    for m in ("rna", "atac"):
        a = q[m].copy()
        a.obs = q.obs.loc[a.obs_names].copy()
        qm = scamort.SCAMORT.load_query_data(a, model, modality=m)
        t = time.perf_counter()
        qm.train(max_epochs=50, progress_bar=False, seed=seed)
        q_s = time.perf_counter() - t
        zq = qm.get_latent_representation()
        acc = label_transfer_accuracy(zr, labels_r, zq, a.obs["cell_type"].to_numpy())
        # de novo: reference and this query fitted together
        both = scamort.combine({"ref": ref, "query": a}, modalities={"query": m})
        scamort.SCAMORT.setup_mudata(both, batch_key="batch")
        denovo = scamort.SCAMORT(both, seed=seed)
        t = time.perf_counter()
        denovo.train(progress_bar=False, seed=seed)
        d_s = time.perf_counter() - t
        z = denovo.get_latent_representation()
        is_ref = (both.obs["dataset"] == "ref").to_numpy()
        lab = both.obs["cell_type"].astype(str).to_numpy()
        acc_d = label_transfer_accuracy(z[is_ref], lab[is_ref], z[~is_ref], lab[~is_ref])
        rows.append(
            {
                "part": "query",
                "method": "scamort",
                "query": f"{m}-only, 4 libraries",
                "label transfer (query mapping)": acc,
                "query training (s)": q_s,
                "reference training (s)": ref_s,
                "label transfer (de novo)": acc_d,
                "de novo training (s)": d_s,
            }
        )
    if multivi_epochs:
        rows += multivi_query(ref, q, seed, multivi_epochs)
    return rows


def novelty(seed: int = 0, held_out: str = "Astro") -> list[dict]:
    from sklearn.metrics import roc_auc_score

    import scamort

    ref, q = _library_split(seed, held_out_type=held_out)
    scamort.SCAMORT.setup_mudata(ref, batch_key="batch")
    model = scamort.SCAMORT(ref, encode_covariates=True, seed=seed)
    model.train(progress_bar=False, seed=seed)
    rows = []
    for m in ("paired", "rna", "atac"):
        if m == "paired":
            data = q
        else:
            data = q[m].copy()
            data.obs = q.obs.loc[data.obs_names].copy()
        qm = scamort.SCAMORT.load_query_data(data, model, modality=None if m == "paired" else m)
        qm.train(max_epochs=50, progress_bar=False, seed=seed)
        scores = qm.get_novelty(refine_steps=20)
        novel = (q.obs.loc[scores.index, "cell_type_coarse"] == held_out).to_numpy()
        rows.append(
            {
                "part": "novelty",
                "held out": held_out,
                "query": m,
                "AUROC novelty": float(roc_auc_score(novel, scores["novelty"])),
                "AUROC refinement gain": float(roc_auc_score(novel, scores["refinement_gain"])),
                "held-out cells": int(novel.sum()),
                "query cells": len(novel),
            }
        )
    return rows


PARTS = {"de_sim": de_sim, "markers": markers, "query": query, "novelty": novelty}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", default="Astro")
    p.add_argument(
        "--multivi-epochs", type=int, default=50, help="MULTIVI's reference in 'query'; 0: none"
    )
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "analysis.jsonl")
    args = p.parse_args(argv)
    _quiet()
    import torch

    torch.set_num_threads(2)
    for part in args.parts:
        kw = {"held_out": args.held_out} if part == "novelty" else {}
        if part == "query":
            kw = {"multivi_epochs": args.multivi_epochs}
        for row in PARTS[part](args.seed, **kw):
            row["seed"] = args.seed
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
