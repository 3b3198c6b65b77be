"""A cell type that only one experiment has: does the view adversary force it onto others?

The adversaries that mix experiments (``adversarial_view_weight``, the default, and
``adversarial_batch_weight``) are rewarded when a classifier cannot tell the experiments
apart, which a cell type that one experiment alone contains works against. This takes
``sim_experiments`` (deal ``--seed``) and drops every cell of one type (``--type``,
default: the type with most RNA-only cells) from the paired and the ATAC-only
experiments, so that the RNA-only experiment alone has it, and fits scamort with and
without the view adversary. For that type's cells, in the joint embedding:

- ``same type among 15 NN``: the share of their 15 nearest neighbours of their own type
  (1 when the type stays a cluster of its own);
- ``other experiments among 15 NN``: the share from the paired and ATAC-only
  experiments, which have no cell of that type: every such neighbour is a false match;
- ``paired cells' kNN vote for one type``: among each of its cells' 15 nearest paired
  cells (none of its type), the share of the most frequent type: how firmly a transfer
  from the paired cells would call it one other type (about 1 / the number of types
  nearby when it sits apart, 1 when it lies on one other type);

and for all cells ARI / NMI (Leiden sweep). Rows go to ``docs/private_type.jsonl``.

    python benchmarks/private_type.py --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from quality import append_row, bench_process, in_fresh_process, load

HERE = Path(__file__).resolve().parent


def fit_and_score(seed: int, cell_type: str | None, weight: float) -> dict:
    from sklearn.neighbors import NearestNeighbors

    import scamort
    from scamort.metrics import leiden_sweep

    bench_process()
    _, split, key = load("sim_experiments", seed)
    status = split.obs["modality"].astype(str).to_numpy()
    types = split.obs[key].astype(str).to_numpy()
    if cell_type is None:
        names, counts = np.unique(types[status == "rna_only"], return_counts=True)
        cell_type = str(names[np.argmax(counts)])
    keep = (types != cell_type) | (status == "rna_only")
    data = split[keep].copy()
    status, types = status[keep], types[keep]
    scamort.SCAMORT.setup_mudata(data, batch_key="batch")
    model = scamort.SCAMORT(data, seed=seed, adversarial_view_weight=weight)
    model.train(seed=seed, progress_bar=False)
    z = model.get_latent_representation()
    mine = types == cell_type
    nn = NearestNeighbors(n_neighbors=16).fit(z)
    idx = nn.kneighbors(z[mine], return_distance=False)[:, 1:]
    paired = status == "paired"
    ref = NearestNeighbors(n_neighbors=15).fit(z[paired])
    called = types[paired][ref.kneighbors(z[mine], return_distance=False)]
    votes = [max(np.unique(row, return_counts=True)[1]) / row.size for row in called]
    clusters = leiden_sweep(z, types)
    return {
        "seed": seed,
        "cell type only RNA-only has": cell_type,
        "adversarial_view_weight": weight,
        "cells of it": int(mine.sum()),
        "same type among 15 NN": float((types[idx] == cell_type).mean()),
        "other experiments among 15 NN": float((status[idx] != "rna_only").mean()),
        "paired cells' kNN vote for one type": float(np.mean(votes)),
        "ARI": clusters["ari"],
        "NMI": clusters["nmi"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--type", default=None, help="the cell type the RNA-only experiment keeps")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 10.0])
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "private_type.jsonl")
    args = p.parse_args(argv)
    for w in args.weights:
        append_row(args.out, in_fresh_process(fit_and_score, args.seed, args.type, w))


if __name__ == "__main__":
    main()
