"""Where an embedding's cell-type silhouette comes from: within or across experiments,
and how the embedding spreads its variance.

Cell-type silhouette rewards types that are tight against the distances between them.
A joint embedding can lose it in two ways: experiments that do not mix (one type's
cells from two experiments in two places), or types that are looser than they should be
inside every experiment. This reads embeddings saved by quality.py (``--latents``
folder, one .npz per fit) and scores, for each:

- ``silhouette``: cell-type silhouette of all cells (quality.py's);
- ``silhouette within experiments``: the same inside each experiment (``modality``
  status), averaged: what is left when no experiment has to mix with another;
- ``silhouette, within-type state cut to c directions`` (``--cut``, default 5): the
  silhouette of the embedding with each cell's deviation from its type's mean projected
  onto the ``c`` leading principal directions of those deviations: what an embedding
  scores that keeps only ``c`` dimensions of the state inside the types;
- ``between-type variance share``: the share of the embedding's total variance that
  lies between the type centres (1 when every type is a point);
- ``within-type variance the true state explains`` (simulations): the cross-validated
  R² of a linear regression predicting the embedding's within-type deviations from the
  true state's (the reverse of ``scamort.metrics.latent_recovery``'s ``r2_within``):
  what is left unexplained is variation inside the types that the true state does not
  have, i.e. noise, which loosens the types without keeping anything; per principal
  direction of those deviations, how many directions the true state explains at least
  half of, and the share of the within-type variance in directions it explains less
  than a tenth of;
- ``variance in the top k directions``: the share of the variance in the embedding's
  first k principal directions (k the number of dimensions of the simulator's true
  latent state, or 8), i.e. how evenly the embedding spreads its variance.

On a simulation the true latent state of the same cells is scored alike (``truth``).

    python benchmarks/studies/cluster_shape.py --dataset sim_experiments --seed 0 \\
        --latents benchmarks/.cache/latents --tags "default" "..."

Rows go to ``docs/cluster_shape.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from harness import DOCS, append_row, latent_path
from scores import true_latent

from scamort.metrics import _within_type  # each cell minus its type's mean


def cut_within(z: np.ndarray, types: np.ndarray, keep: int) -> np.ndarray:
    """The embedding with each cell's within-type deviation projected onto the first
    ``keep`` principal directions of those deviations (type means kept): what it would
    be had it kept only ``keep`` dimensions of the state inside the types."""
    from sklearn.decomposition import PCA

    deviations = _within_type(z, types)
    pca = PCA(keep).fit(deviations)
    return z - deviations + pca.inverse_transform(pca.transform(deviations))


def shape_scores(
    z: np.ndarray, types: np.ndarray, experiments: np.ndarray, k: int, cut: int
) -> dict:
    import scib_metrics

    within = [
        float(scib_metrics.silhouette_label(z[experiments == e], types[experiments == e]))
        for e in np.unique(experiments)
    ]
    centred = z - z.mean(0)
    within_total = float((_within_type(z, types) ** 2).sum())
    eig = np.linalg.eigvalsh(np.cov(centred, rowvar=False))[::-1]
    return {
        "silhouette": float(scib_metrics.silhouette_label(z, types)),
        "silhouette within experiments": float(np.mean(within)),
        f"silhouette, within-type state cut to {cut} directions": float(
            scib_metrics.silhouette_label(cut_within(z, types, cut), types)
        ),
        "between-type variance share": 1.0 - within_total / float((centred**2).sum()),
        f"variance in the top {k} directions": float(eig[:k].sum() / eig.sum()),
    }


def explained_within(z: np.ndarray, truth: np.ndarray, types: np.ndarray) -> dict:
    """The embedding's within-type deviations regressed on the true state's (linear,
    cross-validated over 5 folds): the R² over all of them, and per principal direction
    of the within-type deviations: how many directions the true state explains at least
    half of (the within-type state the embedding keeps, in dimensions), and the share of
    the within-type variance in directions it explains less than a tenth of (noise)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    target = PCA().fit_transform(_within_type(z, types))  # a rotation: the R² is kept
    folds = KFold(5, shuffle=True, random_state=0)
    pred = cross_val_predict(LinearRegression(), _within_type(truth, types), target, cv=folds)
    per = 1.0 - ((pred - target) ** 2).sum(0) / (target**2).sum(0)
    share = (target**2).sum(0) / (target**2).sum()
    return {
        "within-type variance the true state explains": float((share * per).sum()),
        "within-type directions the true state explains (R² >= 0.5)": int((per >= 0.5).sum()),
        "within-type variance in noise directions (R² < 0.1)": float(share[per < 0.1].sum()),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="sim_experiments")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latents", type=Path, required=True, help="quality.py's --latents folder")
    p.add_argument("--methods", nargs="+", default=["scamort", "multivi"])
    p.add_argument("--tags", nargs="+", default=["default"], help="quality.py tags")
    p.add_argument("--epochs", type=int, nargs="+", default=[0, 150], help="as in quality.py")
    p.add_argument("--cut", type=int, default=5, help="directions of within-type state kept")
    p.add_argument("--out", type=Path, default=DOCS / "cluster_shape.jsonl")
    args = p.parse_args(argv)
    full, split, key = load(args.dataset, args.seed)
    types = split.obs[key].astype(str).to_numpy()
    experiments = split.obs["modality"].astype(str).to_numpy()
    truth = true_latent(full, split)
    k = truth.shape[1] if truth is not None else 8
    fits = [("truth", None, None, truth)] if truth is not None else []
    for method in args.methods:
        for tag in args.tags:
            for epochs in args.epochs:
                path = latent_path(args.latents, args.dataset, method, args.seed, epochs, tag)
                if path.exists():
                    fits.append((method, tag, epochs, np.load(path)["joint"]))
    if len(fits) == (truth is not None):
        raise SystemExit(f"no saved embedding of {args.dataset} seed {args.seed} in {args.latents}")
    for method, tag, epochs, z in fits:
        row = {"dataset": args.dataset, "seed": args.seed, "method": method}
        if tag is not None:
            row.update(tag=tag, epochs=epochs)
        row.update(shape_scores(z, types, experiments, k, args.cut))
        if truth is not None:
            row.update(explained_within(z, truth, types))
        append_row(args.out, row)


if __name__ == "__main__":
    main()
