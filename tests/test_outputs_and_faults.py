"""Faults that must lose nothing: stored zeros are no counts, the CLI's outputs are checked
before training and never replace the user's files unasked, and designs that are legal
but likely mistakes are said."""

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_same, fingerprint

import scamort
from scamort import SCAMORT, DataError, DataWarning
from scamort._cli import main

FIT = ["--epochs", "1", "--no-progress"]


def _with_stored_zeros(mdata, cell: int):
    """A copy in which the RNA row of ``cell`` and the column of gene 0 are stored entries
    that are all zeros."""
    out = mdata.copy()
    counts = out["rna"].X.toarray()
    stored = counts > 0
    stored[:, 0] = True
    stored[cell, :5] = True
    counts[:, 0] = 0
    counts[cell] = 0
    rows, cols = np.nonzero(stored)
    out["rna"].X = sp.csr_matrix((counts[rows, cols], (rows, cols)), shape=counts.shape)
    return out


def test_stored_zeros_are_no_counts_and_the_data_is_left_alone(tiny_mdata):
    rna_only = np.flatnonzero(~tiny_mdata.obs_names.isin(tiny_mdata["atac"].obs_names))
    name = tiny_mdata.obs_names[rna_only[0]]
    cell = int(np.flatnonzero(tiny_mdata["rna"].obs_names == name)[0])
    data = _with_stored_zeros(tiny_mdata, cell)
    X = data["rna"].X
    assert (np.diff(X.indptr)[cell] > 0) and X[cell].sum() == 0  # entries stored, all zero
    before = fingerprint(data)
    with pytest.raises(DataError, match=rf"zero counts in every modality.*{name}"):
        SCAMORT.setup_mudata(data, batch_key="batch")
    assert_same(before, fingerprint(data))
    keep = data[data.obs_names != name].copy()
    with pytest.warns(scamort.EmptyFeaturesWarning, match="gene_0|of modality 'rna'"):
        SCAMORT.setup_mudata(keep, batch_key="batch")
    registered = scamort.model.registry.registered(keep)[1]
    assert registered.cells_per_feature("rna")[0] == 0  # stored zeros are not measurements
    assert (registered.x["rna"].data > 0).all()


def test_a_batch_key_with_one_category_per_cell_is_said(tiny_mdata):
    data = tiny_mdata.copy()
    data.obs["barcode"] = data.obs_names
    with pytest.warns(DataWarning, match="looks like a cell identifier"):
        SCAMORT.setup_mudata(data, batch_key="barcode")


def test_modalities_without_a_shared_cell_are_said(tiny_mdata):
    rna, atac = tiny_mdata["rna"].copy(), tiny_mdata["atac"].copy()
    atac.obs_names = [f"{n}-1" for n in atac.obs_names]  # a suffix the RNA names lack
    data = md.MuData({"rna": rna, "atac": atac})
    data.obs["batch"] = np.concatenate([rna.obs["batch"], atac.obs["batch"]])
    with pytest.warns(DataWarning, match="no cell is in every modality"):
        SCAMORT.setup_mudata(data, batch_key="batch")


def _no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("trained before the outputs were checked")

    monkeypatch.setattr(scamort.SCAMORT, "train", fail)


@pytest.mark.parametrize(
    "where,message",
    [
        ("file_parent", "is a file, not a folder"),
        ("folder", "is a folder; name a file in it"),
        ("input", "is an input: writing it would replace your data"),
    ],
)
def test_out_is_checked_before_training(tiny_mdata, tmp_path, capsys, monkeypatch, where, message):
    src = tmp_path / "in.h5mu"
    tiny_mdata.write_h5mu(src)
    (tmp_path / "a_file").write_text("mine")
    (tmp_path / "a_folder").mkdir()
    out = {
        "file_parent": tmp_path / "a_file" / "o.h5mu",
        "folder": tmp_path / "a_folder",
        "input": src,
    }[where]
    _no_training(monkeypatch)
    assert main(["fit", str(src), "--out", str(out), *FIT]) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "mine"


