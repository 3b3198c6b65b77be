"""README's "Use from Python" block runs as written (on a subsample, a few epochs), so
the example and the package cannot drift apart."""

import re
from pathlib import Path

import numpy as np

import scamort

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Use from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(monkeypatch, tmp_path):
    full = scamort.datasets.snareseq_mouse_cortex

    def subsample():  # 1,200 of the 10,309 cells
        data = full()
        pick = np.sort(np.random.default_rng(0).choice(data.n_obs, 1200, replace=False))
        return data[pick].copy()

    train = scamort.SCAMORT.train

    def short_train(self, max_epochs=None, **kwargs):
        return train(self, max_epochs=min(max_epochs or 3, 3), progress_bar=False, **kwargs)

    monkeypatch.setattr(scamort.datasets, "snareseq_mouse_cortex", subsample)
    monkeypatch.setattr(scamort.SCAMORT, "train", short_train)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_python_example(), str(README), "exec"), scope)
    # what the example promises
    mdata, model = scope["mdata"], scope["model"]
    assert scope["z"].shape == (1200, 20) and np.isfinite(scope["z"]).all()
    assert scope["expr"].shape == (1200, mdata["rna"].n_vars)
    assert {"proba_de", "lfc_mean"} <= set(scope["de"].columns)
    assert {"prob_da", "effect_size"} <= set(scope["da"].columns)
    assert len(scope["scores"]) == 500 and np.isfinite(scope["scores"]["novelty"]).all()
    assert "leiden" in mdata.obs and "X_umap" in mdata.obsm
    assert (tmp_path / "my_model" / "model.pt").exists() and model.is_trained
