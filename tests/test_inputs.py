"""Users' files in: unreadable files, several experiments, 10x files, modalities by name."""

import hashlib
import shutil

import anndata as ad
import mudata as md
import numpy as np
import pytest
from conftest import write_10x_h5

import scamort
from scamort._cli import main
from scamort.data import DataError
from scamort.readers import ReadError

FIT = ["--epochs", "1", "--no-progress"]


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _experiments(mdata):
    """A simulated mosaic cut into three experiments: paired, RNA-only, ATAC-only."""
    status = mdata.obs["modality"]
    keep = {m: (status.loc[mdata[m].obs_names] == "paired").to_numpy() for m in ("rna", "atac")}
    multiome = md.MuData({m: mdata[m][keep[m]].copy() for m in ("rna", "atac")})
    rna = mdata["rna"][(status.loc[mdata["rna"].obs_names] == "rna_only").to_numpy()].copy()
    atac = mdata["atac"][(status.loc[mdata["atac"].obs_names] == "atac_only").to_numpy()].copy()
    return multiome, rna, atac


# ---- files that cannot be read ----------------------------------------------------------
def _bad_file(kind, tmp_path, tiny_mdata):
    good = tmp_path / "good.h5mu"
    tiny_mdata.write_h5mu(good)
    if kind == "truncated":
        path = tmp_path / "cut.h5mu"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "truncated or corrupt|damaged or incomplete"
    if kind == "garbage":
        path = tmp_path / "noise.h5mu"
        path.write_bytes(b"not an hdf5 file at all" * 100)
        return path, "not an HDF5 file"
    if kind == "empty":
        path = tmp_path / "empty.h5ad"
        path.touch()
        return path, "the file is empty"
    if kind == "directory":
        path = tmp_path / "folder.h5mu"
        path.mkdir()
        return path, "it is a directory"
    if kind == "h5ad_as_h5mu":
        path = tmp_path / "rna.h5mu"
        tiny_mdata["rna"].write_h5ad(path)
        return path, "holds an AnnData; rename it to rna.h5ad"
    if kind == "h5mu_as_h5ad":
        path = tmp_path / "both.h5ad"
        shutil.copy(good, path)
        return path, "holds a MuData; rename it to both.h5mu"
    if kind == "suffix":
        path = tmp_path / "counts.csv"
        path.write_text("a,b\n1,2\n")
        return path, "unknown file type '.csv'"
    if kind == "missing":
        return tmp_path / "nowhere.h5mu", "no such file"
    raise AssertionError(kind)


