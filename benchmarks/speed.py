"""Training and refinement speed of scamort against scvi-tools MULTIVI, same data, same run.

    python benchmarks/speed.py --datasets snare sim10k sim100k --epochs 3
    python benchmarks/speed.py --datasets snare sim5k_p100k --epochs 3 --more-epochs 13 \
        --methods scamort scamort_sampled0.1 multivi --refine-cells 0

``--more-epochs`` trains a second model for that many epochs in the same process and
reports the cost of one more epoch (start-up and validation cancel).

Data sets (RNA + ATAC, a third each paired / RNA-only / ATAC-only):
- ``snare``: SNARE-seq mouse cortex (10,309 cells, 1,677 genes x 24,150 regions).
- ``simN`` (``sim10k``, ``sim100k``, ``sim1m``, or any ``sim<cells>``; ``_p100k`` sets
  the peaks): ``scamort.datasets.simulate_multiome`` with 2,000 genes x 25,000 peaks
  (by default), 10 types,
  written once to ``--cache`` as .h5mu and read back by every job, so that no job pays
  for (or counts the memory of) the simulation.

Methods:
- ``scamort``: defaults (batch 512; ``peak_sampling="auto"``).
- ``scamort_exact``: every peak column scored (``peak_sampling=None``).
- ``scamort_sampled<f>``: with ``peak_sampling=f`` (closed peaks scored on a fraction f
  of the peak columns per minibatch, or on f columns from 1 up), e.g.
  ``scamort_sampled0.1``, ``scamort_sampled2048``.
- ``multivi``: MULTIVI at its defaults (batch 128), the input zero-padded as it needs.
- ``multivi_b512``: MULTIVI at scamort's batch size.

Each (dataset, method) runs in a fresh process: read the data, set up, train
``--epochs`` epochs; for scamort also refine 20 steps on ``--refine-cells`` cells. It
reports training cells/s (cells x epochs / train wall time, Lightning start-up and
validation included), refinement cells*steps/s (including the before/after ELBO
measurement on 16 draws), the estimated time to a trained model at the method's default
epoch count (seconds per epoch x default epochs; for MULTIVI 500 epochs with early
stopping, so an upper bound for it), peak host RSS (the process's high-water mark, data
included) and peak device memory. Rows are appended to ``--out`` (JSON lines) and
``--report`` rewrites the speed tables of ``docs/speed.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
from fits import multivi_model
from harness import append_row, in_fresh_process, machine, peak_rss_gb, read_rows, replace_block

HERE = Path(__file__).resolve().parent
MULTIVI_DEFAULT_EPOCHS = 500


_UNIT = {None: 1, "k": 1_000, "m": 1_000_000}


def _sim_size(dataset: str) -> tuple[int, int]:
    """(cells, peaks) of ``sim<cells>[k|m][_p<peaks>[k]]`` (25,000 peaks by default)."""
    m = re.fullmatch(r"sim(\d+)(k|m)?(?:_p(\d+)(k)?)?", dataset)
    if not m:
        raise ValueError(f"unknown dataset {dataset!r}: use snare or sim<cells>[k|m][_p<peaks>[k]]")
    cells = int(m.group(1)) * _UNIT[m.group(2)]
    peaks = int(m.group(3)) * _UNIT[m.group(4)] if m.group(3) else 25_000
    return cells, peaks


def data_path(dataset: str, cache: Path) -> Path:
    """The dataset as .h5mu in ``cache``, written on first use."""
    import scamort
    from scamort._io import write_atomic

    path = cache / f"{dataset}.h5mu"
    if path.exists():
        return path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dataset == "snare":
            mdata = scamort.datasets.unpair(
                scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True), seed=0
            )
        else:
            cells, peaks = _sim_size(dataset)
            mdata = scamort.datasets.simulate_multiome(
                n_cells=cells, n_genes=2_000, n_peaks=peaks, n_cell_types=10
            )
        write_atomic(mdata, path)
    return path


def _read(path: Path):
    import mudata as md

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.read_h5mu(path)


def _device_peak_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def run_job(
    dataset: str, method: str, path: str, epochs: int, refine_cells: int, more_epochs: int = 0
) -> dict:
    """One method on one data set. With ``more_epochs`` > ``epochs``, a second model is
    trained for that many epochs in the same process, and the cost of one more epoch is
    (time(more) - time(few)) / (more - few): start-up and the first validation cancel."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    mdata = _read(Path(path))
    row = {"dataset": dataset, "method": method, "epochs": epochs, "n_cells": mdata.n_obs}
    row["n_peaks"] = mdata["atac"].n_vars
    row["read (s)"] = time.perf_counter() - t0
    row["RSS after read (GB)"] = peak_rss_gb()
    fit = _fitter(method)
    row.update(fit(mdata, epochs, refine_cells))
    row["cells/s"] = epochs * mdata.n_obs / row["train (s)"]
    row["s/epoch"] = row["train (s)"] / epochs
    if more_epochs > epochs:
        longer = fit(mdata, more_epochs, 0)
        row["more epochs"] = more_epochs
        row["s per extra epoch"] = (longer["train (s)"] - row["train (s)"]) / (more_epochs - epochs)
        row["cells/s per extra epoch"] = mdata.n_obs / row["s per extra epoch"]
    per_epoch = row.get("s per extra epoch", row["s/epoch"])
    row["time to trained model (s)"] = per_epoch * row["default epochs"]
    row["peak RSS (GB)"] = peak_rss_gb()
    row["peak device memory (GB)"] = _device_peak_gb()
    row["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return row


def _fitter(method: str):
    """``fit(mdata, epochs, refine_cells) -> dict`` for a method name: ``scamort``,
    ``scamort_sampled<f>`` (peak_sampling=f, e.g. scamort_sampled0.1), ``multivi``,
    ``multivi_b512``."""
    if method.startswith("scamort"):
        sampled = method.removeprefix("scamort_sampled") if "sampled" in method else None
        options = {"peak_sampling": float(sampled)} if sampled else {}
        if method == "scamort_exact":
            options = {"peak_sampling": None}
        return lambda mdata, epochs, refine: _scamort(mdata, epochs, refine, **options)
    batch = 128 if method == "multivi" else 512
    return lambda mdata, epochs, refine: _multivi(mdata, epochs, batch)


def _scamort(mdata, epochs: int, refine_cells: int, **options) -> dict:
    import scamort
    from scamort.model.training import default_epochs

    atac = scamort.Modality("atac", **options)  # peak_sampling
    scamort.SCAMORT.setup_mudata(mdata, {"rna": "rna", "atac": atac}, batch_key="batch")
    model = scamort.SCAMORT(mdata)
    t = time.perf_counter()
    model.train(max_epochs=epochs, early_stopping=False, progress_bar=False)
    out = {"train (s)": time.perf_counter() - t}
    out["default epochs"] = default_epochs(mdata.n_obs)
    if refine_cells:
        cells = np.arange(min(refine_cells, mdata.n_obs))
        steps = 20
        t = time.perf_counter()
        model.get_latent_representation(indices=cells, refine_steps=steps)
        out["refine cells*steps/s"] = len(cells) * steps / (time.perf_counter() - t)
    return out


def _multivi(mdata, epochs: int, batch_size: int) -> dict:
    model = multivi_model(mdata)
    t = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=batch_size, enable_progress_bar=False)
    return {"train (s)": time.perf_counter() - t, "default epochs": MULTIVI_DEFAULT_EPOCHS}


