"""New data for a trained reference model: features matched by name, new categories added.

The rule for features (written down, as scvi-tools' ``prepare_query_anndata`` is for
scVI): each modality of the query must hold every feature the reference was trained on;
a missing one is an error that names it (its counts are unknown, and zeros would be read
as "measured, not expressed"). Extra features are dropped with one warning, and the rest
are put in the reference's order. A query may hold any of the reference's modalities:
a paired MuData, an RNA-only or an ATAC-only AnnData (``modality`` names it), or a MuData
with one of them.

Categories of the batch and covariate columns that the reference has not seen are
appended to the reference's (the model grows covariate weights for them); known ones
keep their codes.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from mudata import MuData

from .cells import CellData
from .counts import align_rows, check_cells_have_counts
from .errors import DataError
from .setup import DataSpec, _cells, _check_unique, _column, _counts


def query_views(data, spec: DataSpec, modality: str | None) -> dict[str, AnnData]:
    """The query's AnnData per reference modality it holds."""
    if isinstance(data, MuData):
        mods = {m: data.mod[m] for m in spec.modalities if m in data.mod}
        if not mods:
            raise DataError(
                f"the query holds none of the reference's modalities {list(spec.modalities)} "
                f"(it has {list(data.mod)}); rename them to match."
            )
        return mods
    if modality is None:
        if len(spec.modalities) > 1:
            raise DataError(
                "an AnnData query holds one modality: say which with modality= "
                f"(one of {list(spec.modalities)})."
            )
        modality = spec.modalities[0]
    if modality not in spec.modalities:
        raise DataError(
            f"modality={modality!r} is not one of the reference's {list(spec.modalities)}."
        )
    return {modality: data}


def _matched(a: AnnData, features: tuple[str, ...], m: str) -> AnnData:
    _check_unique(a.var_names, "var_names", f"query modality {m!r}")
    names = a.var_names.astype(str)
    missing = pd.Index(features).difference(names)
    if len(missing):
        raise DataError(
            f"the query's modality {m!r} lacks {len(missing)} of the reference's "
            f"{len(features)} features (e.g. {missing[:5].tolist()}); a query must measure "
            "every feature the reference was trained on."
        )
    extra = len(names) - len(features)
    if extra:
        warnings.warn(
            f"the query's modality {m!r} has {extra} features the reference does not know; "
            "they are left out.",
            stacklevel=4,
        )
    if extra or not (names == np.asarray(features)).all():
        a = a[:, list(features)]
    return a


def query_cells(data, spec: DataSpec, modality: str | None = None) -> tuple[DataSpec, CellData]:
    """The query's spec (the reference's, categories extended) and its aligned cells."""
    mods = query_views(data, spec, modality)
    mods = {m: _matched(a, spec.features[spec.modalities.index(m)], m) for m, a in mods.items()}
    cells = _cells(data, mods) if isinstance(data, MuData) else data.obs_names
    if not isinstance(data, MuData):
        _check_unique(cells, "obs_names", "the query")
    n = len(cells)
    mask = np.zeros((n, len(spec.modalities)), dtype=bool)
    x = {}
    for j, (m, f) in enumerate(zip(spec.modalities, spec.features)):
        if m in mods:
            pos = cells.get_indexer(mods[m].obs_names)
            mask[pos, j] = True
            x[m] = align_rows(_counts(mods[m], spec.layers[j], m), pos, n)
        else:
            x[m] = sp.csr_matrix((n, len(f)), dtype=np.float32)
    mask = check_cells_have_counts(cells, x, mask)
    categories, cov = [], np.zeros((n, len(spec.categories)), dtype=np.int64)
    for k, (key, known) in enumerate(zip(spec.covariate_keys, spec.categories)):
        if key is None:
            categories.append(known)
            continue
        col = _column(data, mods, key, cells)
        new = sorted(set(col.unique()) - set(known))
        cats = (*known, *new)
        categories.append(cats)
        cov[:, k] = pd.Categorical(col, categories=list(cats)).codes
    query_spec = replace(spec, categories=tuple(categories))
    return query_spec, CellData(cells, x, mask, cov)
