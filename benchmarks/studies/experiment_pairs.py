"""Which experiments an embedding brings together: iLISI over each pair of experiments.

On a separate-experiments design (``sim_experiments``, ``snare_libraries``) every cell
belongs to the paired, the RNA-only or the ATAC-only experiment. For each pair, iLISI
over the two experiments' cells (in the embedding of those cells alone) is set against
its ceiling, the same with the experiment labels shuffled within cell types (what the
embedding's geometry and the experiments' compositions allow). For fits, also how far
apart a paired cell's RNA-alone and ATAC-alone embeddings lie (iLISI of the two views,
and the mean offset and distance between them against the spread of the cells), and the
quality measures of quality.py.

    python benchmarks/studies/experiment_pairs.py --dataset sim_experiments --seed 0 --tag default
    python benchmarks/studies/experiment_pairs.py --dataset sim_experiments --seed 0 --tag truth
    python benchmarks/studies/experiment_pairs.py --dataset sim_experiments --seed 0 \\
        --tag "cycle 1" --options '{"model": {"cycle_weight": 1}}'

Each run appends one JSON line to ``docs/experiment_pairs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from fits import fit_scamort
from harness import DOCS, append_row, bench_process
from scores import (
    _neighbors,
    block_mixing,
    cluster_scores,
    ilisi_against_ceiling,
    shuffled_within,
    true_latent,
    truth_scores,
)

PAIRS = [("paired", "rna_only"), ("paired", "atac_only"), ("rna_only", "atac_only")]


def pair_scores(z: np.ndarray, status: np.ndarray, types: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for a, b in PAIRS:
        keep = (status == a) | (status == b)
        s = status[keep]
        perms = [shuffled_within(s, types[keep], rng) for _ in range(3)]
        out[f"{a}~{b}"], out[f"{a}~{b} ceiling"] = ilisi_against_ceiling(
            _neighbors(z[keep]), s, perms
        )
    return out


def view_gap(rna: np.ndarray, atac: np.ndarray) -> dict:
    """How far apart the paired cells' RNA-alone and ATAC-alone embeddings lie."""
    import scib_metrics

    both = np.concatenate([rna, atac])
    views = np.array(["rna"] * len(rna) + ["atac"] * len(atac))
    d = rna - atac
    spread = np.sqrt(((rna - rna.mean(0)) ** 2).sum(1).mean())
    return {
        "paired views iLISI": float(scib_metrics.ilisi_knn(_neighbors(both), views)),
        "view offset / spread": float(np.linalg.norm(d.mean(0)) / spread),
        "view distance / spread": float(np.sqrt((d**2).sum(1).mean()) / spread),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="sim_experiments")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="default", help='"truth": the simulator\'s true latent')
    p.add_argument("--options", default="{}", help="JSON, as quality.py's --options")
    p.add_argument("--out", default=str(DOCS / "experiment_pairs.jsonl"))
    args = p.parse_args(argv)
    bench_process()
    full, split, key = load(args.dataset, args.seed)
    status = split.obs["modality"].astype(str).to_numpy()
    types = split.obs[key].astype(str).to_numpy()
    row = {"dataset": args.dataset, "seed": args.seed, "tag": args.tag}
    truth = true_latent(full, split)
    if args.tag == "truth":
        z = truth
    else:
        fit = fit_scamort(split, 0, args.seed, **json.loads(args.options))
        z = fit["joint"]
        paired = status == "paired"
        row.update(view_gap(fit["rna"][paired], fit["atac"][paired]))
    row.update(pair_scores(z, status, types, args.seed))
    row.update(cluster_scores(z, split.obs, key, args.seed))
    row.update(block_mixing(z, split.obs))
    if truth is not None and args.tag != "truth":
        row.update(truth_scores(z, truth, split.obs, key))
    append_row(Path(args.out), row)


if __name__ == "__main__":
    main()
