"""scamort against scvi-tools MULTIVI, GLUE (and scVI / PeakVI) on the same data.

    python benchmarks/quality.py --datasets snare_thirds snare_paired sim10k \
        --seeds 0 1 2 --epochs 20

Each (dataset, method, seed) fit runs in a fresh process, so its train time and peak
memory (the process's maximum RSS: data, model and scoring) are its own. Rows are
appended to ``--out`` (JSON lines) as they finish and finished jobs are skipped when the
command is run again, so an interrupted run picks up where it stopped. ``--report``
turns the rows into the markdown tables between the markers of ``docs/design_notes.md``.

Data sets (every model sees exactly the same cells, features and counts):
- ``snare_thirds``: SNARE-seq mouse cortex, cells split at random into thirds: paired,
  RNA-only (ATAC hidden), ATAC-only (RNA hidden), as in the MULTIVI tutorial.
- ``snare_paired``: the same cells, all paired.
- ``snare_libraries``: separate experiments: the 12 libraries dealt by a seeded shuffle
  into a paired experiment, an RNA-only one and an ATAC-only one (four libraries each),
  put together by ``scamort.combine`` (benchmarks/designs.py). Also scored: library
  mixing within each experiment (``iLISI batch within blocks``).
- ``sim_experiments``: the simulator's separate experiments (6,000 cells, 2,000 genes x
  10,000 peaks, 10 types, 6 batches: batches 0 and 3 a paired experiment, 1 and 4
  RNA-only, 2 and 5 ATAC-only; each batch its own type proportions, each experiment its
  own batch-effect size), combined like ``snare_libraries``.
- ``sim10k``: ``scamort.datasets.simulate_multiome`` at 10,000 cells (2,000 genes x
  10,000 peaks, 10 types, 2 batches), split into thirds the same way.

Peers: MULTIVI (setups through ``--options '{"multivi": {"batch": "modality",
"modality_covariate": false}, "train": {"early_stopping": false, "train_size": 1.0}}'``),
GLUE (benchmarks/glue.py: its own preprocessing and schedule; ``--epochs`` does not apply).

Measures (scib-metrics for silhouette, iLISI and graph connectivity; the rest scamort):
Leiden ARI / NMI best over a resolution sweep; cell-type silhouette (scaled to [0, 1]);
iLISI over the batch key and over modality status, graph connectivity; FOSCTTM of paired
cells embedded from RNA alone and from ATAC alone; label transfer RNA-only -> ATAC-only
(15-NN); imputation: per-feature Pearson correlation, across the cells whose modality was
hidden, between the prediction from the other modality and the hidden counts
(log-normalised RNA; binarised ATAC vs predicted accessibility).
scVI and PeakVI see only the cells that have their modality; they are scored on those
cells, next to scamort's joint latent restricted to the same cells. ``truth`` (sim designs
only) scores the simulator's true latent state the same way: what the cluster and
mixing measures give for a perfect embedding.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from designs import DESIGNS as DATASETS
from designs import load
from fits import fit_multivi, fit_scamort, fit_single
from harness import (
    append_row,
    bench_process,
    in_fresh_process,
    latent_path,
    peak_rss_gb,
    read_rows,
    replace_block,
)
from scores import (
    block_mixing,
    cluster_scores,
    imputation_scores,
    pairing_scores,
    true_latent,
    truth_scores,
    view_mixing,
)

METHODS = ("scamort", "multivi", "glue", "scvi", "peakvi", "truth")


# ------------------------------------------------------------------------ methods
def run_job(
    dataset: str, method: str, seed: int, epochs: int, options: dict, latents: Path | None = None
) -> dict:
    """One fit and its scores, in its own process. A joint model's embeddings (``joint``
    and, where it has them, ``rna`` and ``atac``) are also saved as ``latents`` (.npz)."""
    bench_process()
    full, split, label_key = load(dataset, seed)
    kinds = ("model", "modalities", "train", "latent", "multivi")
    fit_options = {k: v for k, v in options.items() if k in kinds}
    truth = true_latent(full, split)
    if method == "truth":
        row = {"dataset": dataset, "method": method, "seed": seed, "epochs": 0}
        row.update(cluster_scores(truth, split.obs, label_key, seed))
        row.update(truth_scores(truth, truth, split.obs, label_key))
        if "dataset" in split.obs:  # what perfect integration scores on mixing
            row.update(block_mixing(truth, split.obs))
            status = split.obs["modality"].astype(str).to_numpy()
            row.update(view_mixing({"rna": truth, "atac": truth}, status))
        return row
    if method == "scamort":
        out = fit_scamort(split, epochs, seed, **fit_options)
    elif method == "multivi":
        out = fit_multivi(split, epochs, seed, **fit_options)
    elif method == "glue":
        from glue import fit_glue

        out = fit_glue(split, epochs, seed)
    else:
        out = fit_single(split, epochs, seed, method)
    if latents is not None and method not in ("scvi", "peakvi"):
        latents.parent.mkdir(parents=True, exist_ok=True)
        np.savez(latents, **{k: out[k] for k in ("joint", "rna", "atac") if k in out})
    row = {"dataset": dataset, "method": method, "seed": seed, "epochs": epochs}
    row["options"] = options
    row["train time (s)"] = out["train_s"]
    if "embed_s" in out:  # the joint embedding of every cell, after training
        row["embed time (s)"] = out["embed_s"]
    if "epochs_run" in out:  # early stopping may end training before max_epochs
        row["epochs trained"] = out["epochs_run"]
    row["peak RSS (GB)"] = peak_rss_gb()
    obs = split.obs
    if method in ("scvi", "peakvi"):
        row.update(cluster_scores(out["joint"], obs.iloc[out["cells"]], label_key, seed))
        return row
    row.update(cluster_scores(out["joint"], obs, label_key, seed))
    if truth is not None:
        row.update(truth_scores(out["joint"], truth, obs, label_key))
    status = obs["modality"].to_numpy()
    row.update(pairing_scores(out["joint"], out.__getitem__, obs, label_key))
    row.update(imputation_scores(out, full, split))
    if "dataset" in obs:  # separate experiments: library mixing within each of them
        row.update(block_mixing(out["joint"], obs))
        row.update(view_mixing(out, status.astype(str)))
    # the joint latent on the cells each single-modality baseline sees
    for name, keep in (("rna cells", status != "atac_only"), ("atac cells", status != "rna_only")):
        if options.get("score_subsets", True) and not keep.all():
            sub = cluster_scores(out["joint"][keep], obs[keep], label_key, seed)
            row.update({f"{k} [{name}]": v for k, v in sub.items()})
    return row


# ------------------------------------------------------------------------- report
BIO = ("ARI", "NMI", "silhouette")
BATCH = ("iLISI batch", "graph connectivity")
OVERALL = ("bio conservation", "batch correction", "overall (0.6 bio + 0.4 batch)")
LOWER = {"FOSCTTM", "train time (s)", "peak RSS (GB)"}
MAIN = [
    *OVERALL,
    "ARI",
    "NMI",
    "silhouette",
    "graph connectivity",
    "iLISI batch",
    "iLISI modality",
    "iLISI batch within blocks",
    "FOSCTTM",
    "label transfer",
    "imputation RNA (r)",
    "imputation ATAC (r)",
    "within-type state (R²)",
    "true 15-NN kept",
    "train time (s)",
    "peak RSS (GB)",
]


def _fmt(values, sd: bool = True) -> str:
    """Mean ± sd of ``values`` (the mean alone with ``sd=False``); "–" when there are none."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or np.isnan(v).all():
        return "–"
    digits = 1 if np.nanmean(np.abs(v)) >= 10 else 3
    if not sd:
        return f"{np.nanmean(v):.{digits}f}"
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0:.{digits}f}"


