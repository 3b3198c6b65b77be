"""scamort.pl: the plots users reach for draw what they say."""

import numpy as np
import pytest

import scamort
from scamort import SCAMORT


@pytest.fixture(scope="module")
def small_model():
    data = scamort.datasets.simulate_multiome(n_cells=300, n_genes=60, n_peaks=200, seed=1)
    SCAMORT.setup_mudata(data, batch_key="batch")
    model = SCAMORT(data)
    model.train(max_epochs=6, progress_bar=False)
    return model


def test_history_draws_both_elbos_and_shades_the_final_pass(small_model, tmp_path):
    fig = scamort.pl.history(small_model, path=tmp_path / "h.png")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    table = small_model.history.table
    np.testing.assert_allclose(lines["training cells"].get_ydata(), table["elbo_train"])
    assert "held-out cells" in lines and ax.get_title() == "Training history"
    assert any("final pass" in p.get_label() for p in ax.patches)
    assert (tmp_path / "h.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="call train"):
        scamort.pl.history(SCAMORT(small_model.data))


def test_volcano_colours_the_called_features(small_model):
    de = small_model.differential_expression(groupby="cell_type", group1="type_0", silent=True)
    fig = scamort.pl.volcano(de)
    ax = fig.axes[0]
    quiet, called = ax.collections
    assert len(called.get_offsets()) == int(de.filter(like="is_de_fdr").iloc[:, 0].sum())
    assert len(quiet.get_offsets()) + len(called.get_offsets()) == len(de)
    assert ax.get_xlabel() == "log2 fold change"
    da = small_model.differential_accessibility(groupby="cell_type", group1="type_0", silent=True)
    assert scamort.pl.volcano(da).axes[0].get_ylabel() == "probability of DA"
    with pytest.raises(ValueError, match="differential"):
        scamort.pl.volcano(de[["scale1"]])


def test_gap_curve_leaves_out_small_groups(small_model):
    gaps = small_model.get_gaps(indices=range(30), steps=(5,), converge_steps=20, iw_samples=8)
    groups = np.where(np.arange(30) < 25, "big", "small")
    fig = scamort.pl.gap_curve(gaps, groups, min_cells=10)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["all (30 cells)", "big (25 cells)"]
    assert fig.axes[0].get_ylim()[0] == 0
