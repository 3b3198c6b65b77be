"""Integration metrics on an embedding: clustering, modality matching, label transfer."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier


def foscttm(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    """Fraction Of Samples Closer Than the True Match, averaged over both directions.

    ``x[i]`` and ``y[i]`` embed the same cell from two modalities. For each cell, the
    fraction of the other modality's cells that are closer than its true partner;
    0 is a perfect match, about 0.5 is random. Computed in row chunks (O(chunk * n) memory).
    """
    return float(foscttm_per_cell(x, y, chunk).mean())


def foscttm_per_cell(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Each cell's FOSCTTM (see :func:`foscttm`, whose value is their mean): the
    fraction of the other cells closer than its true partner, averaged over the two
    directions (from its ``x`` row to the ``y`` rows, and from its ``y`` row)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y must be paired rows of the same shape: {x.shape} vs {y.shape}")
    n = len(x)
    true = np.sqrt(((x - y) ** 2).sum(1))
    out = np.zeros(n)
    for a, b in ((x, y), (y, x)):
        for s in range(0, n, chunk):
            d = _dist(a[s : s + chunk], b)
            # the true partner is not one of the others (its distance, computed another
            # way, can round below ``true``)
            rows = np.arange(len(d))
            d[rows, s + rows] = np.inf
            out[s : s + chunk] += (d < true[s : s + chunk, None]).sum(1) / (n - 1)
    return out / 2


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def label_transfer_accuracy(
    ref: np.ndarray, ref_labels, query: np.ndarray, query_labels, k: int = 15
) -> float:
    """Accuracy of a k-NN classifier fitted on ``ref`` cells, predicting ``query`` cells."""
    clf = KNeighborsClassifier(n_neighbors=min(k, len(ref))).fit(ref, np.asarray(ref_labels))
    return float((clf.predict(query) == np.asarray(query_labels)).mean())


def leiden_sweep(
    embedding: np.ndarray,
    labels,
    resolutions: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0),
    n_neighbors: int = 15,
    seed: int = 0,
) -> dict:
    """Leiden clusters at several resolutions; the best ARI and best NMI against ``labels``.

    Returns a dict: ``ari``, ``nmi``, ``resolution_ari``, ``resolution_nmi`` and the
    ``clusters`` at the best-ARI resolution.
    """
    return leiden_sweeps(embedding, {"": labels}, resolutions, n_neighbors, seed)[""]


def leiden_sweeps(
    embedding: np.ndarray,
    label_sets: dict,
    resolutions: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0),
    n_neighbors: int = 15,
    seed: int = 0,
) -> dict[str, dict]:
    """:func:`leiden_sweep` against several label sets ``{name: labels}`` at once: the
    neighbour graph and the clusters at each resolution are computed once."""
    import scanpy as sc

    a = ad.AnnData(np.zeros((len(embedding), 0), dtype=np.float32))
    a.obsm["X_emb"] = np.asarray(embedding, dtype=np.float32)
    sc.pp.neighbors(a, use_rep="X_emb", n_neighbors=n_neighbors, random_state=seed)
    sets = {name: np.asarray(labels) for name, labels in label_sets.items()}
    best = {name: {"ari": -1.0, "nmi": -1.0} for name in sets}
    for r in resolutions:
        sc.tl.leiden(
            a,
            resolution=r,
            key_added="c",
            random_state=seed,
            flavor="igraph",
            n_iterations=2,
            directed=False,
        )
        clusters = a.obs["c"].to_numpy()
        for name, labels in sets.items():
            ari = adjusted_rand_score(labels, clusters)
            nmi = normalized_mutual_info_score(labels, clusters)
            if ari > best[name]["ari"]:
                best[name].update(ari=float(ari), resolution_ari=r, clusters=clusters)
            if nmi > best[name]["nmi"]:
                best[name].update(nmi=float(nmi), resolution_nmi=r)
    return best


def _within_type(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row of ``x`` minus the mean of the rows with its label (float64)."""
    out = np.array(x, dtype=np.float64)
    for t in np.unique(labels):
        out[labels == t] -= out[labels == t].mean(0)
    return out


def latent_recovery(
    embedding: np.ndarray, truth: np.ndarray, labels, k: int = 15, cv: int = 5, seed: int = 0
) -> dict:
    """How much of a known latent state (a simulation's) an embedding keeps.

    Cluster measures (silhouette, iLISI) reward an embedding that shrinks every cell
    type to a point, which throws away the continuous variation inside the types. These
    two measures do not; both are 1 for the true latent itself:

    - ``r2_within``: the cross-validated R² of a linear regression predicting the true
      within-type deviations (``truth`` minus its cell type's mean) from the embedding's
      (``embedding`` minus its type's mean). 0: nothing of the within-type state is kept;
      1 also for any invertible linear map of the truth.
    - ``knn_kept``: the mean share of each cell's ``k`` nearest neighbours in ``truth``
      that are also among its ``k`` nearest neighbours in the embedding (chance: k / n);
      1 also for a rotation or uniform scaling of the truth.
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.neighbors import NearestNeighbors

    emb, truth = np.asarray(embedding, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    labels = np.asarray(labels)
    if len(emb) != len(truth) or len(emb) != len(labels):
        raise ValueError(
            f"embedding, truth and labels must have one row per cell: "
            f"{len(emb)}, {len(truth)}, {len(labels)}"
        )

    target = _within_type(truth, labels)
    folds = KFold(cv, shuffle=True, random_state=seed)
    pred = cross_val_predict(LinearRegression(), _within_type(emb, labels), target, cv=folds)
    r2 = 1.0 - ((pred - target) ** 2).sum() / (target**2).sum()

    def neighbours(x):
        return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)

    a, b = neighbours(truth)[:, 1:], neighbours(emb)[:, 1:]
    kept = (a[:, :, None] == b[:, None, :]).any(-1).mean()
    return {"r2_within": float(r2), "knn_kept": float(kept)}
