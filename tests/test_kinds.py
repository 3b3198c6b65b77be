"""Modalities declared once (scamort.Modality), kinds in a registry, the options one level
below SCAMORT() and train(), the deprecated spellings, and models saved by 0.1.0."""

import re
import warnings
from pathlib import Path

import mudata as md
import numpy as np
import pytest
import torch

import scamort
from scamort import SCAMORT, DataError, Modality
from scamort._cli import main
from scamort.kinds import KINDS, DecoderShape, kind_named, kind_of_10x

SAVED = Path(__file__).parent / "data" / "saved_0.1.0"
PACKAGE = Path(scamort.__file__).parent


def _renamed(tiny_mdata, names):
    out = md.MuData({new: tiny_mdata[old].copy() for old, new in names.items()})
    out.obs = tiny_mdata.obs.loc[out.obs_names].copy()
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_supplies_working_decoders_for_each_likelihood(kind):
    """Each registered likelihood's decoder scores counts finitely, and its normalized
    values are finite and non-negative (what get_normalized reports)."""
    entry = KINDS[kind]
    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((6, 12), 1.5), generator=g)
    counts[:, 0] = 1.0  # every cell has a count
    x = scamort.nn.SparseRows.from_dense(counts)
    shape = DecoderShape(4, 12, 2, 8, 1, 0.0, False, 2)
    for likelihood in entry.options.likelihoods:
        options = entry.options(likelihood=likelihood)
        dec = entry.decoder(options, shape)
        dec.eval()
        z, cov = torch.randn(6, 4, generator=g), torch.zeros(6, 2)
        batch = torch.zeros(6, dtype=torch.long)
        ll = dec.log_prob(z, cov, dec.log_size(x), batch, x)
        assert ll.shape == (6,) and torch.isfinite(ll).all() and (ll < 0).all()
        values = dec.normalized_mean(dec(z, cov, torch.zeros(6, 1), batch))
        assert values.shape == (6, 12) and torch.isfinite(values).all() and (values >= 0).all()
        read = entry.encoder_input(options, 12)(x)
        assert read.n_rows == 6 and torch.isfinite(read.val).all()


def test_kinds_are_recognised_by_their_names_and_10x_types():
    names = [n for k in KINDS.values() for n in k.names]
    assert len(names) == len(set(names)), "a name must say one kind"
    assert kind_named("GEX") == "rna" and kind_named("peaks") == "atac"
    assert kind_named("prot") is None
    assert kind_of_10x("Gene Expression") == "rna" and kind_of_10x("Peaks") == "atac"


