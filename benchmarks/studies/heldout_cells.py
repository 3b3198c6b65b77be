"""Are the cells held out for early stopping embedded worse than the ones trained on?

    python benchmarks/studies/heldout_cells.py --datasets snare_libraries sim_experiments --seed 0
    python benchmarks/studies/heldout_cells.py --datasets snare_libraries --seed 0 --methods multivi

``train()`` holds out ``validation_fraction`` (10 %) of the cells to watch the ELBO;
until the final pass (``final_epochs``, after early stopping) the encoders never see
them, yet they are embedded like every other cell. One default fit
per data set; for the training and the held-out cells separately: each paired cell's
FOSCTTM (against all paired cells) averaged, and label transfer RNA-only -> ATAC-only
onto the ATAC-only cells of each group (from every RNA-only cell). Rows go to ``--out``.

``--methods multivi`` asks the same of MULTIVI in its best set-up of quality.py (library
as batch, no modality covariate, no early stopping) for ``--multivi-epochs``, trained on
90 % of the cells (its ``train_size=0.9``) instead of all of them: how well its
encoders place paired cells they never trained on, next to the ones they did.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from harness import DOCS, append_row, bench_process, in_fresh_process
from scores import model_views


def default_fit(dataset: str, seed: int, **train):
    """scamort fitted on a design at its defaults (``train`` overrides): (split, label
    key, model, training seconds, mask of the cells held out for early stopping)."""
    import scamort
    from scamort.data.loaders import holdout

    bench_process()
    _, split, label_key = load(dataset, seed)
    scamort.SCAMORT.setup_mudata(split, batch_key="batch")
    model = scamort.SCAMORT(split, seed=seed)
    t = time.perf_counter()
    model.train(seed=seed, progress_bar=False, **train)
    train_s = time.perf_counter() - t
    held = np.zeros(split.n_obs, dtype=bool)
    held[holdout(split.n_obs, 0.1, seed)[1]] = True
    return split, label_key, model, train_s, held


def paired_foscttm(latent, paired: np.ndarray) -> np.ndarray:
    """Each paired cell's FOSCTTM between its RNA-alone and ATAC-alone embeddings
    (``latent(m)``: the embedding of every cell by modality ``m`` alone)."""
    from scamort import metrics

    return metrics.foscttm_per_cell(latent("rna")[paired], latent("atac")[paired])


def multivi_fit(dataset: str, seed: int, epochs: int):
    """MULTIVI's best set-up (quality.py) on 90 % of the cells, for ``epochs`` without
    early stopping: (split, label key, latent(modality), training seconds, mask of the
    cells it did not train on)."""
    import scvi
    from fits import multivi_model

    bench_process()
    _, split, label_key = load(dataset, seed)
    scvi.settings.seed = seed
    model = multivi_model(split, {"modality_covariate": False})
    t = time.perf_counter()
    model.train(max_epochs=epochs, train_size=0.9, early_stopping=False, enable_progress_bar=False)
    train_s = time.perf_counter() - t
    held = np.ones(split.n_obs, dtype=bool)
    held[np.asarray(model.train_indices)] = False
    names = {"joint": "joint", "rna": "expression", "atac": "accessibility"}

    def latent(m: str) -> np.ndarray:
        return model.get_latent_representation(modality=names[m])

    return split, label_key, latent, train_s, held


def group_rows(split, label_key: str, latent, held: np.ndarray) -> list[dict]:
    """Per group of cells (trained on, held out): the paired cells' mean FOSCTTM against
    all paired cells and label transfer onto the group's ATAC-only cells from every
    RNA-only cell, in the embeddings ``latent(m)`` (m: joint, rna, atac)."""
    from scamort import metrics

    status = split.obs["modality"].to_numpy()
    labels = split.obs[label_key].astype(str).to_numpy()
    z = latent("joint")
    paired = status == "paired"
    f = paired_foscttm(latent, paired)
    ref = status == "rna_only"
    rows = []
    for group, mask in (("trained on", ~held), ("held out", held)):
        query = (status == "atac_only") & mask
        rows.append(
            {
                "cells": group,
                "paired cells": int((paired & mask).sum()),
                "FOSCTTM": float(f[mask[paired]].mean()),
                "ATAC-only cells": int(query.sum()),
                "label transfer": metrics.label_transfer_accuracy(
                    z[ref], labels[ref], z[query], labels[query]
                ),
            }
        )
    return rows


def run(dataset: str, seed: int, out: Path, method: str = "scamort", epochs: int = 150) -> None:
    if method == "multivi":
        split, label_key, latent, train_s, held = multivi_fit(dataset, seed, epochs)
        fit = {"method": "multivi", "epochs trained": epochs, "final epochs on every cell": 0}
    else:
        split, label_key, model, train_s, held = default_fit(dataset, seed)
        latent = model_views(model)
        fit = {
            "method": "scamort",
            "epochs trained": len(model.history),
            "final epochs on every cell": int(model.history["all_cells"].sum()),
        }
    for group in group_rows(split, label_key, latent, held):
        row = {"dataset": dataset, "seed": seed, "cells": group.pop("cells"), **fit}
        append_row(out, {**row, "train time (s)": train_s, **group})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["snare_libraries", "sim_experiments"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", choices=["scamort", "multivi"], default=["scamort"])
    p.add_argument("--multivi-epochs", type=int, default=150)
    p.add_argument("--out", type=Path, default=DOCS / "heldout_cells.jsonl")
    args = p.parse_args(argv)
    for dataset in args.datasets:
        for method in args.methods:
            in_fresh_process(run, dataset, args.seed, args.out, method, args.multivi_epochs)


if __name__ == "__main__":
    main()
