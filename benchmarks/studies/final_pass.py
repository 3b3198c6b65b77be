"""Variants of the final pass after early stopping, from one early-stopped fit.

    python benchmarks/studies/final_pass.py --datasets snare_libraries sim_experiments sim10k \
        --seed 0

One default fit with ``final_epochs=0`` per data set; its weights are kept, and each
variant starts again from them: ``train()`` on every cell (no held-out cells, no
early stopping, no warm-up) for K epochs at learning rate ``lr``, either the encoders
alone (the decoders frozen, as the package's final pass) or the whole model. Scores
for each: FOSCTTM over all paired cells and over the held-out ones, label transfer
RNA-only -> ATAC-only, and quality.py's cluster and mixing measures. Rows go to
``--out``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
from harness import DOCS, append_row, in_fresh_process
from heldout_cells import default_fit, paired_foscttm
from scores import block_mixing, cluster_scores, model_views

# (what learns, learning rate, epochs); ("none", None, 0) is the early-stopped fit itself
VARIANTS = [
    ("none", None, 0),
    ("encoders", 1e-3, 10),
    ("whole model", 1e-3, 5),
    ("encoders", 1e-4, 10),
    ("whole model", 1e-4, 5),
    ("encoders", 1e-3, 5),
    ("whole model", 1e-4, 10),
]


def run(dataset: str, seed: int, out: Path) -> None:
    from scamort import metrics
    from scamort.model.training import _encoders_only

    split, key, model, _, held = default_fit(dataset, seed, final_epochs=0)
    stopped = copy.deepcopy(model.module.state_dict())
    status = split.obs["modality"].to_numpy()
    labels = split.obs[key].astype(str).to_numpy()
    paired = status == "paired"
    ref, query = status == "rna_only", status == "atac_only"
    for learns, lr, epochs in VARIANTS:
        model.module.load_state_dict(stopped)
        t = time.perf_counter()
        if epochs:
            options = {
                "max_epochs": epochs, "validation_fraction": 0.0, "early_stopping": False,
                "kl_warmup_epochs": 0, "seed": seed + 1, "progress_bar": False, "lr": lr,
            }  # fmt: skip
            if learns == "encoders":
                with _encoders_only(model.module):
                    model.train(**options)
            else:
                model.train(**options)
        train_s = time.perf_counter() - t
        z = model.get_latent_representation()
        f = paired_foscttm(model_views(model), paired)
        row = {
            "dataset": dataset,
            "seed": seed,
            "learns": learns,
            "lr": lr,
            "epochs": epochs,
            "time (s)": train_s,
            "FOSCTTM": float(f.mean()),
            "FOSCTTM held-out cells": float(f[held[paired]].mean()),
            "label transfer": metrics.label_transfer_accuracy(
                z[ref], labels[ref], z[query], labels[query]
            ),
        }
        row.update(cluster_scores(z, split.obs, key, seed))
        if "dataset" in split.obs:
            row.update(block_mixing(z, split.obs))
        append_row(out, row)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets", nargs="+", default=["snare_libraries", "sim_experiments", "sim10k"]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DOCS / "final_pass.jsonl")
    args = p.parse_args(argv)
    for dataset in args.datasets:
        in_fresh_process(run, dataset, args.seed, args.out)


if __name__ == "__main__":
    main()
