"""Which cells the model does not explain: per-cell ELBO deficit and refinement gain.

A cell's ELBO depends mostly on how many counts it has, so it is compared with what the
model achieves on its own training cells of the same depth: a least-squares fit of the
amortized ELBO on, per modality, whether the cell has it and log(1 + its total count)
(fitted once on up to 5,000 training cells, kept with the model and carried to query
models), separately for each modality pattern (paired, RNA-only, ATAC-only).
``novelty`` is the shortfall below that fit in units of the training cells' residual
spread: about 0 for a cell like the training cells, large for a cell the
decoders cannot reconstruct (a cell type or state the reference never saw). The
refinement gain (ELBO after ``refine_steps`` of per-cell refinement minus before) is the
amortization gap the encoders leave on the cell, also larger off the training data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.setup import Data
from .inference import Inference
from .latent import Embedding, embed

if TYPE_CHECKING:
    from ._model import SCAMORT

CALIBRATION_CELLS = 5000


def new_cells(model: SCAMORT, data: Data | None, modality: str | None):
    """The aligned cells of ``data`` as :meth:`load_query_data` reads a query (any of the
    model's modalities, features matched by name); its batches must be the model's."""
    from ..data.errors import DataError
    from ..data.query import query_cells

    same_kind = modality is None and isinstance(data, type(model.data))
    if data is None or data is model.data or same_kind:
        return model._inference.cells_of(data)
    spec, cells = query_cells(data, model.spec, modality)
    for key, known, got in zip(spec.covariate_keys, model.spec.categories, spec.categories):
        if len(got) > len(known):
            raise DataError(
                f"obs[{key!r}] of the data has categories the model was not trained on "
                f"({list(got[len(known) :])[:5]}): map them first with "
                "SCAMORT.load_query_data(data, model, modality=...) and query.train(), then "
                "score them with the query model's get_novelty."
            )
    return cells


def _design(part) -> np.ndarray:
    """(n, 1 + 2M) for the cells of ``part``: intercept, and per modality [has it, has it
    * log1p(total count)]."""
    cols = [np.ones(part.n_cells)]
    for j, X in enumerate(part.x.values()):
        has = part.mask[:, j].astype(float)
        cols += [has, has * np.log1p(np.asarray(X.sum(1)).ravel())]
    return np.stack(cols, axis=1)


def _cell_subset(cells, idx):
    """The rows ``idx`` as an in-memory cell table (backed data are read)."""
    return cells.take(idx) if hasattr(cells, "take") else cells.subset(idx)


def _patterns(cells, idx) -> np.ndarray:
    """Each cell's modality pattern as a string key ("10", "01", "11", ...)."""
    return np.array(["".join("1" if v else "0" for v in row) for row in cells.mask[idx]])


def novelty_calibration(model: SCAMORT, seed: int = 0, progress_bar: bool = True) -> dict:
    """The training cells' ELBO-on-depth fit, one per modality pattern (paired,
    RNA-only, ...), whose residual spreads differ (computed once, then kept with the
    model). A query model's is the reference's training cells' (its reference weights
    are the reference's, frozen)."""
    if model._calibration is not None:
        return model._calibration
    inf = model._inference
    if model._calibration_cells is not None:
        inf = Inference(model.module, None, model.spec, model._calibration_cells, inf.chunk_size)
    cells = inf.cells
    n = min(cells.n_cells, CALIBRATION_CELLS)
    pick = np.sort(np.random.default_rng(seed).choice(cells.n_cells, n, replace=False))
    with inf.step("novelty: calibrating on the training cells (once)", progress_bar):
        _, elbos = embed(inf, cells, pick, Embedding(return_elbo=True, seed=seed))
    design = _design(_cell_subset(cells, pick))
    y = elbos["elbo_amortized"].to_numpy()
    patterns = _patterns(cells, pick)
    fits = {}
    for pattern in np.unique(patterns):
        k = patterns == pattern
        coef, *_ = np.linalg.lstsq(design[k], y[k], rcond=None)
        sd = float(np.std(y[k] - design[k] @ coef)) if k.sum() > 2 else 0.0
        fits[pattern] = {"coef": coef.tolist(), "sd": sd or 1.0, "cells": int(k.sum())}
    model._calibration = fits
    return fits


def get_novelty(
    self: SCAMORT,
    data: Data | None = None,
    modality: str | None = None,
    indices: np.ndarray | None = None,
    refine_steps: int = 20,
    batch_size: int = 1024,
    seed: int = 0,
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Per cell, how poorly the model explains it: a score for cells it has not seen.

    Columns: ``elbo`` (amortized, 16 draws), ``elbo_expected`` (what training cells of
    the same depth and modalities reach), ``novelty`` ((expected - elbo) / the training
    cells' residual sd: near 0 for cells like the training data, large for cells the
    model does not explain), ``refinement_gain`` (ELBO gained by ``refine_steps`` steps
    of per-cell refinement: the amortization gap left on the cell; 0 skips it).

    ``data`` takes what :meth:`load_query_data` takes: a MuData with any of the model's
    modalities, or an AnnData of one modality (``modality`` names it), its features
    matched to the model's by name. Cells of batches the model was not trained on are
    scored on a query model (``load_query_data``, then ``train``).

    On a query model (:meth:`load_query_data`) the reference's calibration is used, so
    query cells are scored against the reference's training cells. The calibration is
    computed at the first call (embedding up to 5,000 training cells) and kept.
    """
    cal = novelty_calibration(self, progress_bar=progress_bar)
    inf = self._inference
    cells = new_cells(self, data, modality)
    idx = np.arange(cells.n_cells) if indices is None else np.asarray(indices)
    how = Embedding(batch_size=batch_size, steps=refine_steps, return_elbo=True, seed=seed)
    with inf.step(f"novelty ({refine_steps} refinement steps)", progress_bar):
        _, elbos = embed(inf, cells, idx, how)
    design = _design(_cell_subset(cells, idx))
    patterns = _patterns(cells, idx)
    unknown = sorted(set(patterns) - set(cal))
    if unknown:
        # a modality pattern absent from the training cells (say, paired query cells on
        # a reference without paired cells): the nearest fit with the most cells
        fallback = max(cal, key=lambda p: cal[p]["cells"])
        cal = {**cal, **{p: cal[fallback] for p in unknown}}
    coef = np.stack([cal[p]["coef"] for p in patterns])
    sd = np.array([cal[p]["sd"] for p in patterns])
    expected = (design * coef).sum(1)
    elbo = elbos["elbo_amortized"].to_numpy()
    return pd.DataFrame(
        {
            "elbo": elbo,
            "elbo_expected": expected,
            "novelty": (expected - elbo) / sd,
            "refinement_gain": elbos["elbo_refined"].to_numpy() - elbo,
        },
        index=elbos.index,
    )
