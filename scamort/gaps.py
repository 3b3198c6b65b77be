"""Summaries and plots of the per-cell gaps from :meth:`scamort.SCAMORT.get_gaps`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd


def refine_steps(gaps: pd.DataFrame) -> list[int]:
    """The step counts K of the ``elbo_refined_K`` columns, in order."""
    return sorted(
        int(m.group(1)) for c in gaps for m in [re.fullmatch(r"elbo_refined_(\d+)", c)] if m
    )


def fraction_closed(gaps: pd.DataFrame) -> pd.Series:
    """Share of the mean amortization gap closed after each K steps (index: K)."""
    total = gaps["amortization_gap"].mean()
    gained = {
        k: (gaps[f"elbo_refined_{k}"] - gaps["elbo_amortized"]).mean() for k in refine_steps(gaps)
    }
    return pd.Series({k: g / total if total > 0 else np.nan for k, g in gained.items()})


def _parts(gaps: pd.DataFrame, groups, min_cells: int = 1) -> dict[str, pd.DataFrame]:
    """``all`` cells, then one part per group (``groups`` aligned to ``gaps.index``) of
    at least ``min_cells`` cells."""
    parts = {"all": gaps}
    if groups is not None:
        groups = pd.Series(np.asarray(groups), index=gaps.index)
        for g in pd.unique(groups):
            if (groups == g).sum() >= min_cells:
                parts[str(g)] = gaps[groups == g]
    return parts


def summarize_gaps(
    gaps: pd.DataFrame, groups: pd.Series | None = None, min_cells: int = 10
) -> pd.DataFrame:
    """Mean gaps (nats per cell) and fraction of the amortization gap closed, per group.

    ``groups`` (aligned to ``gaps.index``), e.g. cell type or modality status; one row
    per group of at least ``min_cells`` cells (a mean over fewer says little) plus an
    ``all`` row. ``closed_after_K`` is the mean ELBO gained by K steps over the mean
    gap: at most 1, since ``get_gaps`` measures the gap to the best posterior met.
    """
    rows = {}
    for name, part in _parts(gaps, groups, min_cells).items():
        row = {
            "cells": len(part),
            "amortization_gap": part["amortization_gap"].mean(),
            "approximation_gap": part["approximation_gap"].mean(),
        }
        row.update({f"closed_after_{k}": v for k, v in fraction_closed(part).items()})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_gap_curve(
    gaps: pd.DataFrame,
    groups: pd.Series | None = None,
    path: str | Path | None = None,
    title: str = "Amortization gap left after refinement",
    min_cells: int = 10,
):
    """Remaining amortization gap (nats per cell) against refinement steps, per group
    of at least ``min_cells`` cells.

    Returns the matplotlib ``Figure`` (shown inline in notebooks); also saved to ``path``
    when one is given. No pyplot state is touched.
    """
    from matplotlib.figure import Figure

    ks = refine_steps(gaps)
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for name, part in _parts(gaps, groups, min_cells).items():
        remaining = [part["amortization_gap"].mean()]
        remaining += [(part["elbo_converged"] - part[f"elbo_refined_{k}"]).mean() for k in ks]
        ax.plot([0.5, *ks], remaining, marker="o", label=f"{name} ({len(part)} cells)")
    ax.set_xscale("log")
    ax.set_xticks([0.5, *ks], ["0", *map(str, ks)])
    ax.set_xlabel("refinement steps")
    ax.set_ylabel("gap left (nats per cell)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
