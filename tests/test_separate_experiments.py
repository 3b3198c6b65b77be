"""Separate experiments: a paired, an RNA-only and an ATAC-only experiment, each with its
own batches, cell-type proportions and batch-effect size (modality status confounded
with batch), from the simulator; scamort at its defaults integrates them."""

import pandas as pd
import pytest
from test_model import assert_history_finite, assert_meets_the_bars

import scamort


@pytest.fixture(scope="module")
def experiments():
    return scamort.datasets.simulate_multiome(
        n_cells=1800, n_genes=500, n_peaks=3000, n_batches=6, seed=0, separate_experiments=True
    )


def test_status_is_set_by_the_batch_and_proportions_differ(experiments):
    obs = experiments.obs
    status = pd.crosstab(obs["batch"], obs["modality"])
    assert ((status > 0).sum(1) == 1).all()  # one status per batch
    assert list(status.idxmax(1)) == ["paired", "rna_only", "atac_only"] * 2
    props = pd.crosstab(obs["batch"], obs["cell_type"], normalize="index")
    assert (props.max(0) - props.min(0)).max() > 0.15
    with pytest.raises(ValueError, match="n_batches >= 3"):
        scamort.datasets.simulate_multiome(n_cells=50, n_batches=2, separate_experiments=True)


def test_keep_hidden_returns_the_hidden_profiles_of_the_same_draw(experiments):
    """With ``keep_hidden`` every cell has both profiles; the measured ones, the status
    and the truth are those of the default draw (the hidden ones can score imputation)."""
    full = scamort.datasets.simulate_multiome(
        n_cells=1800, n_genes=500, n_peaks=3000, n_batches=6, seed=0,
        separate_experiments=True, keep_hidden=True,
    )  # fmt: skip
    assert full["rna"].n_obs == full["atac"].n_obs == full.n_obs == experiments.n_obs
    pd.testing.assert_frame_equal(full.obs, experiments.obs.loc[full.obs_names])
    for m in ("rna", "atac"):
        seen = experiments[m]
        assert (full[m][seen.obs_names].X != seen.X).nnz == 0
        hidden = full.obs_names.difference(seen.obs_names)
        assert len(hidden) > 0 and full[m][hidden].X.sum() > 0


def test_scamort_integrates_separate_experiments(experiments):
    """The bars of test_model.py (clusters, RNA-only -> ATAC-only label transfer across
    experiments, paired cells' single-modality embeddings) hold when status and batch
    are confounded (measured: ARI 0.73 / 0.89, transfer 0.88 / 0.78, FOSCTTM 0.002 /
    0.003 on seeds 0 / 1)."""
    scamort.SCAMORT.setup_mudata(experiments, batch_key="batch")
    model = scamort.SCAMORT(experiments, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    assert_meets_the_bars(model, experiments)
    assert_history_finite(model.history)
