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
  batch from the embedding, next to ``(shuffled within types)``;
- per cell type (the models' embeddings): scib-metrics' graph connectivity of the type
  (the share of its cells in the largest strongly connected piece of the 90-NN graph
  restricted to the type), and the share of same-type cells among the 15 nearest
  neighbours of its cells that have RNA and of its ATAC-only cells. The report lists
  the types whose connectivity is below 0.95 in some embedding: where the overall
  graph connectivity is lost.

Embeddings: scamort at ``--scamort-epochs`` (default: its own) and MULTIVI at
``--multivi-epochs`` (its set-up through ``--multivi-options``) on a data set of
``quality.py`` (its fits, each in a fresh process, latents cached in ``--cache``), and
two references with no batch signal at all: isotropic Gaussian noise, and a one-hot of
the cell type plus noise; on the simulator also its true latent state. On the
separate-experiment designs (``snare_libraries``, ``sim_experiments``) every batch
measure is taken within each experiment and averaged over them, as quality.py's
``iLISI batch within blocks``: across experiments, batch is confounded with modality.
Rows go to ``docs/batch_mixing.jsonl``; the tables between the ``batch_mixing`` markers of
``docs/design_notes.md`` are rewritten from all rows (``--report`` does only that).

    python benchmarks/studies/batch_mixing.py --dataset snare_thirds --multivi-epochs 150
    python benchmarks/studies/batch_mixing.py --dataset sim10k --scamort-epochs 20 \
        --multivi-epochs 20
    python benchmarks/studies/batch_mixing.py --dataset snare_libraries --multivi-epochs 150 \
        --multivi-tag "library batch, no modality covariate, every cell trained on" \
        --multivi-options '{"multivi": {"modality_covariate": false},
                            "train": {"early_stopping": false, "train_size": 1.0}}'

``--embedding NAME=PATH`` scores a joint embedding that quality.py saved (its
``--latents`` folder, key ``joint``) under the label NAME, without refitting; GLUE's
fits, for one, take hours.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from harness import (
    CACHE,
    DOCS,
    append_row,
    bench_process,
    in_fresh_process,
    read_rows,
    replace_block,
)
from scores import _neighbors, ilisi_against_ceiling, mixable_blocks, shuffled_within, true_latent


def fit_latent(
    dataset: str, method: str, seed: int, epochs: int | None, options: dict
) -> np.ndarray:
    """The joint latent of one fit (in the calling process)."""
    from fits import fit_multivi, fit_scamort

    bench_process()
    _, split, _ = load(dataset, seed)
    fit = fit_scamort if method == "scamort" else fit_multivi
    return fit(split, epochs, seed, **options)["joint"]


def per_type_scores(nn, types: np.ndarray, status: np.ndarray) -> dict:
    """For each cell type: its graph connectivity (as scib-metrics computes it, before
    the mean over types) and the same-type share among the 15 nearest neighbours of its
    cells with RNA and of its ATAC-only cells. ``nn``: the embedding's 90 neighbours."""
    from scipy.sparse.csgraph import connected_components

    graph = nn.knn_graph_distances
    same = (types[nn.indices[:, 1:16]] == types[:, None]).mean(1)
    atac_only = status == "atac_only"
    out = {}
    for t in np.unique(types):
        keep = types == t
        _, comps = connected_components(graph[keep][:, keep], connection="strong")
        out[t] = {
            "cells": int(keep.sum()),
            "graph connectivity": float(np.bincount(comps).max() / keep.sum()),
            "same-type 15-NN, cells with RNA": float(same[keep & ~atac_only].mean()),
            "same-type 15-NN, ATAC-only cells": float(same[keep & atac_only].mean()),
        }
    return out


