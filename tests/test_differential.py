"""Differential expression and accessibility against the simulator's truth.

The simulator here drives 30 % of the genes and peaks by the latent state
(``frac_informative=0.3``); the others have one mean in every cell type. Its
``varm["true_profile"]`` gives each feature's true mean per type, hence the true
log2 fold change between two types. Normalized expression is compositional (a softmax),
so nearly every gene moves a little between types; the truth used for calls is a clear
change, |true LFC| > 1, which 23 % of the genes (and 23 % of the peaks) have between
type_0 and type_1. A ranking or a set of calls that knew nothing would score that base
rate: the bars below sit well above it and below what a trained model reaches (noted
beside each). Seeds are fixed.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import scamort

FDR = "is_de_fdr_0.05"


@pytest.fixture(scope="module")
def sparse_truth():
    mdata = scamort.datasets.simulate_multiome(
        n_cells=1500, n_genes=500, n_peaks=3000, seed=0, frac_informative=0.3
    )
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = scamort.SCAMORT(mdata, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    return mdata, model


def _true_lfc(mdata, modality, a="type_0", b="type_1"):
    t = mdata[modality].varm["true_profile"]
    return np.log2(t[a] / t[b])


def test_de_calls_between_two_types_find_the_true_changes(sparse_truth):
    mdata, model = sparse_truth
    de = model.differential_expression(
        groupby="cell_type", group1="type_0", group2="type_1", delta=0.5
    )
    assert len(de) == mdata["rna"].n_vars
    for col in ("proba_de", "bayes_factor", "lfc_mean", "lfc_median", "scale1", "scale2",
                "raw_mean1", "non_zeros_proportion2", FDR, "comparison"):  # fmt: skip
        assert col in de
    truth = (_true_lfc(mdata, "rna").abs() > 1).reindex(de.index)
    calls = de[FDR]
    assert truth.mean() < 0.3  # the base rate a blind caller would score
    assert calls.sum() >= 10
    assert truth[calls].mean() >= 0.8  # precision; measured 0.94
    assert calls[truth].mean() >= 0.15  # recall at 5 % FDR; measured 0.26
    assert roc_auc_score(truth, de["proba_de"]) >= 0.8  # measured 0.87
    # the estimated fold change has the sign of the true one where the change is clear
    sign = np.sign(de.loc[truth, "lfc_mean"]) == np.sign(
        _true_lfc(mdata, "rna")[truth[truth].index]
    )
    assert sign.mean() > 0.9


def test_a_null_comparison_calls_almost_nothing(sparse_truth):
    mdata, model = sparse_truth
    cells = np.flatnonzero(mdata.obs["cell_type"] == "type_0")
    np.random.default_rng(0).shuffle(cells)
    half = len(cells) // 2
    de = model.differential_expression(idx1=cells[:half], idx2=cells[half:], delta=0.5)
    da = model.differential_accessibility(idx1=cells[:half], idx2=cells[half:], delta=1.0)
    assert de[FDR].mean() <= 0.01 and da["is_da_fdr"].mean() <= 0.01


def test_atac_only_cells_get_markers_from_their_imputed_expression(sparse_truth):
    mdata, model = sparse_truth
    status = mdata.obs["modality"].to_numpy()
    types = mdata.obs["cell_type"].to_numpy()
    atac_only = status == "atac_only"
    de = model.differential_expression(
        idx1=atac_only & (types == "type_0"), idx2=atac_only & (types == "type_1"), delta=0.5
    )
    truth = (_true_lfc(mdata, "rna").abs() > 1).reindex(de.index)
    assert roc_auc_score(truth, de["proba_de"]) >= 0.8  # measured 0.90
    assert de["raw_mean1"].isna().all()  # none of these cells measured RNA
    with pytest.raises(ValueError, match="idx1 holds no cells that measured 'rna'"):
        model.differential_expression(
            idx1=atac_only & (types == "type_0"),
            idx2=atac_only & (types == "type_1"),
            observed_only=True,
        )


def test_observed_only_uses_the_cells_that_measured_the_modality(sparse_truth):
    mdata, model = sparse_truth
    de = model.differential_expression(
        groupby="cell_type", group1="type_0", group2="type_1", observed_only=True
    )
    rna = mdata["rna"]
    types = mdata.obs.loc[rna.obs_names, "cell_type"].to_numpy()
    X = rna[types == "type_0"].X
    np.testing.assert_allclose(
        de["raw_mean1"].reindex(rna.var_names), np.asarray(X.mean(0)).ravel(), rtol=1e-5
    )


def test_da_calls_and_multivi_columns(sparse_truth):
    mdata, model = sparse_truth
    da = model.differential_accessibility(
        groupby="cell_type", group1="type_0", group2="type_1", delta=1.0
    )
    assert list(da.columns[:9]) == [
        "prob_da", "is_da_fdr", "bayes_factor", "effect_size", "emp_effect",
        "est_prob1", "est_prob2", "emp_prob1", "emp_prob2",
    ]  # fmt: skip
    assert ((da["est_prob1"] >= 0) & (da["est_prob1"] <= 1)).all()
    truth = (_true_lfc(mdata, "atac").abs() > 1).reindex(da.index)
    calls = da["is_da_fdr"]
    assert calls.sum() >= 10 and truth[calls].mean() >= 0.8  # measured 0.95; base 0.24
    t = mdata["atac"].varm["true_profile"]
    moved = ((t["type_0"] - t["type_1"]).abs() > 0.02).reindex(da.index)
    assert roc_auc_score(moved, da["effect_size"].abs()) >= 0.8  # measured 0.88


def test_one_vs_rest_and_bad_arguments(sparse_truth):
    mdata, model = sparse_truth
    de = model.differential_expression(groupby="cell_type", delta=0.5)
    assert sorted(de["comparison"].unique()) == [f"type_{i} vs Rest" for i in range(6)]
    assert len(de) == 6 * mdata["rna"].n_vars
    with pytest.raises(ValueError, match="groupby='tissue' is not a column"):
        model.differential_expression(groupby="tissue")
    with pytest.raises(ValueError, match="mode="):
        model.differential_expression(groupby="cell_type", mode="bayes")
    with pytest.raises(ValueError, match=r"groups \['type_9'\] of 'cell_type' have no cells"):
        model.differential_expression(groupby="cell_type", group1="type_9")
