"""Unusual data that must train: features without counts, a modality with few cells."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from test_model import MIN_ARI, assert_history_finite, assert_meets_the_bars

import scamort
from scamort.data.setup import EmptyFeaturesWarning
from scamort.metrics import leiden_sweep


def _empty_out(adata, cols):
    """Zero the columns ``cols`` of ``adata.X`` (stored zeros removed)."""
    X = sp.csr_matrix(adata.X, copy=True)
    X[:, cols] = 0
    X.eliminate_zeros()
    adata.X = X


@pytest.fixture(scope="module")
def holey():
    """The simulator's 1,500 cells with 5 % of genes and 5 % of peaks emptied."""
    mdata = scamort.datasets.simulate_multiome(n_cells=1500, n_genes=500, n_peaks=3000, seed=0)
    rng = np.random.default_rng(0)
    empty = {}
    for m in ("rna", "atac"):
        mod = mdata.mod[m]
        before = np.flatnonzero(np.asarray((mod.X > 0).sum(0)).ravel() == 0)
        cols = np.sort(rng.choice(mod.n_vars, size=mod.n_vars // 20, replace=False))
        _empty_out(mod, cols)
        empty[m] = np.union1d(cols, before)
    return mdata, empty


@pytest.fixture(scope="module")
def holey_model(holey):
    mdata, empty = holey
    with pytest.warns(EmptyFeaturesWarning) as record:
        scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = scamort.SCAMORT(mdata, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    return model, record


def test_empty_features_are_kept_and_counted_in_one_warning(holey, holey_model):
    mdata, empty = holey
    model, record = holey_model
    assert len(record) == 1
    msg = str(record[0].message)
    for m in ("rna", "atac"):
        n = mdata[m].n_vars
        assert f"{len(empty[m])} of {n} features of modality {m!r}" in msg
        assert model.config.n_features[m] == n
    assert mdata["rna"].var_names[empty["rna"][0]] in msg


def test_empty_features_train_to_the_quality_bars(holey, holey_model):
    mdata, _ = holey
    model, _ = holey_model
    assert_meets_the_bars(model, mdata)
    assert_history_finite(model.history.table)


def test_every_output_is_finite_and_empty_features_impute_near_zero(holey, holey_model, tmp_path):
    mdata, empty = holey
    model, _ = holey_model
    assert np.isfinite(model.get_elbo()).all()
    z, elbos = model.get_latent_representation(refine_steps=10, return_elbo=True)
    assert np.isfinite(z).all() and np.isfinite(elbos.to_numpy()).all()
    gaps = model.get_gaps(indices=np.arange(40), steps=(5,), converge_steps=20, iw_samples=16)
    assert np.isfinite(gaps.to_numpy()).all()
    expr = model.get_normalized_expression(library_size=1e4, return_numpy=True)
    acc = model.get_accessibility_estimates(return_numpy=True)
    assert np.isfinite(expr).all() and np.isfinite(acc).all()
    for values, cols in ((expr, empty["rna"]), (acc, empty["atac"])):
        kept = np.setdiff1d(np.arange(values.shape[1]), cols)
        # An emptied feature's imputed mean sits far below the features with counts:
        # below a tenth of their median, in every cell on average.
        assert values[:, cols].mean(0).max() < 0.1 * np.median(values[:, kept].mean(0))
    for p in model.module.parameters():
        assert torch_finite(p)
    model.save(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyFeaturesWarning)
        loaded = scamort.SCAMORT.load(tmp_path / "m", mdata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def torch_finite(p) -> bool:
    return bool(p.detach().isfinite().all())


@pytest.mark.parametrize("atac_input", ["tfidf"])
@pytest.mark.parametrize("atac_likelihood", ["bernoulli", "poisson"])
def test_empty_features_with_other_likelihoods_and_inputs(holey, atac_input, atac_likelihood):
    mdata, _ = holey
    declared = {
        "rna": scamort.Modality("rna", likelihood="zinb"),
        "atac": scamort.Modality("atac", likelihood=atac_likelihood, input=atac_input),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyFeaturesWarning)
        scamort.SCAMORT.setup_mudata(mdata, declared, batch_key="batch")
    model = scamort.SCAMORT(mdata, n_hidden=64)
    model.train(max_epochs=5, progress_bar=False)
    assert_history_finite(model.history.table)
    assert np.isfinite(model.get_latent_representation(refine_steps=3)).all()
    gaps = model.get_gaps(indices=np.arange(20), steps=(2,), converge_steps=5, iw_samples=8)
    assert np.isfinite(gaps.to_numpy()).all()


def test_a_modality_with_few_cells_trains():
    # 1,500 cells of which about 40 have ATAC (20 paired, 20 ATAC-only): most peaks are
    # empty among them. The RNA side must still recover the cell types.
    mdata = scamort.datasets.simulate_multiome(
        n_cells=1500, n_genes=500, n_peaks=1000, frac_paired=0.015, frac_rna_only=0.97, seed=3
    )
    assert mdata["atac"].n_obs < 60
    with pytest.warns(EmptyFeaturesWarning, match="modality 'atac'"):
        scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = scamort.SCAMORT(mdata, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    z = model.get_latent_representation()
    assert np.isfinite(z).all()
    types = mdata.obs["cell_type"].to_numpy()
    assert leiden_sweep(z, types)["ari"] >= MIN_ARI
    assert np.isfinite(model.get_accessibility_estimates(return_numpy=True)).all()
    assert np.isfinite(model.get_elbo()).all()
