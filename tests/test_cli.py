"""The scamort command: fit writes embeddings back; errors are clean; the demo runs."""

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import scamort
from scamort._cli import main


def test_fit_mudata_writes_embeddings(tiny_mdata, tmp_path):
    src, out = tmp_path / "in.h5mu", tmp_path / "out.h5mu"
    tiny_mdata.write_h5mu(src)
    rc = main(
        [
            "fit",
            str(src),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-key",
            "batch",
            "--save-model",
            str(tmp_path / "model"),
            "--no-progress",
            "--refine-steps",
            "3",
        ]
    )
    assert rc == 0
    result = md.read_h5mu(out)
    status = result.obs["modality"].to_numpy()
    assert result.obsm["X_scamort"].shape == (tiny_mdata.n_obs, 20)
    assert np.isfinite(result.obsm["X_scamort"]).all()
    rna, atac = np.asarray(result.obsm["X_scamort_rna"]), np.asarray(result.obsm["X_scamort_atac"])
    assert (
        np.isnan(rna[status == "atac_only"]).all() and np.isfinite(rna[status != "atac_only"]).all()
    )
    assert (
        np.isnan(atac[status == "rna_only"]).all() and np.isfinite(atac[status != "rna_only"]).all()
    )
    assert (tmp_path / "model" / "model.pt").exists()
    gain = result.obs["elbo_refined"] - result.obs["elbo_amortized"]
    assert np.isfinite(gain).all() and gain.mean() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_fit_without_prior_and_heldout_encoders(tiny_mdata, tmp_path, monkeypatch):
    """--no-prior writes the embedding of the experts alone (what the saved model gives
    with prior=False, not with the prior); --heldout-encoders reaches train()."""
    from scamort import SCAMORT

    seen = {}
    train = SCAMORT.train

    def spy(self, *a, **kw):
        seen.update(kw)
        return train(self, *a, **kw)

    monkeypatch.setattr(SCAMORT, "train", spy)
    src, out, saved = tmp_path / "in.h5mu", tmp_path / "out.h5mu", tmp_path / "model"
    tiny_mdata.write_h5mu(src)
    args = ["fit", str(src), "--out", str(out), "--epochs", "3", "--batch-key", "batch"]
    rc = main(
        [*args, "--no-prior", "--heldout-encoders", "--save-model", str(saved), "--no-progress"]
    )
    assert rc == 0 and seen["heldout_encoders"] is True
    result = md.read_h5mu(out)
    model = SCAMORT.load(saved, result)
    for key, m in (("X_scamort", "joint"), ("X_scamort_rna", "rna")):
        written = np.asarray(result.obsm[key])
        rows = np.isfinite(written).all(1)
        free = model.get_latent_representation(modality=m, prior=False)
        shrunk = model.get_latent_representation(modality=m, prior=True)
        np.testing.assert_allclose(written[rows], free[rows], rtol=1e-4, atol=1e-5)
        assert np.abs(written[rows] - shrunk[rows]).max() > 1e-3