def test_out_may_replace_the_input_when_asked(tiny_mdata, tmp_path):
    src = tmp_path / "in.h5mu"
    tiny_mdata.write_h5mu(src)
    assert main(["fit", str(src), "--out", str(src), "--overwrite", *FIT]) == 0
    assert "X_scamort" in md.read_h5mu(src).obsm


def test_save_model_never_replaces_other_files(tiny_mdata, tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in.h5mu", tmp_path / "o.h5mu"
    tiny_mdata.write_h5mu(src)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["fit", str(src), "--out", str(out), "--save-model", str(mine), *FIT]) == 2
    assert "holds other files (['notes.txt'])" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep" and not out.exists()
    saved = tmp_path / "saved"
    assert main(["fit", str(src), "--out", str(out), "--save-model", str(saved), *FIT]) == 0
    again = ["fit", str(src), "--out", str(tmp_path / "o2.h5mu"), "--save-model", str(saved)]
    assert main([*again, *FIT]) == 2
    assert "holds a saved model; pass --overwrite" in capsys.readouterr().err
    assert main([*again, "--overwrite", *FIT]) == 0


def test_cli_model_size_and_schedule_flags(tiny_mdata, tmp_path):
    src, out = tmp_path / "in.h5ad", tmp_path / "o.h5ad"
    rna = tiny_mdata["rna"].copy()
    rna.write_h5ad(src)
    args = ["fit", f"{src}:rna", "--out", str(out), "--n-latent", "7", "--batch-size", "64"]
    assert main([*args, "--lr", "0.002", "--max-epochs", "1", "--no-progress"]) == 0
    assert ad.read_h5ad(out).obsm["X_scamort"].shape == (rna.n_obs, 7)


def test_outputs_follow_the_users_umask(tiny_mdata, tmp_path):
    """Written atomically through a private temporary file, an output still gets the mode
    of any new file of the user's, so colleagues can read it."""
    import os
    import stat

    from scamort._io import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tiny_mdata, tmp_path / "o.h5mu")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.h5mu").stat().st_mode) == 0o644


def test_combine_makes_columns_of_mixed_types_writable(tiny_mdata, tmp_path):
    rna, atac = tiny_mdata["rna"].copy(), tiny_mdata["atac"].copy()
    rna.obs["donor"], atac.obs["donor"] = 1, "d2"
    before = fingerprint(rna)
    out = scamort.combine({"x": rna, "y": atac}, modalities={"x": "rna", "y": "atac"})
    out.write_h5mu(tmp_path / "c.h5mu")  # an int and a str column could not be written
    assert set(md.read_h5mu(tmp_path / "c.h5mu").obs["donor"].astype(str)) == {"1", "d2"}
    assert_same(before, fingerprint(rna))


@pytest.mark.parametrize(
    "tamper,message",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json: it is not the JSON"),
        (lambda d: _edit(d, lambda c: c.pop("spec")), "config.json: field 'spec' is missing"),
        (
            lambda d: _edit(d, lambda c: c["module"].update(n_latent="twenty")),
            "config.json: field 'module' is not valid",
        ),
        (
            lambda d: _edit(d, lambda c: c.update(scamort_version="9.0.0")),
            "saved by scamort 9.0.0, newer than this",
        ),
        (
            lambda d: (d / "model.pt").write_bytes(b"garbage"),
            "model.pt: the weights cannot be read",
        ),
        (
            lambda d: _edit(d, lambda c: c["module"].update(n_hidden=8)),
            "model.pt: the weights do not fit config.json",
        ),
    ],
)
def test_a_damaged_model_folder_is_one_line_naming_the_file(tiny_mdata, tmp_path, tamper, message):
    SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata, n_hidden=16)
    model.save(tmp_path / "m")
    tamper(tmp_path / "m")
    with pytest.raises(scamort.ReadError, match=message):
        SCAMORT.load(tmp_path / "m", tiny_mdata)