KINDS = [
    "truncated",
    "garbage",
    "empty",
    "directory",
    "h5ad_as_h5mu",
    "h5mu_as_h5ad",
    "suffix",
    "missing",
]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_files_get_one_line(kind, tmp_path, tiny_mdata, capsys):
    path, cause = _bad_file(kind, tmp_path, tiny_mdata)
    before = _md5(path) if path.is_file() else None
    out = tmp_path / "out.h5mu"
    assert main(["fit", str(path), "--out", str(out), *FIT]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith(f"scamort fit: error: cannot read {path}: ")
    assert __import__("re").search(cause, err), err
    assert not out.exists()
    if before is not None:
        assert _md5(path) == before  # the input is never modified
    with pytest.raises(ReadError):
        scamort.read(path)


def test_missing_modalities_are_listed(tiny_mdata, tmp_path, capsys):
    src = tmp_path / "in.h5mu"
    md.MuData({"protein": tiny_mdata["rna"].copy()}).write_h5mu(src)
    assert main(["fit", str(src), "--out", str(tmp_path / "o.h5mu"), *FIT]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {src}: cannot tell the kind of data of modality 'protein'" in err
    assert "--modality protein=KIND with KIND one of ['atac', 'rna']" in err
    tiny_mdata.write_h5mu(src)
    assert main(["fit", str(src), "--rna-key", "gex", "--out", str(tmp_path / "o.h5mu")]) == 2
    assert "it has no modality 'gex' (it has ['rna', 'atac'])" in capsys.readouterr().err


def test_internal_errors_keep_their_traceback(tiny_mdata, tmp_path, monkeypatch):
    src = tmp_path / "in.h5mu"
    tiny_mdata.write_h5mu(src)

    def broken(self, *a, **k):
        raise KeyError("a bug, not the user's data")

    monkeypatch.setattr(scamort.SCAMORT, "train", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["fit", str(src), "--out", str(tmp_path / "o.h5mu"), *FIT])


# ---- several experiments ------------------------------------------------------------------
def test_combine_shares_features_keeps_annotations_and_names_datasets(tiny_mdata):
    multiome, rna, atac = _experiments(tiny_mdata)
    rna = rna[:, 3:].copy()  # the RNA-only experiment lacks 3 genes
    multiome.obs["site"] = "A"
    before = rna.X.copy()
    with pytest.warns(UserWarning, match=r"rna: kept 57 shared features, dropped 3 of 'multi'"):
        out = scamort.combine({"multi": multiome, "scrna": rna, "scatac": atac})
    assert out["rna"].n_vars == 57 and list(out["rna"].var_names) == list(rna.var_names)
    assert out["atac"].n_vars == atac.n_vars
    assert out.n_obs == tiny_mdata.n_obs
    assert out.uns["scamort_combine"]["dropped_features"] == {"rna": {"multi": 3}}
    counts = out.obs["dataset"].value_counts()
    assert counts["multi"] == multiome.n_obs and counts["scrna"] == rna.n_obs
    # every cell keeps its annotations; the paired experiment's own column too
    common = tiny_mdata.obs_names
    assert (out.obs.loc[common, "cell_type"] == tiny_mdata.obs["cell_type"]).all()
    assert (out.obs.loc[multiome.obs_names, "site"] == "A").all()
    assert out.obs.loc[rna.obs_names, "site"].isna().all()
    # paired cells are in both modalities, unpaired ones in one
    paired = set(out["rna"].obs_names) & set(out["atac"].obs_names)
    assert paired == set(multiome.obs_names)
    # counts carried over unchanged; inputs untouched
    np.testing.assert_array_equal(out["rna"][rna.obs_names].X.toarray(), rna.X.toarray())
    assert (rna.X != before).nnz == 0
    scamort.SCAMORT.setup_mudata(out, batch_key="batch", categorical_covariate_keys=["dataset"])
    model = scamort.SCAMORT(out, n_hidden=16)
    assert model.spec.categories[1] == ("multi", "scatac", "scrna")


def test_combine_renames_colliding_cells_by_rule(tiny_mdata):
    multiome, _, _ = _experiments(tiny_mdata)
    out = scamort.combine([multiome, multiome.copy()])
    assert out.n_obs == 2 * multiome.n_obs
    first = multiome.obs_names[0]
    assert f"{first}-dataset_0" in out.obs_names and f"{first}-dataset_1" in out.obs_names
    assert out.uns["scamort_combine"]["renamed_cells"]
    # paired cells keep one name in both modalities
    assert set(out["rna"].obs_names) == set(out["atac"].obs_names)


def test_combine_errors_name_the_fix(tiny_mdata):
    _, rna, atac = _experiments(tiny_mdata)
    rna.var_names = [f"feature_{i}" for i in range(rna.n_vars)]
    with pytest.raises(DataError, match=r"cannot tell whether experiment 'x'.*modalities="):
        scamort.combine({"x": rna})
    out = scamort.combine({"x": rna, "y": atac}, modalities={"x": "rna", "y": "atac"})
    assert set(out.mod) == {"rna", "atac"}
    other = atac.copy()
    other.var_names = [f"chr9:{i}-{i + 10}" for i in range(other.n_vars)]
    with pytest.raises(DataError, match="share 0 feature names"):
        scamort.combine({"y": atac, "z": other}, modalities={"y": "atac"})


@pytest.mark.parametrize(
    "rename, cause",
    [
        (lambda names: [n.upper() for n in names], "differ in case"),
        (lambda names: [f"ENSMUSG{i:011d}" for i in range(len(names))], "Ensembl ID.*gene_ids"),
        (lambda names: [f"{n}.7" for n in names], "version suffixes"),
    ],
)
def test_combine_that_would_lose_most_features_names_the_likely_cause(tiny_mdata, rename, cause):
    """Experiments whose gene names differ in how they are written would keep a handful of
    genes; combine refuses with the likely cause, and min_shared= lowers the bar."""
    multiome, rna, _ = _experiments(tiny_mdata)
    rna = rna.copy()
    keep = list(rna.var_names[:2])  # two genes keep their names, the rest are rewritten
    rna.var["gene_ids"] = [f"ENSMUSG{i:011d}" for i in range(rna.n_vars)]
    if "Ensembl" in cause:
        multiome["rna"].var["gene_ids"] = rna.var["gene_ids"].to_numpy()
        rna.var_names = rename(rna.var_names)
    else:
        rna.var_names = keep + rename(list(rna.var_names[2:]))
    with pytest.raises(DataError, match=cause):
        scamort.combine({"multi": multiome, "cells": rna}, modalities={"cells": "rna"})
    if "Ensembl" not in cause:
        with pytest.warns(UserWarning, match="kept 2 shared features"):
            out = scamort.combine(
                {"multi": multiome, "cells": rna}, modalities={"cells": "rna"}, min_shared=0
            )
        assert out["rna"].n_vars == 2


def test_fit_several_inputs_with_dataset_covariate(tiny_mdata, tmp_path):
    multiome, rna, atac = _experiments(tiny_mdata)
    paths = [tmp_path / "multiome.h5mu", tmp_path / "cells.h5ad", tmp_path / "atac.h5ad"]
    multiome.write_h5mu(paths[0])
    rna.write_h5ad(paths[1])
    atac.write_h5ad(paths[2])
    out = tmp_path / "all.h5mu"
    args = [str(paths[0]), f"{paths[1]}:rna", str(paths[2]), "--out", str(out)]
    model_dir = tmp_path / "model"
    rc = main(
        [
            "fit",
            *args,
            "--batch-key",
            "batch",
            "--dataset-covariate",
            "--save-model",
            str(model_dir),
            *FIT,
        ]
    )
    assert rc == 0
    result = md.read_h5mu(out)
    assert result.n_obs == tiny_mdata.n_obs
    assert set(result.obs["dataset"]) == {"multiome", "cells", "atac"}
    z = np.asarray(result.obsm["X_scamort"])
    assert np.isfinite(z).all()
    za = np.asarray(result.obsm["X_scamort_atac"])
    assert np.isnan(za[result.obs["dataset"] == "cells"]).all()
    config = __import__("json").loads((model_dir / "config.json").read_text())
    assert config["spec"]["categorical_covariate_keys"] == ["dataset"]


# ---- 10x files ----------------------------------------------------------------------------
def test_10x_multiome_file_is_read_split_and_fitted(pbmc_tiny, tmp_path, capsys):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(pbmc_tiny, path)
    mdata = scamort.read_10x_multiome(path)
    assert set(mdata.mod) == {"rna", "atac"}
    assert mdata["rna"].shape == pbmc_tiny["rna"].shape
    assert mdata["atac"].shape == pbmc_tiny["atac"].shape
    for m in ("rna", "atac"):
        assert list(mdata[m].var_names) == list(pbmc_tiny[m].var_names)
        assert abs(mdata[m].X - pbmc_tiny[m].X).sum() == 0
    assert (mdata["atac"].var["feature_types"] == "Peaks").all()
    out = tmp_path / "out.h5mu"
    assert main(["fit", str(path), "--out", str(out), *FIT]) == 0
    assert np.isfinite(md.read_h5mu(out).obsm["X_scamort"]).all()
    # and as one experiment among others
    rna_only = pbmc_tiny["rna"][:100].copy()
    rna_only.obs_names = [f"other_{i}" for i in range(100)]
    both = scamort.combine({"arc": path, "rna": rna_only})
    assert both.n_obs == pbmc_tiny.n_obs + 100
    assert np.asarray(main(["fit", str(tmp_path / "x.h5"), "--out", str(out)])) == 2
    assert "no such file" in capsys.readouterr().err


# ---- modalities by name -------------------------------------------------------------------
@pytest.mark.parametrize("only", ["rna", "atac"])
def test_mudata_with_one_modality_fits_it_alone(tiny_mdata, tmp_path, only):
    src, out = tmp_path / "one.h5mu", tmp_path / "out.h5mu"
    md.MuData({only: tiny_mdata[only].copy()}).write_h5mu(src)
    assert main(["fit", str(src), "--out", str(out), "--batch-key", "batch", *FIT]) == 0
    result = md.read_h5mu(out)
    assert {"X_scamort", f"X_scamort_{only}"} <= set(result.obsm)
    assert np.isfinite(result.obsm["X_scamort"]).all()


def test_custom_modality_names(tiny_mdata, tmp_path):
    renamed = md.MuData({"gex": tiny_mdata["rna"].copy(), "peaks": tiny_mdata["atac"].copy()})
    renamed.obs = tiny_mdata.obs.loc[renamed.obs_names].copy()
    scamort.SCAMORT.setup_mudata(renamed, batch_key="batch")  # both names say their kind
    model = scamort.SCAMORT(renamed, n_hidden=32)
    model.train(max_epochs=2, progress_bar=False)
    assert model.spec.modalities == ("gex", "peaks")
    assert np.isfinite(model.get_latent_representation()).all()
    zp = model.get_latent_representation(modality="peaks")
    assert np.isnan(zp[tiny_mdata.obs.loc[renamed.obs_names, "modality"] == "rna_only"]).all()
    assert model.get_accessibility_estimates().shape[1] == tiny_mdata["atac"].n_vars
    src, out = tmp_path / "named.h5mu", tmp_path / "out.h5mu"
    renamed.write_h5mu(src)
    args = ["fit", str(src), "--rna-key", "gex", "--atac-key", "peaks", "--out", str(out)]
    assert main([*args, *FIT]) == 0
    assert "X_scamort_peaks" in md.read_h5mu(out).obsm


def test_atac_only_anndata_trains_and_embeds(tiny_mdata, tmp_path):
    atac = tiny_mdata["atac"].copy()
    scamort.SCAMORT.setup_anndata(atac, modality="atac", batch_key="batch")
    model = scamort.SCAMORT(atac, n_hidden=32)
    model.train(max_epochs=3, progress_bar=False)
    z = model.get_latent_representation()
    assert z.shape == (atac.n_obs, 20) and np.isfinite(z).all()
    acc = model.get_accessibility_estimates(return_numpy=True)
    assert ((acc > 0) & (acc < 1)).all()
    with pytest.raises(ValueError, match="no rna modality"):
        model.get_normalized_expression()
    # on the command line the modality is guessed from peak-like names, or given
    atac.var_names = [f"chr1:{100 * i}-{100 * i + 50}" for i in range(atac.n_vars)]
    src = tmp_path / "peaks.h5ad"
    atac.write_h5ad(src)
    assert main(["fit", str(src), "--out", str(tmp_path / "o.h5ad"), *FIT]) == 0
    assert ad.read_h5ad(tmp_path / "o.h5ad").obsm["X_scamort"].shape == (atac.n_obs, 20)


def test_shipped_snareseq_file_sets_up_as_published():
    path = scamort.datasets._real._data_path("snareseq_mouse_cortex.h5mu")
    mdata = scamort.read(path)
    with pytest.warns(
        scamort.EmptyFeaturesWarning, match="990 of 25734 features of modality 'atac'"
    ):
        scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    spec = scamort.SCAMORT.get_setup(mdata)
    assert len(spec.features[1]) == 25734
    assert scamort.datasets.snareseq_mouse_cortex()["atac"].n_vars == 25734