def mixing_scores(z: np.ndarray, nn, batch: np.ndarray, types: np.ndarray, seed: int) -> dict:
    """The batch measures of the module docstring; ``nn``: the 90 neighbours of ``z``."""
    import scib_metrics
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    perms = [shuffled_within(batch, types, rng) for _ in range(5)]

    def same(b):
        return float((b[nn.indices[:, 1:31]] == b[:, None]).mean())

    def probe(b):
        clf = LogisticRegression(max_iter=500)
        return float(cross_val_score(clf, StandardScaler().fit_transform(z), b, cv=5).mean())

    ilisi, ceiling = ilisi_against_ceiling(nn, batch, perms)
    out = {"iLISI batch": ilisi, "iLISI batch, shuffled within cell types": ceiling}
    out["iLISI / its ceiling"] = out["iLISI batch"] / out["iLISI batch, shuffled within cell types"]
    out["same-batch neighbours"] = same(batch)
    out["same-batch neighbours (shuffled within types)"] = float(np.mean([same(b) for b in perms]))
    out["batch ASW"] = float(scib_metrics.silhouette_batch(z, types, batch))
    out["batch probe accuracy"] = probe(batch)
    out["batch probe accuracy (shuffled within types)"] = probe(perms[0])
    return out


def block_scores(z: np.ndarray, obs, key: str, seed: int) -> dict:
    """The batch measures within each experiment (``obs["dataset"]``) that has more than
    one batch, averaged over those experiments (as quality.py's ``iLISI batch within
    blocks``): across experiments, batch is confounded with modality status."""
    batch = obs["batch"].astype(str).to_numpy()
    types = obs[key].astype(str).to_numpy()
    per_block = [
        mixing_scores(z[keep], _neighbors(z[keep]), batch[keep], types[keep], seed)
        for keep in mixable_blocks(obs)
    ]
    return {k: float(np.mean([b[k] for b in per_block])) for k in per_block[0]}


def report(rows: list[dict]) -> str:
    """One markdown table per data set: a column per embedding, a row per measure."""
    parts = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        names = [f"{r['embedding']} (seed {r['seed']})" for r in sub]
        measures = [
            k for k in sub[0] if k not in ("dataset", "seed", "embedding", "per type", "scope")
        ]
        scope = " (within each experiment, averaged)" if "scope" in sub[0] else ""
        lines = [f"### {dataset}{scope}\n", "| measure | " + " | ".join(names) + " |"]
        lines.append("|---" * (len(names) + 1) + "|")
        lines += [f"| {k} | " + " | ".join(f"{r[k]:.3f}" for r in sub) + " |" for k in measures]
        parts.append("\n".join(lines) + "\n")
        parts.append(_per_type_table([r for r in sub if "per type" in r]))
    return "\n".join(p for p in parts if p)


def _per_type_table(rows: list[dict]) -> str:
    """The cell types whose graph connectivity is below 0.95 in some embedding."""
    if not rows:
        return ""
    types = [
        t
        for t in rows[0]["per type"]
        if min(r["per type"][t]["graph connectivity"] for r in rows) < 0.95
    ]
    if not types:
        return ""
    keys = list(rows[0]["per type"][types[0]])[1:]
    head = [f"{r['embedding']}: {k}" for r in rows for k in keys]
    lines = [
        "Cell types whose graph connectivity is below 0.95 in some embedding:\n",
        "| cell type | cells | " + " | ".join(head) + " |",
        "|---" * (len(head) + 2) + "|",
    ]
    for t in types:
        vals = [f"{r['per type'][t][k]:.2f}" for r in rows for k in keys]
        lines.append(f"| {t} | {rows[0]['per type'][t]['cells']} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dataset",
        default="snare_thirds",
        choices=("snare_thirds", "sim10k", "snare_libraries", "sim_experiments"),
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scamort-epochs", type=int, default=None, help="default: scamort's own")
    p.add_argument("--multivi-epochs", type=int, default=150)
    p.add_argument(
        "--scamort-options",
        default="{}",
        help='JSON {"model": {...}, "train": {...}} for the scamort fit (needs --tag)',
    )
    p.add_argument("--tag", default="", help="label of the scamort variant")
    p.add_argument(
        "--multivi-options",
        default="{}",
        help='JSON {"multivi": {...}, "train": {...}} for the MULTIVI fit (needs --multivi-tag)',
    )
    p.add_argument("--multivi-tag", default="", help="label of the MULTIVI set-up")
    p.add_argument(
        "--methods", nargs="*", default=["scamort", "multivi"], choices=["scamort", "multivi"]
    )
    p.add_argument(
        "--embedding",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also score the joint embedding saved by quality.py at PATH, labelled NAME",
    )
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, default=DOCS / "batch_mixing.jsonl")
    p.add_argument("--doc", type=Path, default=DOCS / "design_notes.md")
    p.add_argument("--report", action="store_true", help="only rewrite the markdown tables")
    args = p.parse_args(argv)
    if not args.report:
        run(args)
    replace_block(args.doc, "batch_mixing", report(read_rows(args.out)))


