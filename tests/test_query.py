"""Mapping new data onto a trained reference, and scoring the cells it does not explain."""

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_model import MIN_TRANSFER

import scamort
from scamort.data import DataError
from scamort.metrics import label_transfer_accuracy


def _subset(mdata, keep):
    cells = mdata.obs_names[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = md.MuData({m: mdata[m][mdata[m].obs_names.isin(cells)].copy() for m in mdata.mod})
    out.obs = mdata.obs.loc[out.obs_names].copy()
    return out


@pytest.fixture(scope="module")
def reference():
    """A reference trained on batch_0 (encoders read the batch, as for scArches); the
    query is batch_1, renamed as a batch the reference has never seen."""
    mdata = scamort.datasets.simulate_multiome(
        n_cells=2000, n_genes=500, n_peaks=3000, frac_paired=0.5, frac_rna_only=0.25, seed=0
    )
    batch = mdata.obs["batch"].astype(str).to_numpy()
    ref = _subset(mdata, batch == "batch_0")
    query = _subset(mdata, batch == "batch_1")
    query.obs["batch"] = "batch_new"
    for m in query.mod:
        query.mod[m].obs["batch"] = "batch_new"
    scamort.SCAMORT.setup_mudata(ref, batch_key="batch")
    model = scamort.SCAMORT(ref, encode_covariates=True, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    return ref, query, model


def _as_anndata(query, m):
    a = query[m].copy()
    a.obs = query.obs.loc[a.obs_names].copy()
    return a


@pytest.mark.parametrize("kind", ["paired", "rna", "atac"])
def test_query_trains_only_new_weights_and_lands_by_cell_type(reference, kind):
    ref, query, model = reference
    data = query if kind == "paired" else _as_anndata(query, kind)
    qm = scamort.SCAMORT.load_query_data(data, model, modality=None if kind == "paired" else kind)
    assert qm.spec.categories[0] == ("batch_0", "batch_new")
    before = {k: v.clone() for k, v in qm.module.state_dict().items()}
    qm.train(max_epochs=20, seed=0, progress_bar=False)
    after = qm.module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".cov." in k for k in changed)
    for k in changed:  # the reference's batch column stayed; the new one moved
        assert torch.equal(before[k][:, 0], after[k][:, 0])
        assert not torch.equal(before[k][:, 1], after[k][:, 1])
    zq = qm.get_latent_representation()
    zr = model.get_latent_representation()
    types_q = query.obs.loc[qm._cells.obs_names, "cell_type"].to_numpy()
    acc = label_transfer_accuracy(zr, ref.obs["cell_type"].to_numpy(), zq, types_q)
    assert acc >= MIN_TRANSFER  # measured about 0.9
    # the reference itself is untouched
    for k, v in model.module.state_dict().items():
        if k in before and v.shape == before[k].shape and ".cov." not in k:
            assert torch.equal(v, before[k])


def test_query_features_are_matched_by_name(reference):
    ref, query, model = reference
    rna = _as_anndata(query, "rna")
    shuffled = rna[:, np.random.default_rng(0).permutation(rna.n_vars)].copy()
    q1 = scamort.SCAMORT.load_query_data(rna, model, modality="rna")
    q2 = scamort.SCAMORT.load_query_data(shuffled, model, modality="rna")
    assert (q1._cells.x["rna"] != q2._cells.x["rna"]).nnz == 0
    more = rna[:, :5].copy()
    more.var_names = [f"new_gene_{i}" for i in range(5)]
    wider = ad.concat([rna, more], axis=1, merge="first")
    wider.obs = rna.obs.copy()
    with pytest.warns(UserWarning, match="5 features the reference does not know"):
        q3 = scamort.SCAMORT.load_query_data(wider, model, modality="rna")
    assert (q3._cells.x["rna"] != q1._cells.x["rna"]).nnz == 0
    with pytest.raises(DataError, match=r"lacks 3 of the reference's 500 features.*gene_0"):
        scamort.SCAMORT.load_query_data(rna[:, 3:].copy(), model, modality="rna")
    with pytest.raises(DataError, match="say which with modality="):
        scamort.SCAMORT.load_query_data(rna, model)


def test_a_query_without_new_categories_has_nothing_to_train(reference):
    ref, _, model = reference
    qm = scamort.SCAMORT.load_query_data(ref, model)
    with pytest.raises(ValueError, match="nothing to train"):
        qm.train(max_epochs=1, progress_bar=False)
    np.testing.assert_allclose(
        qm.get_latent_representation(), model.get_latent_representation(), atol=1e-5
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_novelty_ranks_a_cell_type_the_reference_never_saw(seed, tmp_path):
    """type_5 is left out of the reference; 30 % of the other cells are held out with it.
    Bars: paired and ATAC-only cells' AUROC >= 0.8 (measured 0.88-0.93 on seeds 0 and
    1); all cells >= 0.65 (0.72 and 0.85): RNA alone reveals this simulator's held-out
    type less reliably (0.48 and 0.80), and an uninformative score gives 0.5."""
    mdata = scamort.datasets.simulate_multiome(n_cells=2000, n_genes=500, n_peaks=3000, seed=seed)
    held_out = (mdata.obs["cell_type"] == "type_5").to_numpy()
    in_query = np.random.default_rng(seed).random(mdata.n_obs) < 0.3
    ref, query = _subset(mdata, ~in_query & ~held_out), _subset(mdata, in_query)
    scamort.SCAMORT.setup_mudata(ref, batch_key="batch")
    model = scamort.SCAMORT(ref, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    scores = model.get_novelty(query, refine_steps=10)
    assert np.isfinite(scores.to_numpy()).all()
    novel = (query.obs.loc[scores.index, "cell_type"] == "type_5").to_numpy()
    status = query.obs.loc[scores.index, "modality"].to_numpy()
    for s in ("paired", "atac_only"):
        assert roc_auc_score(novel[status == s], scores["novelty"][status == s]) >= 0.8
    assert roc_auc_score(novel, scores["novelty"]) >= 0.65
    # training-like cells score near 0
    assert abs(np.median(scores["novelty"][~novel])) < 1.0
    model.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", ref)
    assert loaded._calibration == model._calibration


def test_mapping_a_query_computes_nothing_for_novelty_until_asked(reference, tmp_path):
    """load_query_data defers the reference's novelty calibration to the first
    get_novelty; computed then, on the reference's training cells, it is the
    reference's own, and a saved query model keeps it."""
    ref, query, model = reference
    model._calibration = None  # as a freshly trained reference
    qm = scamort.SCAMORT.load_query_data(query, model)
    assert qm._calibration is None and model._calibration is None
    qm.train(max_epochs=3, progress_bar=False)
    scores = qm.get_novelty(refine_steps=0)
    assert np.isfinite(scores.to_numpy()).all()
    own = scamort.model.novelty.novelty_calibration(model)
    assert qm._calibration.keys() == own.keys()
    for pattern, fit in own.items():
        np.testing.assert_allclose(qm._calibration[pattern]["coef"], fit["coef"], rtol=1e-4)
        assert qm._calibration[pattern]["cells"] == fit["cells"]
    qm._calibration = None  # saving a query model calibrates it, since its cells are not saved
    qm.save(tmp_path / "q")
    loaded = scamort.SCAMORT.load(tmp_path / "q", query)
    assert loaded._calibration.keys() == own.keys()