def test_fit_anndata(tiny_mdata, tmp_path):
    src, out = tmp_path / "rna.h5ad", tmp_path / "out.h5ad"
    rna = tiny_mdata["rna"].copy()
    rna.layers["raw"] = rna.X.copy()
    rna.write_h5ad(src)
    assert (
        main(
            [
                "fit",
                str(src),
                "--out",
                str(out),
                "--modality",
                "rna",
                "--rna-layer",
                "raw",
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert ad.read_h5ad(out).obsm["X_scamort"].shape == (rna.n_obs, 20)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--modality", "rna"], "no such file"),
        ([], "say it with --modality rna"),
        (["--modality", "rna", "--batch-key", "donor"], "key 'donor' not found"),
        (["--paired", "average", "--refine-steps", "2"], "use --paired auto or product"),
        (["--no-prior", "--refine-steps", "2"], "drop --no-prior to refine"),
    ],
)
def test_fit_errors_are_clean(tiny_mdata, tmp_path, capsys, args, message):
    src = tmp_path / "rna.h5ad"
    if "no such file" not in message:
        tiny_mdata["rna"].copy().write_h5ad(src)
    rc = main(["fit", str(src), "--out", str(tmp_path / "o.h5ad"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.h5ad").exists()


def test_demo_end_to_end_small(tmp_path):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--out", str(out), "--epochs", "2", "--n-cells", "900", "--gap-cells", "5"])
        == 0
    )
    assert (out / "umap.png").stat().st_size > 10_000
    table = pd.read_csv(out / "metrics.csv").set_index("metric")["value"]
    for metric in (
        "ARI (cell_type)",
        "NMI (cell_type)",
        "FOSCTTM (paired cells)",
        "label transfer RNA-only -> ATAC-only",
    ):
        assert 0.0 <= table[metric] <= 1.0
    gaps = pd.read_csv(out / "gaps.csv", index_col=0)
    assert len(gaps) == 15 and set(gaps["modality"]) == {"paired", "rna_only", "atac_only"}
    assert (out / "gap_vs_steps.png").exists() and (out / "gaps_by_cell_type.md").exists()
    # the outputs explain themselves: direction and MULTIVI's figure beside each measure
    md = (out / "metrics.md").read_text()
    assert "| metric | scamort | better | MULTIVI | what it measures |" in md
    assert "| FOSCTTM (paired cells) |" in md and "| lower | 0.0135 |" in md
    assert "Groups of fewer than 10" in (out / "gaps_by_cell_type.md").read_text()
    assert (out / "history.png").stat().st_size > 5_000


def test_fit_backed_writes_into_the_input_and_checkpoints(tiny_mdata, tmp_path, capsys):
    src = tmp_path / "in.h5mu"
    tiny_mdata.write_h5mu(src)
    ck = tmp_path / "ck"
    args = ["fit", str(src), "--backed", "--epochs", "2", "--batch-key", "batch"]
    assert main([*args, "--checkpoint-dir", str(ck), "--no-progress"]) == 0
    assert (ck / "last.ckpt").exists()
    result = md.read_h5mu(src)
    status = result.obs["modality"].to_numpy()
    assert result.obsm["X_scamort"].shape == (tiny_mdata.n_obs, 20)
    assert np.isfinite(result.obsm["X_scamort"]).all()
    assert np.isnan(np.asarray(result.obsm["X_scamort_rna"])[status == "atac_only"]).all()
    # the counts were left as they were
    assert abs(result["atac"].X - tiny_mdata["atac"].X).sum() == 0
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "o.h5mu")]) == 2
    assert "either --out" in capsys.readouterr().err


def test_peak_sampling_option(tiny_mdata, tmp_path, capsys):
    src, out = tmp_path / "in.h5mu", tmp_path / "o.h5mu"
    tiny_mdata.write(src)
    with pytest.raises(SystemExit) as stop:
        main(["fit", str(src), "--out", str(out), "--peak-sampling", "half"])
    assert stop.value.code == 2
    assert "expected none or a number > 0, got 'half'" in capsys.readouterr().err
    args = ["fit", str(src), "--out", str(out), "--epochs", "1", "--no-progress"]
    assert main([*args, "--peak-sampling", "20", "--batch-key", "batch"]) == 0
    assert md.read_h5mu(out).obsm["X_scamort"].shape[0] == tiny_mdata.n_obs


def test_final_epochs_option(tiny_mdata, tmp_path, capsys):
    src, out = tmp_path / "in.h5mu", tmp_path / "o.h5mu"
    tiny_mdata.write(src)
    with pytest.raises(SystemExit) as stop:
        main(["fit", str(src), "--out", str(out), "--final-epochs", "-2"])
    assert stop.value.code == 2
    assert "expected a whole number >= 0, got '-2'" in capsys.readouterr().err
    args = ["fit", str(src), "--out", str(out), "--epochs", "2", "--no-progress"]
    for n in (0, 3):
        saved = tmp_path / f"model{n}"
        assert main([*args, "--final-epochs", str(n), "--save-model", str(saved)]) == 0
        history = pd.read_csv(saved / "history.csv")
        assert len(history) == 2 + n and history["all_cells"].sum() == n


def test_help_loads_no_model_code():
    """``scamort --help`` answers without importing torch (the package's names are
    imported when first used), and every public name resolves."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from scamort._cli import main\n"
        "try:\n    main(['fit', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False"), out.stdout[-300:]
    assert "--modality NAME=KIND[:LAYER]" in out.stdout and "``" not in out.stdout
    for name in scamort.__all__:
        assert getattr(scamort, name) is not None
