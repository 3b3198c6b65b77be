"""Whether a paired cell's single-modality views can be sampled (one per step, weighted
to keep the loss unbiased) instead of all decoded, on designs of every paired share.

    python benchmarks/studies/single_views.py --datasets snare_thirds sim10k \
        sim_experiments snare_libraries --seed 0

Each (design, single_views) fit runs at the package's defaults otherwise (default
epochs, early stopping, final pass), in its own process. Scored with scamort's own
measures: ARI and NMI of Leiden clusters (best over resolutions), label transfer
RNA-only -> ATAC-only, FOSCTTM of the paired cells; and the training time. Rows go to
``docs/single_views.jsonl``.
"""

from __future__ import annotations

import argparse
import time

import _path  # noqa: F401  (benchmarks/ on the path)
from harness import DOCS, append_row, bench_process, in_fresh_process, machine

OUT = DOCS / "single_views.jsonl"


def run(dataset: str, seed: int, single_views: str) -> dict:
    import numpy as np
    from designs import load

    import scamort
    from scamort import metrics

    bench_process()
    _, split, key = load(dataset, seed)
    scamort.SCAMORT.setup_mudata(split, batch_key="batch")
    model = scamort.SCAMORT(split, seed=seed, single_views=single_views)
    start = time.perf_counter()
    model.train(seed=seed, progress_bar=False)
    train_s = time.perf_counter() - start
    status = split.obs["modality"].to_numpy()
    labels = split.obs[key].astype(str).to_numpy()
    z = model.get_latent_representation()
    sweep = metrics.leiden_sweep(z, labels)
    paired, ref, query = status == "paired", status == "rna_only", status == "atac_only"
    rna = model.get_latent_representation(modality="rna")
    atac = model.get_latent_representation(modality="atac")
    return {
        "dataset": dataset,
        "seed": seed,
        "single_views": single_views,
        "paired_fraction": round(float(paired.mean()), 3),
        "train_s": round(train_s, 1),
        "epochs": model.history.n_epochs,
        "ARI": round(sweep["ari"], 4),
        "NMI": round(sweep["nmi"], 4),
        "label_transfer": round(
            metrics.label_transfer_accuracy(z[ref], labels[ref], z[query], labels[query]), 4
        ),
        "FOSCTTM": round(metrics.foscttm(rna[paired], atac[paired]), 5),
        "machine": machine(),
        "n_threads": int(np.asarray(__import__("torch").get_num_threads())),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["snare_thirds", "sim10k"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["all", "sample"])
    args = p.parse_args(argv)
    for dataset in args.datasets:
        for variant in args.variants:
            append_row(OUT, in_fresh_process(run, dataset, args.seed, variant))


if __name__ == "__main__":
    main()
