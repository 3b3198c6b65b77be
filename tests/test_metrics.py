import numpy as np
import pytest

from scamort.metrics import latent_recovery


@pytest.fixture
def clustered():
    rng = np.random.default_rng(0)
    labels = rng.integers(5, size=600)
    centres = rng.normal(0, 3, size=(5, 4))
    truth = centres[labels] + rng.normal(0, 0.5, size=(600, 4))
    return truth, labels, rng


def test_latent_recovery_is_one_for_the_truth_and_its_rotations(clustered):
    truth, labels, rng = clustered
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    for emb in (truth, 3.0 * truth @ q):
        out = latent_recovery(emb, truth, labels)
        assert out["r2_within"] == pytest.approx(1.0, abs=1e-6)
        assert out["knn_kept"] == pytest.approx(1.0)
    # a general linear map keeps the within-type state (R²) but not the neighbourhoods
    stretched = latent_recovery(truth @ np.diag([10, 1, 1, 0.1]), truth, labels)
    assert stretched["r2_within"] == pytest.approx(1.0, abs=1e-6)
    assert stretched["knn_kept"] < 0.8


def test_latent_recovery_exposes_collapsed_cell_types(clustered):
    truth, labels, rng = clustered
    # every type shrunk to its centre: the tightest clusters, no within-type state
    collapsed = np.stack([truth[labels == t].mean(0) for t in range(5)])[labels]
    collapsed = collapsed + rng.normal(0, 0.05, size=truth.shape)
    out = latent_recovery(collapsed, truth, labels)
    assert out["r2_within"] < 0.05
    assert out["knn_kept"] < 0.2  # chance within a type of ~120 cells: 15 / 120
    # half the within-type state replaced by noise sits in between
    noisy = truth + rng.normal(0, 0.5, size=truth.shape)
    mid = latent_recovery(noisy, truth, labels)
    assert 0.3 < mid["r2_within"] < 0.7
    assert out["knn_kept"] < mid["knn_kept"] < 1.0


def test_latent_recovery_rejects_mismatched_rows(clustered):
    truth, labels, _ = clustered
    with pytest.raises(ValueError, match="one row per cell"):
        latent_recovery(truth[:-1], truth, labels)


def test_foscttm_counts_only_the_other_cells():
    """Brute force over every pair: the fraction of the *other* cells closer than the true
    partner (the partner's own distance, computed two ways, must never count)."""
    from scamort.metrics import foscttm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * 100.0
    y = x + rng.normal(scale=80.0, size=x.shape)
    d = np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))
    off = ~np.eye(len(x), dtype=bool)
    true = np.diag(d)
    want = (((d < true[:, None]) & off).sum(1) + ((d < true[None, :]) & off).sum(0)).mean()
    assert foscttm(x, y, chunk=7) == pytest.approx(want / (2 * (len(x) - 1)))
    assert foscttm(x, x + 1e-9) == 0.0


def test_leiden_sweeps_score_several_label_sets_on_one_clustering():
    from scamort.metrics import leiden_sweep, leiden_sweeps

    rng = np.random.default_rng(0)
    types = np.repeat(np.arange(4), 50)
    z = rng.normal(size=(200, 5)) + 4 * np.eye(5)[types]
    coarse = types // 2
    both = leiden_sweeps(z, {"fine": types, "coarse": coarse})
    for name, labels in (("fine", types), ("coarse", coarse)):
        alone = leiden_sweep(z, labels)
        assert both[name]["ari"] == alone["ari"] and both[name]["nmi"] == alone["nmi"]
    assert both["fine"]["ari"] > 0.9  # four well-separated groups are found
