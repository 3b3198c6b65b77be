"""Mapping new data onto a trained reference (scArches surgery) without retraining it.

``load_query_data`` builds a model for the query whose weights are the reference's, with
covariate weights added for the batch (and covariate) categories the reference has not
seen. Only those new weights train: every other weight is frozen (gradient hooks keep
the reference's columns of a covariate layer unchanged, and query training runs without
weight decay, as the scArches recipe does). The new weights start at zero, so a new
batch starts as "no batch effect".

The encoders read covariates only when the reference was built with
``encode_covariates=True`` (what scArches recommends for a reference meant for query
mapping). Otherwise query training adapts the decoders alone, and the query's embedding
is the reference encoders' own; per-cell refinement (``refine_steps``) then moves each
query cell's posterior against the adapted decoders.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.query import query_cells
from ..data.setup import Data

if TYPE_CHECKING:
    from ._model import SCAMORT


def load_query_data(cls, data: Data, reference: SCAMORT, modality: str | None = None) -> SCAMORT:
    """A model of ``data`` (paired, RNA-only or ATAC-only) built on a trained reference.

    Features are matched by name (see :mod:`scamort.data.query`: every reference feature
    must be there; extra ones are dropped with a warning). New batch and covariate
    categories get new covariate weights; all else is frozen. Call :meth:`train` on the
    result to fit the new weights, then use it as any model. ``modality`` names the
    modality of an AnnData query when the reference has several.
    """
    if not reference.is_trained:
        raise ValueError("the reference model is not trained; train it before mapping a query.")
    spec, cells = query_cells(data, reference.spec, modality)
    config = replace(reference.config, n_categories=spec.n_categories)
    model = cls._build(data, spec, cells, config, seed=0)
    old = reference.module.state_dict()
    masks = _surgery(model.module, old, reference.spec.n_categories, spec.n_categories)
    model.module.to(reference.device)
    model._query_hooks = _freeze(model.module, masks)
    # get_novelty scores query cells against the reference's training cells: kept, and
    # calibrated when first asked (the reference's own fit if it has one already)
    model._calibration = reference._calibration
    model._calibration_cells = reference._cells
    return model


def _blocks(n_categories) -> list[np.ndarray]:
    """Column positions of each covariate's one-hot block."""
    starts = np.concatenate([[0], np.cumsum(n_categories)[:-1]])
    return [np.arange(s, s + n) for s, n in zip(starts, n_categories)]


def _surgery(module, old: dict, old_cats, new_cats) -> dict[str, torch.Tensor]:
    """Copy the reference's weights into ``module``; return, per parameter that grew, the
    mask of its new (trainable) entries."""
    old_cols = np.concatenate(_blocks(old_cats))
    new_cols = np.concatenate([b[:n] for b, n in zip(_blocks(new_cats), old_cats)])
    state = module.state_dict()
    masks = {}
    for key, value in state.items():
        before = old[key]
        if before.shape == value.shape:
            state[key] = before.clone()
            continue
        grown = torch.zeros_like(value)
        mask = torch.ones_like(value)
        if key.endswith("log_theta"):  # per-batch dispersion: new batches start at the mean
            grown[: before.shape[0]] = before
            grown[before.shape[0] :] = before.mean(0)
            mask[: before.shape[0]] = 0
        elif value.dim() == 2 and value.shape[0] == before.shape[0]:  # covariate columns
            grown[:, new_cols] = before[:, old_cols]
            mask[:, new_cols] = 0
        else:  # the batch classifier's output rows
            grown[: before.shape[0]] = before
            mask[: before.shape[0]] = 0
        state[key] = grown
        masks[key] = mask
    module.load_state_dict(state)
    return masks


def _masked(mask: torch.Tensor):
    """A gradient hook keeping the entries where ``mask`` is 1; the mask is copied once to
    each device the gradient shows up on (not every step)."""
    on = {}

    def hook(g):
        if g.device not in on:
            on[g.device] = mask.to(g.device)
        return g * on[g.device]

    return hook


def _freeze(module, masks: dict[str, torch.Tensor]) -> list:
    """Freeze every parameter but the new entries of those in ``masks``."""
    hooks = []
    for name, p in module.named_parameters():
        trainable = name in masks and not name.startswith(("batch_classifier", "view_classifiers"))
        p.requires_grad_(trainable)
        if trainable:
            hooks.append(p.register_hook(_masked(masks[name])))
    return hooks