def _edit(folder, change) -> None:
    import json

    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_counts_kept_in_raw_are_named_in_the_message(tiny_mdata):
    rna = tiny_mdata["rna"].copy()
    rna.raw = rna
    rna.X = np.log1p(rna.X.toarray())  # normalised in .X, as after scanpy's workflow
    with pytest.raises(DataError, match=r"non-integer.*has counts in \.raw.*layers\['counts'\]"):
        SCAMORT.setup_anndata(rna)
    rna.layers["counts"] = rna.raw[:, rna.var_names].X
    SCAMORT.setup_anndata(rna, layer="counts")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stopped_fit_exits_non_zero_with_one_line_and_resumes(tiny_mdata, tmp_path, sig):
    """A scheduler's SIGTERM or a Ctrl+C during `scamort fit`: the status says the job
    failed, stderr says so in one line, no output is written, and the checkpoint resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src, out, ckpt = tmp_path / "in.h5mu", tmp_path / "out.h5mu", tmp_path / "ckpt"
    tiny_mdata.write_h5mu(src)
    args = ["fit", str(src), "--out", str(out), "--no-progress", "--checkpoint-dir", str(ckpt)]
    code = "import sys; from scamort._cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--epochs", "100000", "--no-early-stopping"],
        stderr=subprocess.PIPE,
        text=True,
        # a job started in the background inherits Ctrl+C ignored; a terminal's is not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while not (ckpt / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + getattr(signal, sig), err
    lines = [line for line in err.splitlines() if line.strip() and "warning:" not in line]
    assert len(lines) == 1 and f"stopped by {sig}" in lines[0] and "--resume" in lines[0], err
    assert not out.exists()
    assert (ckpt / "last.ckpt").exists() and not [p for p in ckpt.iterdir() if p.name[0] == "."]
    assert os.path.getsize(ckpt / "last.ckpt") > 0
    # the checkpoint it left is whole: the same command with --resume finishes, once
    # asked for at least the epochs it has
    assert main([*args, "--epochs", "1", "--no-early-stopping", "--resume"]) == 2
    assert main([*args, "--epochs", "60", "--no-early-stopping", "--resume"]) == 0
    assert out.exists()


def test_an_interrupted_train_keeps_its_epochs_and_ctrl_c(tiny_mdata, monkeypatch):
    """Ctrl+C in a notebook: train() raises TrainingInterrupted (a KeyboardInterrupt), the
    model keeps the epochs that ended in its history, and Ctrl+C works afterwards
    (Lightning leaves it ignored)."""
    import signal

    from scamort.model.training import TrainingInterrupted
    from scamort.train import History

    end = History.on_train_epoch_end

    def interrupt_at_epoch_3(self, trainer, plan):
        end(self, trainer, plan)
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(History, "on_train_epoch_end", interrupt_at_epoch_3)
    SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = SCAMORT(tiny_mdata)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT during epoch 3"):
        model.train(max_epochs=10, progress_bar=False)
    assert signal.getsignal(signal.SIGINT) is handler
    assert len(model.history.table) == 3


def test_paired_cells_with_an_empty_atac_row_are_embedded_from_their_rna(tiny_mdata):
    """A paired cell whose ATAC row holds no count (a failed library) is said and treated
    as not measured in ATAC: its ATAC embedding is missing, not one point shared by every
    such cell, and its joint embedding follows its RNA."""
    data = tiny_mdata.copy()
    status = data.obs["modality"].to_numpy()
    paired = np.flatnonzero(status == "paired")[:4]
    names = data.obs_names[paired]
    atac = data["atac"]
    rows = atac.obs_names.get_indexer(names)
    X = atac.X.tolil()
    for r in rows:
        X[r, :] = 0
    atac.X = X.tocsr()
    atac.X.eliminate_zeros()
    with pytest.warns(DataWarning, match=r"4 cells are in modality 'atac' with no counts"):
        SCAMORT.setup_mudata(data, batch_key="batch")
    model = SCAMORT(data)
    model.train(max_epochs=2, progress_bar=False)
    z_atac = model.get_latent_representation(modality="atac")
    assert np.isnan(z_atac[paired]).all()
    others = np.flatnonzero(status == "paired")[4:]
    assert np.isfinite(z_atac[others]).all()
    z = model.get_latent_representation()
    assert np.isfinite(z[paired]).all() and len(np.unique(z[paired].round(5), axis=0)) == 4
