"""``scamort demo``: SNARE-seq split into thirds, fitted, clustered, scored and plotted."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets, metrics, pl
from .gaps import plot_gap_curve, summarize_gaps
from .model import SCAMORT

# What each figure of metrics.md measures, which direction is better, and MULTIVI's
# figure on the same split of the same data: scvi-tools 1.4 MULTIVI at 150 epochs, its
# best set-up there, mean of seeds 0 and 1 (benchmarks/quality.py, design
# snare_thirds; docs/benchmarks.md). None: not measured for MULTIVI.
EXPLAINED = {
    "ARI (cell_type)": (
        "higher", 0.378,
        "agreement of Leiden clusters with the 23 published cell types (best over resolutions)",
    ),
    "NMI (cell_type)": ("higher", 0.484, "the same agreement as mutual information"),
    "ARI (cell_type_coarse)": ("higher", None, "ARI against the 15 coarse groups"),
    "NMI (cell_type_coarse)": ("higher", None, "NMI against the 15 coarse groups"),
    "FOSCTTM (paired cells)": (
        "lower", 0.0135,
        "fraction of cells closer than the true match, RNA view against ATAC view of the "
        "same paired cell (0: every pair found)",
    ),
    "label transfer RNA-only -> ATAC-only": (
        "higher", 0.432,
        "accuracy of cell types passed from RNA-only to ATAC-only cells by 15 nearest "
        "neighbours: whether unpaired cells of a type meet",
    ),
    "training time (s)": ("lower", 2353.0, "training on this machine (MULTIVI: on 2 CPU cores)"),
    "total time (s)": ("lower", None, "the whole demo"),
    "epochs": ("", None, "epochs trained, the final pass of the encoders included"),
}  # fmt: skip


def integration_metrics(
    model: SCAMORT, mdata, label_key: str = "cell_type", refine_steps: int = 0
) -> dict:
    """ARI / NMI (best over a Leiden sweep), FOSCTTM and RNA-only -> ATAC-only transfer,
    on amortized latents or on latents refined ``refine_steps`` steps."""
    status = mdata.obs["modality"].to_numpy()
    labels = mdata.obs[label_key].to_numpy()

    def latent(modality="joint"):
        return model.get_latent_representation(mdata, modality=modality, refine_steps=refine_steps)

    z = latent()
    out = {}
    keys = [k for k in dict.fromkeys([label_key, "cell_type_coarse"]) if k in mdata.obs]
    sweeps = metrics.leiden_sweeps(z, {k: mdata.obs[k].to_numpy() for k in keys})
    for key, sweep in sweeps.items():
        out[f"ARI ({key})"], out[f"NMI ({key})"] = sweep["ari"], sweep["nmi"]
    # The cross-modal measures need both modalities, and paired (or RNA-only and
    # ATAC-only) cells; a model of one modality, or data without them, skips them.
    kinds = dict(zip(model.spec.kinds, model.spec.modalities))
    if {"rna", "atac"} <= set(kinds):
        paired = status == "paired"
        if paired.sum() > 1:
            out["FOSCTTM (paired cells)"] = metrics.foscttm(
                latent(kinds["rna"])[paired], latent(kinds["atac"])[paired]
            )
        ref, query = status == "rna_only", status == "atac_only"
        if ref.any() and query.any():
            out["label transfer RNA-only -> ATAC-only"] = metrics.label_transfer_accuracy(
                z[ref], labels[ref], z[query], labels[query]
            )
    return out


def run_demo(
    out: str = "scamort_demo",
    epochs: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    n_cells: int | None = None,
    gap_cells: int = 60,
) -> pd.DataFrame:
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    full = datasets.snareseq_mouse_cortex()
    if n_cells is not None and n_cells < full.n_obs:
        pick = np.sort(np.random.default_rng(seed).choice(full.n_obs, n_cells, replace=False))
        full = full[pick].copy()
    mdata = datasets.unpair(full, 1 / 3, 1 / 3, seed=seed)
    counts = mdata.obs["modality"].value_counts().to_dict()
    print(
        f"SNARE-seq mouse cortex: {mdata.n_obs} cells {counts}, "
        f"{mdata['rna'].n_vars} genes, {mdata['atac'].n_vars} regions"
    )
    SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = SCAMORT(mdata, seed=seed)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs or 20, accelerator=accelerator, seed=seed)
    train_s = time.perf_counter() - t0

    with _timed("clusters (Leiden at 8 resolutions) and scores"):
        scores = integration_metrics(model, mdata)
    with _timed("UMAP and plots"):
        mdata.obsm["X_scamort"] = model.get_latent_representation()
        _plot_umap(mdata, out / "umap.png", seed)
        fig = pl.history(model, title="Training: mean ELBO per cell (SNARE-seq, thirds split)")
        fig.savefig(out / "history.png", dpi=120)

    gap_table = gap_report(model, mdata, out, per_status=gap_cells, seed=seed)
    print(_markdown_frame(gap_table))

    scores["training time (s)"] = train_s
    scores["total time (s)"] = time.perf_counter() - start
    scores["epochs"] = model.history.n_epochs
    table = explained(scores)
    table.to_csv(out / "metrics.csv", index=False)
    (out / "metrics.md").write_text(_metrics_markdown(table))
    print(_metrics_markdown(table))
    print(
        f"wrote {out}/: metrics.md, metrics.csv, umap.png, history.png, gaps.csv, "
        "gaps_by_modality.md, gaps_by_cell_type.md, gap_vs_steps.png"
    )
    return table


@contextlib.contextmanager
def _timed(step: str):
    """Say a step of the demo as it starts and how long it took (the long ones have
    their own progress bars)."""
    print(f"{step} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"{step}: {time.perf_counter() - start:.0f} s", flush=True)


def explained(scores: dict) -> pd.DataFrame:
    """The demo's figures with what each measures, the better direction and MULTIVI's
    figure on the same split (:data:`EXPLAINED`)."""
    rows = []
    for metric, value in scores.items():
        better, multivi, what = EXPLAINED.get(metric, ("", None, ""))
        rows.append({"metric": metric, "value": value, "better": better,
                     "MULTIVI": multivi, "measures": what})  # fmt: skip
    return pd.DataFrame(rows)


def _plot_umap(mdata, path: Path, seed: int) -> None:
    """UMAP of the joint embedding by cell type and by modality status, the cells drawn
    in random order (no status painted over the others)."""
    import scanpy as sc

    order = np.random.default_rng(seed).permutation(mdata.n_obs)
    adata = sc.AnnData(obs=mdata.obs[["cell_type", "modality", "batch"]].iloc[order].copy())
    adata.obsm["X_scamort"] = np.asarray(mdata.obsm["X_scamort"])[order]
    sc.pp.neighbors(adata, use_rep="X_scamort", random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    fig = sc.pl.umap(
        adata,
        color=["cell_type", "modality"],
        title=[
            "scamort joint embedding: cell type",
            "modality measured (paired / RNA-only / ATAC-only)",
        ],
        return_fig=True,
        show=False,
        wspace=0.45,
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")


def gap_report(
    model: SCAMORT, mdata, out: Path, per_status: int = 100, seed: int = 0
) -> pd.DataFrame:
    """Gaps on a sample of cells of each modality status: CSV, summary tables, plot."""
    status = mdata.obs["modality"].astype(str)
    rng = np.random.default_rng(seed)
    pick = np.sort(
        np.concatenate(
            [
                rng.choice(
                    np.flatnonzero(status == s),
                    min(per_status, int((status == s).sum())),
                    replace=False,
                )
                for s in status.unique()
            ]
        )
    )
    t0 = time.perf_counter()
    gaps = model.get_gaps(indices=pick, converge_steps=300, iw_samples=128, seed=seed)
    print(f"gap diagnostics on {len(pick)} cells: {time.perf_counter() - t0:.0f} s")
    gaps["modality"] = status.iloc[pick].to_numpy()
    gaps["cell_type"] = mdata.obs["cell_type"].astype(str).iloc[pick].to_numpy()
    gaps.to_csv(out / "gaps.csv")
    by_status = summarize_gaps(gaps, gaps["modality"], min_cells=10)
    by_type = summarize_gaps(gaps, gaps["cell_type"], min_cells=10)
    note = (
        "Mean per cell, in nats: `amortization_gap` is the ELBO the encoders leave to "
        "per-cell refinement (to the best posterior met in 300 steps), "
        "`approximation_gap` what a Gaussian posterior cannot reach (IWAE bound, 128 "
        "draws), `closed_after_K` the share of the amortization gap K refinement steps "
        "close (at most 1). Groups of fewer than 10 sampled cells are left out.\n\n"
    )
    (out / "gaps_by_modality.md").write_text(note + _markdown_frame(by_status))
    (out / "gaps_by_cell_type.md").write_text(note + _markdown_frame(by_type))
    plot_gap_curve(
        gaps, gaps["modality"], out / "gap_vs_steps.png",
        title="Amortization gap left after K refinement steps, by modality status",
    )  # fmt: skip
    return by_status


def _markdown_frame(df: pd.DataFrame) -> str:
    head = "| | " + " | ".join(df.columns) + " |"
    rule = "|---" * (len(df.columns) + 1) + "|"
    rows = [
        "| " + str(i) + " | " + " | ".join(f"{v:.3g}" for v in r) + " |"
        for i, r in zip(df.index, df.to_numpy())
    ]
    return "\n".join([head, rule, *rows]) + "\n"


def _metrics_markdown(table: pd.DataFrame) -> str:
    def fig(v):
        return "-" if v is None or pd.isna(v) else f"{v:.4g}"

    rows = [
        f"| {r.metric} | {fig(r.value)} | {r.better or '-'} | {fig(r.MULTIVI)} | {r.measures} |"
        for r in table.itertuples()
    ]
    head = "| metric | scamort | better | MULTIVI | what it measures |"
    source = (
        "\nMULTIVI: scvi-tools 1.4 at 150 epochs (its best set-up on this split), mean "
        "of two seeds, from benchmarks/quality.py (docs/benchmarks.md); scamort's time is "
        "this run's.\n"
    )
    return "\n".join([head, "|---|---|---|---|---|", *rows]) + "\n" + source
