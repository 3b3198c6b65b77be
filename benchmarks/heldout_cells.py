"""Are the cells held out for early stopping embedded worse than the ones trained on?

    python benchmarks/heldout_cells.py --datasets snare_libraries sim_experiments --seed 0

``train()`` holds out ``validation_fraction`` (10 %) of the cells to watch the ELBO;
until the final pass (``final_epochs``, after early stopping) the encoders never see
them, yet they are embedded like every other cell. One default fit
per data set; for the training and the held-out cells separately: each paired cell's
FOSCTTM (against all paired cells) averaged, and label transfer RNA-only -> ATAC-only
onto the ATAC-only cells of each group (from every RNA-only cell). Rows go to ``--out``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from designs import load
from quality import append_row, in_fresh_process

HERE = Path(__file__).resolve().parent


def default_fit(dataset: str, seed: int, **train):
    """scamort fitted on a design at its defaults (``train`` overrides): (split, label
    key, model, training seconds, mask of the cells held out for early stopping)."""
    import torch

    import scamort
    from scamort.data.loaders import holdout

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    _, split, label_key = load(dataset, seed)
    scamort.SCAMORT.setup_mudata(split, batch_key="batch")
    model = scamort.SCAMORT(split, seed=seed)
    t = time.perf_counter()
    model.train(seed=seed, progress_bar=False, **train)
    train_s = time.perf_counter() - t
    held = np.zeros(split.n_obs, dtype=bool)
    held[holdout(split.n_obs, 0.1, seed)[1]] = True
    return split, label_key, model, train_s, held


def paired_foscttm(model, paired: np.ndarray) -> np.ndarray:
    """Each paired cell's FOSCTTM between its RNA-alone and ATAC-alone embeddings."""
    from scamort import metrics

    return metrics.foscttm_per_cell(
        model.get_latent_representation(modality="rna")[paired],
        model.get_latent_representation(modality="atac")[paired],
    )


def run(dataset: str, seed: int, out: Path) -> None:
    from scamort import metrics

    split, label_key, model, train_s, held = default_fit(dataset, seed)
    status = split.obs["modality"].to_numpy()
    labels = split.obs[label_key].astype(str).to_numpy()
    z = model.get_latent_representation()
    paired = status == "paired"
    f = paired_foscttm(model, paired)
    ref = status == "rna_only"
    for group, mask in (("trained on", ~held), ("held out", held)):
        query = (status == "atac_only") & mask
        row = {
            "dataset": dataset,
            "seed": seed,
            "cells": group,
            "epochs trained": len(model.history),
            "final epochs on every cell": int(model.history["all_cells"].sum()),
            "train time (s)": train_s,
            "paired cells": int((paired & mask).sum()),
            "FOSCTTM": float(f[mask[paired]].mean()),
            "ATAC-only cells": int(query.sum()),
            "label transfer": metrics.label_transfer_accuracy(
                z[ref], labels[ref], z[query], labels[query]
            ),
        }
        append_row(out, row)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["snare_libraries", "sim_experiments"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "heldout_cells.jsonl")
    args = p.parse_args(argv)
    for dataset in args.datasets:
        in_fresh_process(run, dataset, args.seed, args.out)


if __name__ == "__main__":
    main()