def add_overall(df):
    """scIB's weighting over the measures computed here, per fit: bio conservation
    (mean of ARI, NMI, cell-type silhouette), batch correction (mean of batch iLISI and
    graph connectivity), and 0.6 x bio + 0.4 x batch. Unscaled (scib-metrics'
    ``min_max_scale=False``), so a row's score does not depend on the other methods."""
    if not set(BIO + BATCH) <= set(df.columns):
        return df
    bio, batch = (
        df[list(BIO)].mean(axis=1, skipna=False),
        df[list(BATCH)].mean(axis=1, skipna=False),
    )
    return df.assign(**dict(zip(OVERALL, (bio, batch, 0.6 * bio + 0.4 * batch))))


def report(rows: list[dict]) -> str:
    """One table per dataset: the joint models (a variant's ``--tag`` in brackets), then
    scVI / PeakVI next to the joint latents restricted to their cells."""
    import pandas as pd

    df = add_overall(pd.DataFrame(rows))
    df["tag"] = df.get("tag", pd.Series("default", index=df.index)).fillna("default")
    df["label"] = [m if t == "default" else f"{m} [{t}]" for m, t in zip(df["method"], df["tag"])]
    df["is_head"] = df["tag"].map(_is_default)
    for (dataset, method), (name, tags) in CURRENT.items():
        here = (df["dataset"] == dataset) & (df["method"] == method)
        earlier = here & (df["tag"] == "default")
        df.loc[earlier, "label"] = f"{method} [earlier default]"
        df.loc[earlier, "is_head"] = False
        df.loc[here & df["tag"].isin(tags), ["label", "is_head"]] = [name, True]
    # one label per epoch budget: a tag run at several budgets is several rows
    budgets = df.groupby(["dataset", "label"])["epochs"].transform("nunique")
    df["label"] = [
        f"{x} ({e} epochs)" if n > 1 else x for x, e, n in zip(df["label"], df["epochs"], budgets)
    ]
    parts = []
    for dataset in [d for d in DATASETS if d in set(df["dataset"])]:
        d = df[df["dataset"] == dataset]
        order = d.assign(_o=d["method"].map(METHODS.index)).sort_values(["_o", "epochs"])
        labels = list(dict.fromkeys(order["label"]))
        method_of = dict(zip(d["label"], d["method"]))
        joint = [x for x in labels if method_of[x] in ("scamort", "multivi", "glue")]
        # the models at their defaults (any epoch budget) side by side; every variant
        # (another setting, or an earlier default) one row each below, next to the default
        head = [x for x in joint if d[d["label"] == x]["is_head"].iloc[0]]
        variants = [x for x in joint if x not in head]
        desc = ", ".join(
            f"{x}: {_budget(d[d['label'] == x].iloc[0])}, seeds "
            f"{sorted(set(d[d['label'] == x]['seed']))}"
            for x in labels
            if x not in variants
        )
        parts.append(f"### {dataset}\n\n{desc}\n")
        measures = [
            m for m in MAIN if m in d.columns and d[d["label"].isin(joint)][m].notna().any()
        ]
        if head:  # a design measured only in variants has no table of defaults
            parts.append(_table_frames({x: d[d["label"] == x] for x in head}, measures))
        if variants:
            parts.append(
                "\nVariants (means over their seeds; first row: the default at the same epochs):\n"
            )
            parts.append(_variant_table(d, variants, measures))
        keys = ["ARI", "NMI", "silhouette", "graph connectivity", "iLISI batch"]
        if "truth" in labels:
            parts.append(
                "\nThe simulator's true latent state scored the same way (no model; what "
                "each measure gives for a perfect embedding), next to the default fits:\n"
            )
            shown = ["truth", *(x for x in head if method_of[x] in ("scamort", "multivi"))]
            t = {x: d[d["label"] == x] for x in shown}
            truth_keys = [*keys, "iLISI modality", "within-type state (R²)", "true 15-NN kept"]
            parts.append(_table_frames(t, [k for k in truth_keys if k in d.columns], bold=False))
        for single, cells in (("scvi", "rna cells"), ("peakvi", "atac cells")):
            if single not in labels:
                continue
            t = {single: d[d["label"] == single]}
            for x in joint:
                s = d[d["label"] == x]
                have = [k for k in keys if f"{k} [{cells}]" in s.columns]
                s = s.rename(columns={f"{k} [{cells}]": k for k in have})[have].dropna()
                if len(s):
                    t[f"{x} joint"] = s
            parts.append(f"\nOn the {cells} only ({single} sees nothing else):\n")
            parts.append(_table_frames(t, keys))
        parts.append("")
    return "\n".join(parts)


