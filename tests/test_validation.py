"""Every bad input fails at setup (or load) with an error that names the problem and the fix."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_same, fingerprint

import scamort
from scamort import SCAMORT, DataError


def _setup(mdata, modalities=None, **kw):
    """Set up ``mdata`` and return what was registered."""
    SCAMORT.setup_mudata(mdata, modalities, **kw)
    return SCAMORT.get_setup(mdata)


def _set_value(mdata, mod, value, dense=False):
    X = mdata[mod].X.astype(np.float64)
    X = X.toarray() if dense else X.tolil()
    X[0, 0] = value
    mdata.mod[mod].X = X if dense else X.tocsr()


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize(
    "value,message",
    [(0.5, "non-integer"), (-1.0, "negative"), (np.nan, "NaN or inf"), (np.inf, "NaN or inf")],
)
def test_bad_count_values(tiny_mdata, value, message, dense):
    _set_value(tiny_mdata, "rna", value, dense)
    with pytest.raises(DataError, match=message) as err:
        _setup(tiny_mdata)
    assert "raw counts" in str(err.value) and "'rna'" in str(err.value)


def _registered_counts(mdata):
    from scamort.model.registry import registered as _registered

    _setup(mdata)
    return _registered(mdata)[1].x


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.toarray().astype(np.float32),  # dense integer-valued floats
        lambda X: X.toarray().astype(np.int64),  # dense integers
        sp.csc_matrix,  # CSC
        sp.csr_array,  # the sparse-array API
    ],
)
def test_other_count_formats_register_the_same_counts(tiny_mdata, convert):
    want = _registered_counts(tiny_mdata)
    other = tiny_mdata.copy()
    other.mod["rna"].X = convert(tiny_mdata["rna"].X)
    other.mod["atac"].X = convert(tiny_mdata["atac"].X)
    got = _registered_counts(other)
    for m in ("rna", "atac"):
        assert got[m].dtype == np.float32 and got[m].shape == want[m].shape
        assert (got[m] != want[m]).nnz == 0


def test_missing_layer_and_keys(tiny_mdata):
    with pytest.raises(DataError, match="layer 'counts' not found in modality 'rna'"):
        _setup(tiny_mdata, {"rna": scamort.Modality("rna", layer="counts"), "atac": "atac"})
    with pytest.raises(DataError, match="key 'sample' not found"):
        _setup(tiny_mdata, batch_key="sample")
    with pytest.raises(DataError, match="key 'donor' not found"):
        _setup(tiny_mdata, categorical_covariate_keys=["donor"])
    with pytest.raises(DataError, match=r"modality 'gex' not found .*modalities="):
        _setup(tiny_mdata, {"gex": "rna"})
    with pytest.raises(DataError, match="no modality"):
        _setup(tiny_mdata, {})


def test_missing_batch_values(tiny_mdata):
    tiny_mdata.obs["batch"] = tiny_mdata.obs["batch"].astype(object)
    tiny_mdata.obs.iloc[3, tiny_mdata.obs.columns.get_loc("batch")] = None
    with pytest.raises(DataError, match="missing for 1 cells"):
        _setup(tiny_mdata, batch_key="batch")


def test_batch_key_read_from_modalities_when_not_global(tiny_mdata):
    del tiny_mdata.obs["batch"]
    spec = _setup(tiny_mdata, batch_key="batch")
    assert spec.categories[0] == ("batch_0", "batch_1")
    tiny_mdata.mod["rna"].obs["batch"] = "batch_9"  # disagrees with atac for paired cells
    with pytest.raises(DataError, match="disagrees between modalities"):
        _setup(tiny_mdata, batch_key="batch")


def test_duplicate_names(tiny_mdata):
    rna = tiny_mdata.mod["rna"]
    names = rna.var_names.tolist()
    names[1] = names[0]
    rna.var_names = names
    with pytest.raises(DataError, match=r"duplicate var_names.*var_names_make_unique"):
        _setup(tiny_mdata)


def test_duplicate_obs_names(tiny_mdata):
    atac = tiny_mdata.mod["atac"]
    names = atac.obs_names.tolist()
    names[1] = names[0]
    atac.obs_names = names
    with pytest.raises(DataError, match=r"duplicate obs_names.*obs_names_make_unique"):
        _setup(tiny_mdata)


def test_cell_with_no_counts_in_its_modalities(tiny_mdata):
    rna_only = tiny_mdata.obs_names[tiny_mdata.obs["modality"] == "rna_only"][0]
    rna = tiny_mdata.mod["rna"]
    X = rna.X.tolil()
    X[rna.obs_names.get_loc(rna_only)] = 0
    rna.X = X.tocsr()
    with pytest.raises(DataError, match=rf"1 cells have zero counts.*{rna_only}.*filter_cells"):
        _setup(tiny_mdata)


def test_empty_modality_and_empty_features(tiny_mdata):
    tiny_mdata.mod["atac"] = tiny_mdata["atac"][:, :0].copy()
    with pytest.raises(DataError, match="modality 'atac' is empty"):
        _setup(tiny_mdata)


def test_empty_feature_is_kept_with_a_warning(tiny_mdata):
    rna = tiny_mdata.mod["rna"]
    X = rna.X.tolil()
    X[:, 5] = 0
    rna.X = X.tocsr()
    with pytest.warns(UserWarning, match=r"1 of 60 features of modality 'rna' .*gene_5"):
        spec = _setup(tiny_mdata)
    assert "gene_5" in spec.features[0]


def test_stale_mudata_is_refused(tiny_mdata):
    # a modality replaced by one with new cells, without mdata.update(): the MuData's
    # cell table no longer holds them
    rna = tiny_mdata["rna"].copy()
    rna.obs_names = [f"{c}-new" for c in rna.obs_names]
    tiny_mdata.mod["rna"] = rna
    assert not rna.obs_names.isin(tiny_mdata.obs_names).any()
    with pytest.raises(DataError, match=r"modality 'rna' are missing.*mdata.update\(\)"):
        _setup(tiny_mdata)
    tiny_mdata.update()
    assert _setup(tiny_mdata).modalities == ("rna", "atac")


def test_unregistered_objects_are_refused(tiny_mdata):
    with pytest.raises(DataError, match="not set up"):
        SCAMORT(tiny_mdata)
    with pytest.raises(DataError, match="not set up"):
        SCAMORT(tiny_mdata["rna"])


def test_bad_model_options(tiny_mdata):
    _setup(tiny_mdata)
    with pytest.raises(ValueError, match=r"\['bernoulli', 'poisson'\]"):
        scamort.Modality("atac", likelihood="nb")
    with pytest.raises(ValueError, match="atac modalities have no option 'dispersion'"):
        scamort.Modality("atac", dispersion="gene")
    with pytest.raises(ValueError, match="unknown kind of data 'prot'"):
        scamort.Modality("prot")
    with pytest.raises(TypeError, match="unexpected option 'cycle_wieght'"):
        SCAMORT(tiny_mdata, cycle_wieght=0.1)


def test_load_refuses_different_features_and_unknown_batches(tiny_mdata, tmp_path):
    _setup(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata, n_hidden=16)
    model.save(tmp_path / "m")
    other = tiny_mdata.copy()
    other.mod["atac"] = other["atac"][:, ::-1].copy()
    with pytest.raises(DataError, match=r"features of modality 'atac' do not match.*position 0"):
        SCAMORT.load(tmp_path / "m", other)
    fewer = tiny_mdata.copy()
    fewer.mod["rna"] = fewer["rna"][:, :-1].copy()
    with pytest.raises(DataError, match="features of modality 'rna' do not match"):
        SCAMORT.load(tmp_path / "m", fewer)
    new_batch = tiny_mdata.copy()
    new_batch.obs["batch"] = "batch_7"
    with pytest.raises(DataError, match=r"categories \['batch_7'\].*not trained on"):
        SCAMORT.load(tmp_path / "m", new_batch)
    with pytest.raises(DataError, match="MuData"):
        SCAMORT.load(tmp_path / "m", tiny_mdata["rna"])
    with pytest.raises(FileNotFoundError, match="no saved scamort model"):
        SCAMORT.load(tmp_path, tiny_mdata)


def test_user_data_is_never_modified(tiny_mdata):
    before = fingerprint(tiny_mdata)
    rna_before = fingerprint(tiny_mdata["rna"])
    _setup(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata, n_hidden=16)
    model.train(max_epochs=1, progress_bar=False)
    model.get_latent_representation(modality="atac")
    model.get_accessibility_estimates()
    assert_same(before, fingerprint(tiny_mdata))
    assert_same(rna_before, fingerprint(tiny_mdata["rna"]))


def test_simulator_rejects_bad_fractions():
    with pytest.raises(ValueError, match="frac_paired"):
        scamort.datasets.simulate_multiome(frac_paired=0.8, frac_rna_only=0.5)


def test_registration_is_dropped_with_the_object():
    import gc

    from scamort.model.registry import _REGISTRY

    mdata = scamort.datasets.simulate_multiome(n_cells=100, n_genes=20, n_peaks=40, seed=2)
    _setup(mdata)
    key = id(mdata)
    assert key in _REGISTRY
    del mdata
    gc.collect()
    assert key not in _REGISTRY
