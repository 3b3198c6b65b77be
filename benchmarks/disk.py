"""Peak memory and time of fitting from disk (backed .h5mu) against the number of cells.

    python benchmarks/disk.py --cells 100000 1000000 --steps 200

For each size, the simulator is written to ``--cache`` block by block
(:func:`scamort.datasets.write_simulated_multiome`, 2,000 genes x ``--peaks`` peaks, a
third each paired / RNA-only / ATAC-only) unless it is there already. Then a fresh
process opens it with ``read_h5mu(backed="r+")`` and, timing each stage:

- ``setup``: ``setup_mudata`` (one validation pass over the whole file, chunk by chunk);
- ``train``: ``--steps`` training steps streamed from disk (batch 512, 4-chunk buffers);
- ``write latent``: ``write_latent_representation`` over every cell, written into the
  file chunk by chunk.

It reports the process's peak RSS (high-water mark, everything included) and its RSS
after opening the file, so the growth with cells can be read off. Rows go to ``--out``
(JSON lines) and a table into ``docs/large_data.md`` between its ``disk`` markers.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

from harness import append_row, in_fresh_process, machine, peak_rss_gb, read_rows, replace_block

HERE = Path(__file__).resolve().parent


def _current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def write(n_cells: int, n_peaks: int, cache: Path) -> Path:
    import scamort

    path = cache / f"disk_{n_cells}_{n_peaks}.h5mu"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        scamort.datasets.write_simulated_multiome(path, n_cells, n_peaks=n_peaks, seed=0)
        print(f"wrote {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def run_job(path: str, steps: int) -> dict:
    warnings.simplefilter("ignore")
    import mudata as md
    import numpy as np
    import torch

    import scamort

    torch.manual_seed(0)
    row = {}
    t = time.perf_counter()
    mdata = md.read_h5mu(path, backed="r+")
    row["open (s)"] = time.perf_counter() - t
    row["RSS after open (GB)"] = _current_rss_gb()
    t = time.perf_counter()
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    row["setup (s)"] = time.perf_counter() - t
    model = scamort.SCAMORT(mdata)
    n_chunks = len(scamort.model.registry._registered(mdata)[1].chunks())
    t = time.perf_counter()
    model.train(max_epochs=1, max_steps=steps, progress_bar=False, validation_fraction=0.0)
    row["train (s)"] = time.perf_counter() - t
    row["train steps"] = int(min(steps, np.ceil(mdata.n_obs / 512)))
    t = time.perf_counter()
    model.write_latent_representation("X_scamort")
    row["write latent (s)"] = time.perf_counter() - t
    row["chunks"] = n_chunks
    row["peak RSS (GB)"] = peak_rss_gb()
    return row


def report(rows: list[dict]) -> str:
    cols = [
        "cells",
        "peaks",
        "file (GB)",
        "RSS after open (GB)",
        "peak RSS (GB)",
        "setup (s)",
        "train steps",
        "train (s)",
        "write latent (s)",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                f"{r[c]:,}" if isinstance(r[c], int) else f"{r[c]:.2f}" if r[c] is not None else "-"
                for c in cols
            )
            + " |"
        )
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", nargs="+", type=int, default=[100_000, 1_000_000])
    p.add_argument("--peaks", type=int, default=5000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "disk.jsonl")
    p.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "large_data.md")
    p.add_argument("--report", action="store_true", help="only rewrite the table")
    a = p.parse_args(argv)
    if not a.report:
        for n in a.cells:
            path = write(n, a.peaks, a.cache)
            row = {
                "cells": n,
                "peaks": a.peaks,
                "file (GB)": path.stat().st_size / 2**30,
                **in_fresh_process(run_job, str(path), a.steps),
                "machine": machine(),
            }
            append_row(a.out, row)
    replace_block(a.doc, "disk", report(read_rows(a.out)))


if __name__ == "__main__":
    main()