# Designs whose plain "default" rows are an earlier default: the rows of the current
# defaults (one tag per deal, recorded as the defaults changed) and of MULTIVI's best
# set-up stand for the method in the table of defaults, under the name given here.
_SCAMORT_NOW = (
    "defaults (rerun with the one-modality mixing measures)",
    "defaults, amortized embedding (refine_steps 0)",
)
_MULTIVI_BEST = ("library batch, no modality covariate, every cell trained on",)
CURRENT = {
    (design, method): (name, tags)
    for design in ("snare_libraries", "sim_experiments")
    for method, name, tags in (
        ("scamort", "scamort, defaults", _SCAMORT_NOW),
        ("multivi", "multivi, best set-up", _MULTIVI_BEST),
    )
}


def _budget(row) -> str:
    """A row's training budget in words. Epochs 0: GLUE trains to its own schedule, the
    truth is not trained, and a model run with ``--epochs 0`` trains to its default."""
    if row["method"] == "glue":
        return "its own schedule"
    if row["method"] == "truth":
        return "no training"
    if row["epochs"] == 0:  # quality.py's --epochs 0: the model's own default budget
        return "its default epochs"
    return f"{row['epochs']} epochs"


def _is_default(tag) -> bool:
    """A row of a model at its defaults: untagged, or tagged only with its epoch budget."""
    return tag == "default" or bool(re.fullmatch(r"(default epochs \(\d+\)|\d+ epochs)", str(tag)))


