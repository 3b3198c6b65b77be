"""What more epochs do to one fit: quality and fit along a single long training run.

    python benchmarks/studies/training_length.py --dataset snare_thirds --seed 0 \
        --checkpoints 10 20 29 50 75 100 150 --warmup 7.25

One model trains to each checkpoint epoch in turn, resuming from its own checkpoint
(a resumed run makes the same steps as one never stopped), with a fixed KL warm-up
(``--warmup`` epochs; the default schedule of a ``max_epochs=E`` fit is E / 4), so
the rows are points of one run. At each checkpoint: the training and held-out ELBO
(mean of the last epoch), the joint latent's Leiden ARI / NMI (best over the
resolution sweep), cell-type silhouette, library iLISI, FOSCTTM of the paired cells,
RNA-only -> ATAC-only label transfer, and the posterior's shape: the mean posterior
variance of z (from 8 draws around the mean), the spread of the posterior means, and
the number of active latent dimensions (variance of the means across cells > 0.01).
``--early-stopping`` instead trains once to the last checkpoint with early stopping
on the held-out ELBO and reports where it stopped. Rows go to ``--out`` (JSON lines);
``--report`` prints them as tables.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from harness import DOCS, append_row, in_fresh_process, read_rows
from scores import cluster_scores, model_views, pairing_scores


def posterior_shape(model) -> dict:
    mean = model.get_latent_representation(paired="product")
    draws = np.stack(
        [
            model.get_latent_representation(paired="product", give_mean=False, seed=s)
            for s in range(8)
        ]
    )
    spread = mean.var(0)
    return {
        "posterior variance": float(((draws - mean) ** 2).mean()),
        "variance of means": float(spread.mean()),
        "active dims": int((spread > 0.01).sum()),
    }


def scores(model, split, seed: int) -> dict:
    obs = split.obs
    z = model.get_latent_representation()
    out = cluster_scores(z, obs, "cell_type", seed)
    out.update(pairing_scores(z, model_views(model), obs, "cell_type"))
    out.update(posterior_shape(model))
    return out


def _history_row(model) -> dict:
    last = model.history.iloc[-1]
    return {
        "epoch": int(last["epoch"]) + 1,
        "elbo_train": float(last["elbo_train"]),
        "elbo_validation": float(last["elbo_validation"]),
    }


def run(dataset, seed: int, checkpoints: list[int], warmup: float, early: bool, opts, out: Path):
    """The rows of one run, each appended to ``out`` when measured."""
    import torch

    import scamort

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    _, split, _ = load(dataset, seed)
    scamort.SCAMORT.setup_mudata(split, batch_key="batch")
    model = scamort.SCAMORT(split, seed=seed, **opts.get("model", {}))
    base = {"dataset": dataset, "seed": seed, "warmup": warmup, "options": opts}
    common = dict(seed=seed, progress_bar=False, kl_warmup_epochs=warmup, **opts.get("train", {}))
    if early:
        t = time.perf_counter()
        model.train(max_epochs=checkpoints[-1], early_stopping=True, **common)
        row = {**base, "early stopping": True, "train s": time.perf_counter() - t}
        best = model.history["elbo_validation"].idxmax()
        row.update(_history_row(model), best_epoch=int(model.history["epoch"][best]) + 1)
        row.update(scores(model, split, seed))
        append_row(out, row)
        return
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for i, epochs in enumerate(checkpoints):
            model.train(
                max_epochs=epochs, early_stopping=False, checkpoint_dir=d, resume=i > 0, **common
            )
            row = {**base, "early stopping": False, "train s": time.perf_counter() - t}
            row.update(_history_row(model))
            row.update(scores(model, split, seed))
            append_row(out, row)
            t = time.perf_counter()


COLUMNS = (
    "epoch", "elbo_train", "elbo_validation", "ARI", "NMI", "silhouette", "iLISI batch",
    "iLISI modality", "FOSCTTM", "label transfer", "posterior variance", "active dims",
)  # fmt: skip


def report(rows: list[dict]) -> str:
    """One markdown table per (dataset, seed, warm-up, early stopping), rows by epoch."""
    out = []
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["dataset"], r["seed"], r["warmup"], r["early stopping"], json.dumps(r["options"]))
        runs.setdefault(key, []).append(r)
    for (dataset, seed, warmup, early, opts), rs in runs.items():
        stop = ", early stopping" if early else ""
        out.append(f"**{dataset}**, seed {seed}, warm-up {warmup} epochs{stop}, options {opts}\n")
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        for r in sorted(rs, key=lambda r: r["epoch"]):
            cells = [r.get(c, float("nan")) for c in COLUMNS]
            out.append("| " + " | ".join(_cell(c, v) for c, v in zip(COLUMNS, cells)) + " |")
        out.append("")
    return "\n".join(out)


def _cell(column: str, v) -> str:
    if isinstance(v, int):
        return str(v)
    if column.startswith("elbo"):
        return f"{v:.1f}"
    return f"{v:.4f}" if column == "FOSCTTM" else f"{v:.3f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="snare_thirds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", type=int, nargs="+", default=[10, 20, 29, 50, 75, 100, 150])
    p.add_argument("--warmup", type=float, default=7.25, help="KL warm-up epochs (fixed)")
    p.add_argument("--early-stopping", action="store_true")
    p.add_argument("--options", default="{}", help='JSON: {"model": {...}, "train": {...}}')
    p.add_argument("--out", type=Path, default=DOCS / "training_length.jsonl")
    p.add_argument("--report", action="store_true", help="only print the tables of --out")
    args = p.parse_args(argv)
    if args.report:
        print(report(read_rows(args.out)))
        return
    in_fresh_process(
        run,
        args.dataset,
        args.seed,
        sorted(args.checkpoints),
        args.warmup,
        args.early_stopping,
        json.loads(args.options),
        args.out,
    )


if __name__ == "__main__":
    main()