# ------------------------------------------------------------------------- report
COLUMNS = [
    "n_cells",
    "n_peaks",
    "cells/s",
    "s/epoch",
    "s per extra epoch",
    "default epochs",
    "time to trained model (s)",
    "refine cells*steps/s",
    "peak RSS (GB)",
    "peak device memory (GB)",
]


def report(rows: list[dict]) -> str:
    """Per device, a table per dataset: every method's figures, and two ratios against
    MULTIVI at its defaults: cells/s with start-up and validation included, and the cost
    of one more epoch (start-up cancelled; rows run with ``--more-epochs``)."""
    import pandas as pd

    d = pd.DataFrame(rows)
    lines = []
    for device, dd in d.groupby("device", sort=False):
        lines += [f"### On {device}", ""]
        head = " | ".join(COLUMNS)
        lines.append(f"| data | method | {head} | vs MULTIVI (cells/s) | vs MULTIVI (per epoch) |")
        lines.append("|---" * (len(COLUMNS) + 4) + "|")
        for dataset, g in dd.groupby("dataset", sort=False):
            g = g.drop_duplicates("method", keep="last")
            peer = g[g["method"] == "multivi"]
            for _, r in g.iterrows():
                cells = [_cell(r.get(c)) for c in COLUMNS]
                ratios = ["", ""]
                if len(peer) and r["method"] != "multivi":
                    p = peer.iloc[0]
                    ratios[0] = f"{r['cells/s'] / p['cells/s']:.1f}x"
                    extra = r.get("s per extra epoch"), p.get("s per extra epoch")
                    if all(isinstance(v, float) and v > 0 for v in extra):
                        ratios[1] = f"{extra[1] / extra[0]:.1f}x"
                lines.append(f"| {dataset} | {r['method']} | " + " | ".join(cells + ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, (int, np.integer)) or float(v).is_integer() and abs(v) >= 100:
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["snare", "sim10k", "sim100k"])
    p.add_argument("--methods", nargs="+", default=["scamort", "multivi", "multivi_b512"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument(
        "--more-epochs",
        type=int,
        default=0,
        help="also train for this many epochs: the cost of one more epoch cancels start-up",
    )
    p.add_argument("--refine-cells", type=int, default=2000)
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "speed.jsonl")
    p.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "speed.md")
    p.add_argument("--report", action="store_true", help="only rewrite the tables")
    args = p.parse_args(argv)
    rows = read_rows(args.out)
    if not args.report:
        for dataset in args.datasets:
            # simulated in its own process: the jobs must not inherit its peak RSS
            path = in_fresh_process(data_path, dataset, args.cache)
            for method in args.methods:
                job = (dataset, method, str(path), args.epochs, args.refine_cells)
                job = (*job, args.more_epochs)
                row = {**in_fresh_process(run_job, *job), "machine": machine()}
                append_row(args.out, row)
                rows.append(row)
    replace_block(args.doc, "speed", report(rows))
    print(report(rows))


if __name__ == "__main__":
    main()
