"""scvi-tools' conventions: setup returns None and shows what it registered, long steps
show progress (and hide it when asked), get_novelty reads what load_query_data reads."""

import numpy as np
import pytest

import scamort
from scamort import SCAMORT


def test_setup_returns_none_and_shows_what_it_registered(tiny_mdata, capsys):
    assert SCAMORT.setup_mudata(tiny_mdata, batch_key="batch") is None
    spec = SCAMORT.get_setup(tiny_mdata)
    assert len(repr(spec)) < 200 and "rna: rna, 60 features" in repr(spec)
    SCAMORT.view_setup(tiny_mdata)
    shown = capsys.readouterr().out
    status = tiny_mdata.obs["modality"].value_counts()
    assert f"cells with rna + atac: {status['paired']}" in shown
    assert f"cells with atac: {status['atac_only']}" in shown
    assert "obs['batch']: 2 categories" in shown
    model = SCAMORT(tiny_mdata)
    model.view_anndata_setup()
    assert capsys.readouterr().out == shown


class _Bars:
    """Records the progress bars the package opens."""

    def __init__(self, monkeypatch):
        import scamort._progress

        self.opened = []
        real = scamort._progress.bar

        def recording(**kw):
            self.opened.append(kw)
            return real(**{**kw, "disable": True})

        monkeypatch.setattr(scamort._progress, "bar", recording)


def test_long_steps_show_progress_unless_asked_not_to(tiny_mdata, monkeypatch):
    SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata)
    model.train(max_epochs=2, progress_bar=False)
    bars = _Bars(monkeypatch)
    model.get_latent_representation(refine_steps=3)
    model.get_gaps(indices=range(10), converge_steps=10, steps=(5,), iw_samples=8)
    model.get_elbo()
    model.get_normalized_expression()
    model.get_novelty(refine_steps=2)
    labels = [kw["desc"] for kw in bars.opened]
    assert labels[:4] == [
        "refining posteriors (3 steps)",
        "amortization gaps",
        "ELBO",
        "normalized rna",
    ]
    assert "novelty: calibrating on the training cells (once)" in labels
    assert all(kw["unit"] == "cells" and kw["delay"] > 0 for kw in bars.opened)
    assert bars.opened[0]["total"] == tiny_mdata.n_obs and bars.opened[1]["total"] == 10
    bars.opened.clear()
    model.get_latent_representation(refine_steps=3, progress_bar=False)
    model.get_gaps(indices=range(10), converge_steps=10, steps=(5,), progress_bar=False)
    model.get_novelty(refine_steps=2, progress_bar=False)
    model.differential_expression(groupby="cell_type", silent=True, n_samples_overall=50)
    assert bars.opened == []


def test_novelty_reads_the_queries_load_query_data_reads(tiny_mdata):
    """An AnnData of one modality of a MuData model: modality= names it, as in
    load_query_data; its features are matched by name; unseen batches point to the
    query model."""
    SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata)
    model.train(max_epochs=3, progress_bar=False)
    rna = tiny_mdata["rna"].copy()
    rna.obs["batch"] = tiny_mdata.obs.loc[rna.obs_names, "batch"].to_numpy()
    rna = rna[:, ::-1].copy()  # features in another order
    scores = model.get_novelty(rna, modality="rna", refine_steps=0)
    joint = model.get_novelty(refine_steps=0)
    assert list(scores.index) == list(rna.obs_names)
    assert np.isfinite(scores["novelty"]).all()
    # an RNA-only cell scored from the AnnData is the same cell as in the MuData
    only = tiny_mdata.obs_names[tiny_mdata.obs["modality"] == "rna_only"][:5]
    np.testing.assert_allclose(
        scores.loc[only, "elbo"], joint.loc[only, "elbo"], rtol=1e-4, atol=1e-3
    )
    rna.obs["batch"] = "a new batch"
    with pytest.raises(scamort.DataError, match="load_query_data"):
        model.get_novelty(rna, modality="rna")


def test_load_without_data_says_what_to_pass(tiny_mdata, tmp_path):
    SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata)
    model.save(tmp_path / "m")
    with pytest.raises(scamort.DataError, match=r"pass the MuData.*'rna' \(60 features\)"):
        SCAMORT.load(tmp_path / "m")