def run(args) -> None:
    args.cache.mkdir(exist_ok=True)
    full, split, key = load(args.dataset, args.seed)
    batch = split.obs["batch"].astype(str).to_numpy()
    types = split.obs[key].astype(str).to_numpy()
    rng = np.random.default_rng(args.seed)
    embeddings = {}
    options = {"scamort": json.loads(args.scamort_options)}
    options["multivi"] = json.loads(args.multivi_options)
    tags = {"scamort": args.tag, "multivi": args.multivi_tag}
    for method in options:
        if options[method] and not tags[method]:
            raise SystemExit(f"--{method}-options needs a tag that names the set-up")
    for method, epochs in (("scamort", args.scamort_epochs), ("multivi", args.multivi_epochs)):
        if method not in args.methods:
            continue
        tag = f" [{tags[method]}]" if tags[method] else ""
        name = f"{method}{tag}, {epochs or 'default'} epochs"
        slug = "".join(c if c.isalnum() else "_" for c in tag)
        path = (
            args.cache / f"{args.dataset}_{method}{slug}_{epochs or 'default'}_seed{args.seed}.npy"
        )
        if not path.exists():
            opts = options[method]
            z = in_fresh_process(fit_latent, args.dataset, method, args.seed, epochs, opts)
            np.save(path, z)
        embeddings[name] = np.load(path)
    for item in args.embedding:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--embedding takes NAME=PATH, got {item!r}")
        z = np.load(path)["joint"]
        if len(z) != len(batch):
            raise SystemExit(f"{path} embeds {len(z)} cells; {args.dataset} has {len(batch)}")
        embeddings[name] = z
    truth = true_latent(full, split)
    if truth is not None:  # simulations: what a perfect embedding scores
        embeddings["reference: the true latent state"] = truth
    n_types = len(np.unique(types))
    onehot = np.eye(n_types)[np.unique(types, return_inverse=True)[1]]
    embeddings["reference: Gaussian noise"] = rng.normal(size=(len(batch), 20))
    embeddings["reference: cell-type one-hot + noise"] = 3 * onehot + rng.normal(
        scale=0.3, size=onehot.shape
    )
    status = split.obs["modality"].astype(str).to_numpy()
    done = {(r["dataset"], r["seed"], r["embedding"]) for r in read_rows(args.out)}
    for name, z in embeddings.items():
        if (args.dataset, args.seed, name) in done:
            continue
        row = {"dataset": args.dataset, "seed": args.seed, "embedding": name}
        nn = _neighbors(z)
        if "dataset" in split.obs:
            row["scope"] = "within blocks"
            row.update(block_scores(z, split.obs, key, args.seed))
        else:
            row.update(mixing_scores(z, nn, batch, types, args.seed))
        if not name.startswith("reference"):
            row["per type"] = per_type_scores(nn, types, status)
        append_row(args.out, row)


if __name__ == "__main__":
    main()
