"""A cell type that only one experiment has: does the view adversary force it onto others?

The adversaries that mix experiments (``adversarial_view_weight`` and
``adversarial_batch_weight``, both opt-in) are rewarded when a classifier cannot tell the
experiments apart, which a cell type that one experiment alone contains works against.
This takes ``sim_experiments`` (deal ``--seed``) and drops every cell of one type
(``--type``, default: the type with most cells in the keeping experiment) from the other
two experiments, so that one experiment alone has it (``--keeper``: ``rna_only``, the
default, ``atac_only`` or ``paired``), and fits scamort with each view-adversary weight
asked for (``--weights``; other options of ``SCAMORT`` as JSON in ``--options``, of the
embedding in ``--latent``). For that type's cells, in the joint embedding:

- ``same type among 15 NN``: the share of their 15 nearest neighbours of their own type
  (1 when the type stays a cluster of its own);
- ``other experiments among 15 NN``: the share from the other two experiments, which
  have no cell of that type: cells of other types, which a type bordering others has
  some of even in the true latent state (``--truth``), so read it against that;
- ``paired cells' kNN vote for one type`` (``one-modality cells' ...`` when the paired
  experiment keeps it): among each of its cells' 15 nearest cells of the reference
  (none of its type), the share of the most frequent type: how firmly a transfer from
  them would call it one other type (about 1 / the number of types nearby when it sits
  apart, 1 when it lies on one other type);

and for all cells ARI / NMI (Leiden sweep). ``--truth`` scores the simulator's true
latent state of the same cells the same way: what those shares are with no batch effect
and no model. Rows go to ``docs/private_type.jsonl``.

    python benchmarks/studies/private_type.py --seed 0
    python benchmarks/studies/private_type.py --seed 0 --keeper paired --truth --weights 0 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from harness import DOCS, append_row, bench_process, in_fresh_process
from scores import true_latent


def fit_and_score(seed, cell_type, weight, keeper: str, options: dict, latent: dict) -> dict:
    """Fit scamort with the view adversary at ``weight`` on the design and
    score its joint embedding; ``weight="truth"``: score the simulator's true latent
    state of the same cells instead (no fit)."""
    import scamort

    bench_process()
    full, split, key = load("sim_experiments", seed)
    status = split.obs["modality"].astype(str).to_numpy()
    types = split.obs[key].astype(str).to_numpy()
    if cell_type is None:
        names, counts = np.unique(types[status == keeper], return_counts=True)
        cell_type = str(names[np.argmax(counts)])
    keep = (types != cell_type) | (status == keeper)
    data = split[keep].copy()
    status, types = status[keep], types[keep]
    if weight == "truth":
        z = true_latent(full, data)
        setting = {"embedding": "the true latent state"}
    else:
        scamort.SCAMORT.setup_mudata(data, batch_key="batch")
        model = scamort.SCAMORT(data, seed=seed, adversarial_view_weight=weight, **options)
        model.train(seed=seed, progress_bar=False)
        z = model.get_latent_representation(**latent)
        setting = {"adversarial_view_weight": weight}
        if options:
            setting["options"] = options
        if latent:
            setting["latent"] = latent
    row = {"seed": seed, "experiment that alone has the type": keeper, "cell type": cell_type}
    return {**row, **setting, **score(z, types, status, keeper, cell_type)}


def score(z, types, status, keeper: str, cell_type: str) -> dict:
    from sklearn.neighbors import NearestNeighbors

    from scamort.metrics import leiden_sweep

    mine = types == cell_type
    nn = NearestNeighbors(n_neighbors=16).fit(z)
    idx = nn.kneighbors(z[mine], return_distance=False)[:, 1:]
    reference = (status == "paired") != (keeper == "paired")
    ref = NearestNeighbors(n_neighbors=15).fit(z[reference])
    called = types[reference][ref.kneighbors(z[mine], return_distance=False)]
    votes = [max(np.unique(row, return_counts=True)[1]) / row.size for row in called]
    clusters = leiden_sweep(z, types)
    vote = f"{'one-modality' if keeper == 'paired' else 'paired'} cells' kNN vote for one type"
    return {
        "cells of it": int(mine.sum()),
        "same type among 15 NN": float((types[idx] == cell_type).mean()),
        "other experiments among 15 NN": float((status[idx] != keeper).mean()),
        vote: float(np.mean(votes)),
        "ARI": clusters["ari"],
        "NMI": clusters["nmi"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--type", default=None, help="the cell type the keeper alone keeps")
    p.add_argument("--keeper", default="rna_only", choices=["rna_only", "atac_only", "paired"])
    p.add_argument("--weights", type=float, nargs="*", default=[0.0, 10.0])
    p.add_argument("--options", type=json.loads, default={}, help="more SCAMORT options")
    p.add_argument("--latent", type=json.loads, default={}, help="get_latent_representation's")
    p.add_argument("--truth", action="store_true", help="also score the true latent state")
    p.add_argument("--out", type=Path, default=DOCS / "private_type.jsonl")
    args = p.parse_args(argv)
    if args.truth:
        row = in_fresh_process(fit_and_score, args.seed, args.type, "truth", args.keeper, {}, {})
        append_row(args.out, row)
    for w in args.weights:
        row = in_fresh_process(
            fit_and_score, args.seed, args.type, w, args.keeper, args.options, args.latent
        )
        append_row(args.out, row)


if __name__ == "__main__":
    main()
