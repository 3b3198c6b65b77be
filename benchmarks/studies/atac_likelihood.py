"""Bernoulli (PeakVI) vs Poisson ATAC likelihood on SNARE-seq, thirds split.

    python benchmarks/studies/atac_likelihood.py --n-cells 3000 --epochs 40 --seeds 0 1

Prints and writes (docs/atac_likelihood.json) the integration metrics of the demo for
each likelihood and seed, on a random subsample of cells.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np

import scamort
from scamort._demo import integration_metrics


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-cells", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default="docs/atac_likelihood.json")
    args = p.parse_args()
    full = scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True)
    rows = []
    for seed in args.seeds:
        pick = np.sort(np.random.default_rng(seed).choice(full.n_obs, args.n_cells, replace=False))
        mdata = scamort.datasets.unpair(full[pick].copy(), seed=seed)
        for likelihood in ("bernoulli", "poisson"):
            atac = scamort.Modality("atac", likelihood=likelihood)
            scamort.SCAMORT.setup_mudata(mdata, {"rna": "rna", "atac": atac}, batch_key="batch")
            model = scamort.SCAMORT(mdata, seed=seed)
            t = time.perf_counter()
            model.train(max_epochs=args.epochs, seed=seed, progress_bar=False)
            row = {
                "likelihood": likelihood,
                "seed": seed,
                "train_seconds": time.perf_counter() - t,
                **integration_metrics(model, mdata),
            }
            print(row, flush=True)
            rows.append(row)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
