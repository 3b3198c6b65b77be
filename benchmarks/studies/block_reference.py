"""How far the experiments of a separate-experiments design mix when no modality is hidden.

On ``snare_libraries`` every cell was in fact measured in both modalities: the design
hides the ATAC of the RNA-only block's libraries and the RNA of the ATAC-only block's.
How far the three experiments should mix in an embedding ("iLISI modality" of
quality.py) has no truth there, so this takes as reference the embedding of the same
cells with nothing hidden: scamort at its defaults fitted on the full data (every cell
paired, library as batch), scored with each deal's experiment labels. Also: that iLISI's
ceiling (the experiment labels shuffled within cell types, which is what the
experiments' compositions allow), library mixing within the experiments, and the
paired experiment against each single-modality one with every cell embedded by that
one modality (quality.py's ``iLISI paired vs rna_only, rna views`` and its ATAC twin).

On ``sim_experiments`` the simulator's true latent state is scored the same way, beside
the fit on its full (every cell paired) data: where the two agree, the reference
procedure reads the truth.

    python benchmarks/studies/block_reference.py --dataset snare_libraries --deals 0 1
    python benchmarks/studies/block_reference.py --dataset sim_experiments --deals 0 1

Each fit appends one JSON line to ``docs/block_reference.jsonl``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
import pandas as pd
from designs import load
from fits import fit_scamort
from harness import DOCS, append_row, bench_process
from scores import _neighbors, block_mixing, ilisi_against_ceiling, shuffled_within, view_mixing


def experiment_scores(z: np.ndarray, status, batch, types, seed: int) -> dict:
    """iLISI over the experiments, its within-type-shuffled ceiling, and library mixing
    within each experiment, of the embedding ``z`` (rows in the order of the labels)."""
    rng = np.random.default_rng(seed)
    perms = [shuffled_within(status, types, rng) for _ in range(3)]
    value, ceiling = ilisi_against_ceiling(_neighbors(z), status, perms)
    obs = pd.DataFrame({"dataset": status, "batch": batch})
    return {"iLISI modality": value, "ceiling": ceiling, **block_mixing(z, obs)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="snare_libraries")
    p.add_argument("--deals", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default=str(DOCS / "block_reference.jsonl"))
    args = p.parse_args(argv)
    bench_process()
    for deal in args.deals:
        full, split, key = load(args.dataset, deal)
        status = split.obs["modality"].astype(str).reindex(full.obs_names).to_numpy()
        batch = full.obs["batch"].astype(str).to_numpy()
        types = full.obs[key].astype(str).to_numpy()
        embeddings = {}
        if "X_true" in full.obsm:
            true = np.asarray(full.obsm["X_true"])
            embeddings["the true latent state"] = (true, None, {"rna": true, "atac": true})
        paired = full.copy()
        paired.obs["modality"] = "paired"
        t = time.perf_counter()
        fit = fit_scamort(paired, 0, deal)
        embeddings["scamort, defaults, every cell paired"] = (
            fit["joint"],
            {"train time (s)": time.perf_counter() - t, "epochs trained": fit["epochs_run"]},
            fit,
        )
        for name, (z, extra, views) in embeddings.items():
            row = {"dataset": args.dataset, "deal": deal, "embedding": name}
            row.update(experiment_scores(z, status, batch, types, deal))
            # each experiment read by one modality, as quality.py reads the design
            row.update(view_mixing(views, status))
            append_row(Path(args.out), {**row, **(extra or {})})


if __name__ == "__main__":
    main()
