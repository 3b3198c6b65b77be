import warnings

import numpy as np
import pytest
import torch

import scamort

warnings.filterwarnings("ignore", category=FutureWarning, module="mudata")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_mdata():
    """300 cells (paired, RNA-only, ATAC-only), 2 batches; fast to set up and train."""
    return scamort.datasets.simulate_multiome(n_cells=300, n_genes=60, n_peaks=200, seed=1)


@pytest.fixture(scope="session")
def sim_mdata():
    """1,500 cells, 6 types, 2 batches, a third each paired / RNA-only / ATAC-only."""
    return scamort.datasets.simulate_multiome(n_cells=1500, n_genes=500, n_peaks=3000, seed=0)


@pytest.fixture(scope="session")
def trained(sim_mdata):
    scamort.SCAMORT.setup_mudata(sim_mdata, batch_key="batch")
    model = scamort.SCAMORT(sim_mdata, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False)
    return model


def fingerprint(data) -> dict:
    """Everything a setup or a model call could change on the user's object."""
    mods = getattr(data, "mod", {"": data})
    out = {"obs": data.obs.copy(), "obsm": sorted(data.obsm.keys()), "uns": sorted(data.uns)}
    for m, a in mods.items():
        out[m] = (
            a.X.copy(),
            a.obs.copy(),
            a.var.copy(),
            sorted(a.layers),
            sorted(a.obsm),
            sorted(a.uns),
        )
    return out


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for k, v in before.items():
        if isinstance(v, tuple):
            x0, obs0, var0, *rest0 = v
            x1, obs1, var1, *rest1 = after[k]
            assert (x0 != x1).nnz == 0 if hasattr(x0, "nnz") else np.array_equal(x0, x1)
            assert obs0.equals(obs1) and var0.equals(var1) and rest0 == rest1
        elif hasattr(v, "equals"):
            assert v.equals(after[k])
        else:
            assert v == after[k]


SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


def write_10x_h5(mdata, path) -> None:
    """A paired MuData written in Cell Ranger ARC's filtered_feature_bc_matrix.h5 layout
    (features x barcodes CSC; feature types 'Gene Expression' and 'Peaks')."""
    import h5py
    import scipy.sparse as sp

    rna, atac = mdata["rna"], mdata["atac"]
    X = sp.hstack([sp.csr_matrix(rna.X), sp.csr_matrix(atac.X)], format="csr").astype(np.int32)
    X.sort_indices()
    names = [*rna.var_names, *atac.var_names]
    ids = [*rna.var.get("gene_ids", rna.var_names), *atac.var_names]
    types = ["Gene Expression"] * rna.n_vars + ["Peaks"] * atac.n_vars
    intervals = [*rna.var.get("interval", ["NA"] * rna.n_vars), *atac.var_names]
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(rna.obs_names, dtype="S")
        m["data"], m["indices"], m["indptr"] = X.data, X.indices.astype(np.int64), X.indptr
        m["shape"] = np.array([X.shape[1], X.shape[0]], dtype=np.int32)
        feats = m.create_group("features")
        feats["_all_tag_keys"] = np.array([b"genome", b"interval"])
        feats["feature_type"] = np.array(types, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(names), dtype="S")
        feats["id"] = np.array(ids, dtype="S")
        feats["interval"] = np.array(intervals, dtype="S")
        feats["name"] = np.array(names, dtype="S")


@pytest.fixture(scope="session")
def pbmc_tiny():
    """The shared 10x Multiome PBMC fixture (1,000 paired cells, 45 genes, 174 peaks)."""
    import mudata as md

    path = SHARED_DATA / "pbmc_multiome_tiny" / "pbmc_multiome_tiny.h5mu"
    if not path.exists():
        pytest.skip(f"{path} is not there (shared/ lies beside the repository in CI)")
    return md.read_h5mu(path)
