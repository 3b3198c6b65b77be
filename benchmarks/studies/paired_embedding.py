"""How to embed paired cells next to unpaired ones: the product of experts, or the mean
of the single-modality posterior means.

One scamort fit per dataset (default settings, default epochs), then the cluster and
mixing scores of ``benchmarks/quality.py`` on four embeddings that differ only in the
paired cells' rows: the joint (product-of-experts) posterior mean, the RNA-alone
posterior mean, the ATAC-alone posterior mean, and the average of the last two.
Unpaired cells keep their (single-expert) posterior in all four. Also prints the mean
norm of each group's embedding. Rows go to ``docs/paired_embedding.jsonl``.

    python benchmarks/studies/paired_embedding.py --datasets snare_thirds snare_paired sim10k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import DESIGNS as DATASETS
from designs import load
from harness import DOCS, append_row
from scores import cluster_scores


def run(dataset: str, seed: int) -> list[dict]:
    import scamort

    _, split, key = load(dataset, seed)
    scamort.SCAMORT.setup_mudata(split, batch_key="batch")
    model = scamort.SCAMORT(split, seed=seed)
    model.train(seed=seed, progress_bar=False)
    status = split.obs["modality"].to_numpy()
    paired = status == "paired"
    joint = model.get_latent_representation(paired="product")
    rna, atac = (model.get_latent_representation(modality=m) for m in ("rna", "atac"))
    norms = {
        f"norm {s}": float(np.linalg.norm(joint[status == s], axis=1).mean())
        for s in np.unique(status)
    }
    rows = []
    for name, z_paired in (
        ("product of experts", joint[paired]),
        ("RNA alone", rna[paired]),
        ("ATAC alone", atac[paired]),
        ("mean of the single-modality means", (rna[paired] + atac[paired]) / 2),
    ):
        z = joint.copy()
        z[paired] = z_paired
        row = {"dataset": dataset, "seed": seed, "paired cells embedded by": name}
        row["norm of paired cells"] = float(np.linalg.norm(z_paired, axis=1).mean())
        row.update(norms)
        row.update(cluster_scores(z, split.obs, key, seed))
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=DOCS / "paired_embedding.jsonl")
    args = p.parse_args(argv)
    for dataset in args.datasets:
        for seed in args.seeds:
            for row in run(dataset, seed):
                append_row(args.out, row)


if __name__ == "__main__":
    main()
