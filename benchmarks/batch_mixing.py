"""Batch mixing: is MULTIVI's higher iLISI better mixing, or geometry?

scIB's iLISI weights each cell's 90 nearest neighbours with a Gaussian kernel tuned to a
perplexity of 30, and reports the median inverse Simpson index of the batch labels
under those weights. It therefore also depends on how evenly the kernel can spread its
weight over the neighbours, which is a property of the embedding's local geometry and
not of the batches. This script separates the two. For each embedding it reports:

- ``iLISI batch``: scib-metrics' scaled iLISI over the batches (SNARE-seq: the
  libraries), as in quality.py;
- ``iLISI batch, shuffled within cell types``: the same embedding and kernel,
  with the batch labels permuted at random within each published cell type (mean over
  five permutations). This is the score the embedding would get if the batch carried
  no information beyond the cell type, i.e. its ceiling for a type-preserving
  integration;
- ``iLISI / its ceiling``: the fraction of that ceiling reached;
- ``same-batch neighbours``: the fraction of each cell's 30 nearest neighbours from
  its own batch, and ``(shuffled within types)`` the same after the permutation;
- ``batch ASW``: scib-metrics' ``silhouette_batch`` over the cell types (1 = mixed);
- ``batch probe accuracy``: 5-fold logistic-regression accuracy of predicting the
  batch from the embedding, next to ``(shuffled within types)``.

Embeddings: scamort at ``--scamort-epochs`` (default: its own) and MULTIVI at
``--multivi-epochs`` on a data set of ``quality.py`` (its fits, each in a fresh process,
latents cached in ``--cache``), and two references with no batch signal at all:
isotropic Gaussian noise, and a one-hot of the cell type plus noise. Rows go to
``docs/batch_mixing.jsonl``.

    python benchmarks/batch_mixing.py --dataset snare_thirds --multivi-epochs 150
    python benchmarks/batch_mixing.py --dataset sim10k --scamort-epochs 20 --multivi-epochs 20
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np
from quality import _neighbors, append_row, in_fresh_process, load

HERE = Path(__file__).resolve().parent


def fit_latent(dataset: str, method: str, seed: int, epochs: int | None) -> np.ndarray:
    """The joint latent of one fit (in the calling process)."""
    import torch
    from quality import fit_multivi, fit_scamort

    torch.set_num_threads(int(os.environ.get("SCAMORT_BENCH_THREADS", os.cpu_count() or 1)))
    warnings.filterwarnings("ignore")
    _, split, _ = load(dataset, seed)
    if method == "scamort":
        return fit_scamort(split, epochs, seed)["joint"]
    return fit_multivi(split, epochs, seed)["joint"]


def shuffled_within(labels: np.ndarray, groups: np.ndarray, rng) -> np.ndarray:
    """``labels`` permuted at random within each group."""
    out = labels.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = labels[rng.permutation(idx)]
    return out


def mixing_scores(z: np.ndarray, batch: np.ndarray, types: np.ndarray, seed: int) -> dict:
    import scib_metrics
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    nn = _neighbors(z)
    perms = [shuffled_within(batch, types, rng) for _ in range(5)]

    def ilisi(b):
        return float(scib_metrics.ilisi_knn(nn, b))

    def same(b):
        return float((b[nn.indices[:, 1:31]] == b[:, None]).mean())

    def probe(b):
        clf = LogisticRegression(max_iter=500)
        return float(cross_val_score(clf, StandardScaler().fit_transform(z), b, cv=5).mean())

    out = {"iLISI batch": ilisi(batch)}
    out["iLISI batch, shuffled within cell types"] = float(np.mean([ilisi(b) for b in perms]))
    out["iLISI / its ceiling"] = out["iLISI batch"] / out["iLISI batch, shuffled within cell types"]
    out["same-batch neighbours"] = same(batch)
    out["same-batch neighbours (shuffled within types)"] = float(np.mean([same(b) for b in perms]))
    out["batch ASW"] = float(scib_metrics.silhouette_batch(z, types, batch))
    out["batch probe accuracy"] = probe(batch)
    out["batch probe accuracy (shuffled within types)"] = probe(perms[0])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="snare_thirds", choices=("snare_thirds", "sim10k"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scamort-epochs", type=int, default=None, help="default: scamort's own")
    p.add_argument("--multivi-epochs", type=int, default=150)
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "batch_mixing.jsonl")
    args = p.parse_args(argv)
    args.cache.mkdir(exist_ok=True)
    _, split, key = load(args.dataset, args.seed)
    batch = split.obs["batch"].astype(str).to_numpy()
    types = split.obs[key].astype(str).to_numpy()
    rng = np.random.default_rng(args.seed)
    embeddings = {}
    for method, epochs in (("scamort", args.scamort_epochs), ("multivi", args.multivi_epochs)):
        name = f"{method}, {epochs or 'default'} epochs"
        path = args.cache / f"{args.dataset}_{method}_{epochs or 'default'}_seed{args.seed}.npy"
        if not path.exists():
            np.save(path, in_fresh_process(fit_latent, args.dataset, method, args.seed, epochs))
        embeddings[name] = np.load(path)
    n_types = len(np.unique(types))
    onehot = np.eye(n_types)[np.unique(types, return_inverse=True)[1]]
    embeddings["reference: Gaussian noise"] = rng.normal(size=(len(batch), 20))
    embeddings["reference: cell-type one-hot + noise"] = 3 * onehot + rng.normal(
        scale=0.3, size=onehot.shape
    )
    for name, z in embeddings.items():
        row = {"dataset": args.dataset, "seed": args.seed, "embedding": name}
        row.update(mixing_scores(z, batch, types, args.seed))
        append_row(args.out, row)


if __name__ == "__main__":
    main()