def test_no_branch_on_a_kind_or_likelihood_outside_the_registry():
    """Code outside scamort/kinds asks the registry entry; it never compares a kind's or a
    likelihood's name (the CLI's old --rna-key / --atac-key aliases name kinds as data)."""
    names = "|".join(
        sorted({*KINDS, *(lik for k in KINDS.values() for lik in k.options.likelihoods)})
    )
    branch = re.compile(rf"""(==|!=|\bin)\s*\(?["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = []
    for path in PACKAGE.rglob("*.py"):
        # the datasets and the demo build and score RNA + ATAC data: they name kinds as data
        if {"kinds", "datasets"} & set(path.parts) or path.name == "_demo.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            condition = not line.strip().startswith("for ")  # a loop over named kinds is data
            if condition and branch.search(line) or "hasattr(dist" in line:
                found.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_setup_mudata_registers_every_modality_its_name_places(tiny_mdata):
    data = _renamed(tiny_mdata, {"rna": "gex", "atac": "chromatin"})
    SCAMORT.setup_mudata(data, batch_key="batch")
    spec = SCAMORT.get_setup(data)
    assert spec.modalities == ("gex", "chromatin") and spec.kinds == ("rna", "atac")
    assert spec.declaration("chromatin") == Modality("atac", name="chromatin")


def test_a_name_that_says_no_kind_is_refused_with_how_to_declare_it(tiny_mdata):
    data = _renamed(tiny_mdata, {"rna": "rna", "atac": "assay2"})
    with pytest.raises(DataError, match=r"modality 'assay2'.*modalities=\{'assay2': 'rna'"):
        SCAMORT.setup_mudata(data)
    SCAMORT.setup_mudata(data, {"rna": "rna", "assay2": "atac"})
    spec = SCAMORT.get_setup(data)
    assert spec.kinds == ("rna", "atac")


def test_a_declaration_sets_the_layer_the_likelihood_and_its_options(tiny_mdata):
    data = _renamed(tiny_mdata, {"rna": "gex", "atac": "peaks"})
    data["peaks"].layers["counts"] = data["peaks"].X.copy()
    data["peaks"].X = data["peaks"].X * 0  # .X is not what is fitted
    declared = {"gex": "rna", "peaks": Modality("atac", layer="counts", likelihood="poisson")}
    SCAMORT.setup_mudata(data, declared, batch_key="batch")
    model = SCAMORT(data, n_hidden=16)
    assert model.config.likelihoods == {"gex": "nb", "peaks": "poisson"}
    fitted, counts = model._cells.x["peaks"], data["peaks"].layers["counts"]
    assert fitted.sum() == counts.sum() > 0 and fitted.nnz == counts.nnz
    # a subset of the modalities: the cells measured in the others alone must go first
    with pytest.raises(DataError, match=r"in no modality registered \(\['gex'\]\)"):
        SCAMORT.setup_mudata(data, {"gex": "rna"})
    with_rna = data[data.obs_names.isin(data["gex"].obs_names)].copy()
    SCAMORT.setup_mudata(with_rna, {"gex": "rna"})
    assert SCAMORT.get_setup(with_rna).modalities == ("gex",)


def test_old_spellings_warn_once_each_and_equal_the_declared_form(tiny_mdata):
    data = _renamed(tiny_mdata, {"rna": "gex", "atac": "peaks"})
    data["gex"].layers["raw"] = data["gex"].X.copy()
    old = dict(rna_likelihood="zinb", dispersion="gene-batch", atac_likelihood="poisson")
    with pytest.warns(DeprecationWarning) as caught:
        SCAMORT.setup_mudata(data, rna_key="gex", atac_key="peaks", rna_layer="raw")
        model_old = SCAMORT(data, n_hidden=16, atac_input="binary", peak_sampling=None, **old)
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    for name in ("rna_key", "atac_key", "rna_layer", *old, "atac_input", "peak_sampling"):
        assert sum(f"({name}=...)" in m for m in messages) == 1, name
    assert all("Modality" in m or "modalities=" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        declared = {
            "gex": Modality("rna", layer="raw", likelihood="zinb", dispersion="gene-batch"),
            "peaks": Modality("atac", likelihood="poisson"),
        }
        SCAMORT.setup_mudata(data, declared)
        model_new = SCAMORT(data, n_hidden=16)
    assert model_old.config == model_new.config
    assert model_old.spec == model_new.spec


@pytest.mark.parametrize("name", ["zinb_poisson", "tfidf_sampled"])
def test_a_model_saved_by_0_1_0_loads_and_gives_the_same_results(tiny_mdata, name):
    """The fixtures were saved by scamort 0.1.0 (its configuration kept the likelihoods and
    the kinds' options at the top, and TF-IDF statistics as a buffer ``idf_atac``)."""
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = SCAMORT.load(SAVED / name, tiny_mdata)
    np.testing.assert_array_equal(
        model.get_latent_representation(), np.load(SAVED / name / "latent.npy")
    )
    got = model.get_normalized("atac").to_numpy()[:20]
    np.testing.assert_array_equal(got, np.load(SAVED / name / "normalized_atac.npy"))


def test_declarations_survive_save_and_load(tiny_mdata, tmp_path):
    declared = {"rna": "rna", "atac": Modality("atac", input="tfidf", cell_factor_hidden=4)}
    SCAMORT.setup_mudata(tiny_mdata, declared, batch_key="batch")
    model = SCAMORT(tiny_mdata, n_hidden=16)
    model.train(max_epochs=1, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = SCAMORT.load(tmp_path / "m", tiny_mdata)
    assert loaded.config == model.config and loaded.spec == model.spec
    assert loaded.spec.declaration("atac").options.cell_factor_hidden == 4


def test_options_one_level_down_are_typed_and_a_misspelt_one_is_an_error(tiny_mdata):
    SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    by_name = SCAMORT(tiny_mdata, n_hidden=16, cycle_weight=0.1, prior_expert=False)
    as_object = SCAMORT(
        tiny_mdata, n_hidden=16, options=scamort.ModelOptions(cycle_weight=0.1, prior_expert=False)
    )
    assert by_name.config == as_object.config and by_name.config.cycle_weight == 0.1
    with pytest.raises(TypeError, match="unexpected option 'peak_samplng'.*ModelOptions"):
        SCAMORT(tiny_mdata, peak_samplng=10)
    with pytest.raises(TypeError, match="unexpected option 'max_step'.*TrainingOptions"):
        by_name.train(max_epochs=1, max_step=3)
    with pytest.raises(ValueError, match="validation_fraction"):
        scamort.TrainingOptions(validation_fraction=1.5)
    by_name.train(max_epochs=3, options=scamort.TrainingOptions(max_steps=2), progress_bar=False)
    # one step an epoch (270 training cells, batch 512): max_steps=2 stops after two of three
    assert (~by_name.history.table["all_cells"]).sum() == 2


def test_cli_declares_modalities_by_name(tiny_mdata, tmp_path, capsys):
    data = _renamed(tiny_mdata, {"rna": "assay1", "atac": "assay2"})
    data["assay1"].layers["raw"] = data["assay1"].X.copy()
    src, out = tmp_path / "in.h5mu", tmp_path / "out.h5mu"
    data.write_h5mu(src)
    base = ["fit", str(src), "--out", str(out), "--epochs", "1", "--no-progress"]
    assert main(base) == 2
    assert "declare the modalities to fit, e.g. --modality assay1=KIND" in capsys.readouterr().err
    assert main([*base, "--modality", "assay1=rna:raw", "--modality", "assay2=atac"]) == 0
    result = md.read_h5mu(out)
    assert {"X_scamort", "X_scamort_assay1", "X_scamort_assay2"} <= set(result.obsm)
    assert main([*base, "--modality", "assay1=protein"]) == 2
    assert "KIND one of ['atac', 'rna']" in capsys.readouterr().err
