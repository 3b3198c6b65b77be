"""Plots users reach for after a fit: the training history, the amortization gap against
refinement steps, and a volcano of a differential table.

Each returns a matplotlib ``Figure`` (drawn inline in a notebook), saved to ``path``
when one is given; no pyplot state is touched, so they are safe in scripts and servers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .gaps import plot_gap_curve as gap_curve

__all__ = ["gap_curve", "history", "volcano"]


def _figure(size=(5, 3.5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def _done(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def history(model, path: str | Path | None = None, title: str = "Training history"):
    """The mean ELBO per cell of each epoch, training and held-out cells (higher is
    better), with the final pass's epochs (encoders on all cells) shaded."""
    table = model.history.table
    if table.empty:
        raise ValueError("the model has no training history: call train() first.")
    fig, ax = _figure()
    for key, label in (("elbo_train", "training cells"), ("elbo_validation", "held-out cells")):
        if key in table and table[key].notna().any():
            ax.plot(table["epoch"] + 1, table[key], marker=".", label=label)
    final = table[table["all_cells"].astype(bool)] if "all_cells" in table else table[:0]
    if len(final):
        ax.axvspan(final["epoch"].min() + 0.5, final["epoch"].max() + 1.5, color="0.9",
                   label="final pass (encoders, all cells)")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per cell (higher is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _done(fig, path)


# the columns of scvi-tools' DE table and of MULTIVI's DA table
_DE = ("lfc_mean", "proba_de", "is_de_fdr_", "log2 fold change", "probability of DE")
_DA = (
    "effect_size",
    "prob_da",
    "is_da_fdr",
    "effect size (group 2 - group 1)",
    "probability of DA",
)


def volcano(
    table: pd.DataFrame,
    path: str | Path | None = None,
    title: str | None = None,
    label_top: int = 10,
):
    """Effect against probability of a :meth:`~scamort.SCAMORT.differential` table (DE:
    ``lfc_mean`` against ``proba_de``; DA: ``effect_size`` against ``prob_da``), the
    features called at the table's FDR in colour and the ``label_top`` strongest named.
    A table of several comparisons draws the first; select one first to draw another."""
    if "lfc_mean" in table:
        effect, prob, called, xlabel, ylabel = _DE
    elif "effect_size" in table:
        effect, prob, called, xlabel, ylabel = _DA
    else:
        raise ValueError(
            "volcano draws a table of differential() (scvi-tools' DE columns lfc_mean, "
            "proba_de; or MULTIVI's DA columns effect_size, prob_da)."
        )
    if "comparison" in table and table["comparison"].nunique() > 1:
        first = table["comparison"].iloc[0]
        table = table[table["comparison"] == first]
        title = title or str(first)
    calls = [c for c in table.columns if c.startswith(called)]
    is_called = table[calls[0]].astype(bool).to_numpy() if calls else np.zeros(len(table), bool)
    x, y = table[effect].to_numpy(float), table[prob].to_numpy(float)
    fig, ax = _figure()
    ax.scatter(x[~is_called], y[~is_called], s=4, color="0.6", label="not called", rasterized=True)
    ax.scatter(x[is_called], y[is_called], s=6, color="C3", label="called", rasterized=True)
    order = np.argsort(-(np.abs(x) * y))[:label_top]
    for i in order:
        ax.annotate(str(table.index[i]), (x[i], y[i]), fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(
        title or "Differential " + ("expression" if effect == "lfc_mean" else "accessibility"),
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return _done(fig, path)