SHORT = {
    "overall (0.6 bio + 0.4 batch)": "overall",
    "bio conservation": "bio",
    "batch correction": "batch",
    "graph connectivity": "graph conn.",
    "imputation RNA (r)": "imp. RNA",
    "imputation ATAC (r)": "imp. ATAC",
    "within-type state (R²)": "within R²",
    "true 15-NN kept": "true NN",
    "train time (s)": "time (s)",
    "peak RSS (GB)": "RSS (GB)",
}


def _variant_table(d, variants: list[str], measures) -> str:
    """One row per variant (mean over its seeds), after the default of its method at the
    same epochs; columns are the measures."""
    lines = [
        "| variant | epochs | seeds | " + " | ".join(SHORT.get(m, m) for m in measures) + " |",
        "|---" * (len(measures) + 3) + "|",
    ]
    seen = set()
    for x in variants:
        f = d[d["label"] == x]
        method, epochs = f["method"].iloc[0], f["epochs"].iloc[0]
        ref = d[(d["method"] == method) & (d["epochs"] == epochs) & d["is_head"]]
        named = [(f"{ref['label'].iloc[0]} (the default)", ref)] if len(ref) else []
        rows = [*named, (x, f)]
        for name, g in rows:
            if (name, epochs) in seen:
                continue
            seen.add((name, epochs))
            vals = [_fmt(g[m].dropna() if m in g.columns else [], sd=False) for m in measures]
            seeds = ", ".join(str(v) for v in sorted(set(g["seed"])))
            lines.append(f"| {name} | {epochs} | {seeds} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _table_frames(frames: dict, measures, bold: bool = True) -> str:
    names = list(frames)
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in measures:
        cells = []
        means = {}
        for n in names:
            f = frames[n]
            v = f[key].dropna().to_numpy() if key in f.columns else []
            cells.append(_fmt(v))
            means[n] = np.mean(v) if len(v) else np.nan
        scored = {n: v for n, v in means.items() if not np.isnan(v)}
        if bold and len(scored) > 1:  # the best of the columns that have the measure
            best = (min if key in LOWER else max)(scored, key=scored.get)
            cells = [f"**{c}**" if n == best else c for n, c in zip(names, cells)]
        arrow = "↓" if key in LOWER else "↑"
        lines.append(f"| {key} {arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows, doc: Path) -> None:
    """Replace the block between the quality markers of ``doc`` with the tables."""
    replace_block(doc, "quality", report(rows))


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default="docs/quality.jsonl")
    p.add_argument("--doc", default="docs/design_notes.md")
    p.add_argument("--tag", default="default", help="label of a variant (see --options)")
    p.add_argument(
        "--options",
        default="{}",
        help='JSON options: {"model": {...}, "train": {...}} keyword arguments of the '
        'method; "score_subsets": false skips scoring the joint latents on the RNA / ATAC '
        "cells alone (only needed next to scVI / PeakVI)",
    )
    p.add_argument(
        "--latents",
        type=Path,
        default=Path(__file__).resolve().parent / ".cache" / "latents",
        help="folder where every joint model's embeddings are saved (.npz)",
    )
    p.add_argument("--report", action="store_true", help="only rewrite the markdown tables")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = read_rows(out)
    if not args.report:
        options = json.loads(args.options)
        done = {(r["dataset"], r["method"], r["seed"], r["epochs"], r.get("tag")) for r in rows}
        for dataset in args.datasets:
            for seed in args.seeds:
                for method in args.methods:
                    if method not in ("scamort", "multivi", "glue") and args.tag != "default":
                        continue
                    if method == "truth" and not dataset.startswith("sim"):
                        continue
                    epochs = 0 if method in ("truth", "glue") else args.epochs
                    if (dataset, method, seed, epochs, args.tag) in done:
                        continue
                    saved = latent_path(args.latents, dataset, method, seed, epochs, args.tag)
                    row = in_fresh_process(run_job, dataset, method, seed, epochs, options, saved)
                    row["tag"] = args.tag
                    append_row(out, row)
                    rows.append(row)
    write_report(rows, Path(args.doc))
    print(report(rows))


if __name__ == "__main__":
    main()
