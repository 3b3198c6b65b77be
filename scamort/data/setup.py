"""Validate and register AnnData / MuData: the only module that reads the user's object.

``setup(...)`` checks the data and returns a frozen :class:`DataSpec` (what was
registered) and a :class:`CellData` (sparse counts aligned to one cell index, explicit
modality masks, covariate codes). Nothing is written into the user's object.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from mudata import MuData

from ..kinds import Modality
from ..nn.covariates import BATCH
from .backed import BackedCells, check_backed_matrix, is_backed_matrix
from .cells import CellData
from .counts import align_rows, as_counts, check_cells_have_counts
from .errors import DataError, DataWarning, EmptyFeaturesWarning

Data = AnnData | MuData


@dataclass(frozen=True)
class DataSpec:
    """What ``setup_*`` registered; JSON-serialisable, saved with a model."""

    modalities: tuple[str, ...]  # names in the data, in module order
    declared: tuple[Modality, ...]  # each modality's declaration (kind, layer, options)
    batch_key: str | None
    categorical_covariate_keys: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]  # batch first, then each covariate key
    features: tuple[tuple[str, ...], ...]  # var_names per modality
    is_mudata: bool

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(d.kind for d in self.declared)

    def __repr__(self) -> str:  # short: the features are many
        mods = ", ".join(
            f"{m}: {d.kind}, {len(f)} features"
            for m, d, f in zip(self.modalities, self.declared, self.features)
        )
        return f"DataSpec({mods}; batch_key={self.batch_key!r})"

    @property
    def layers(self) -> tuple[str | None, ...]:
        """Where each modality's raw counts live (None: ``.X``)."""
        return tuple(d.layer for d in self.declared)

    def declaration(self, modality: str) -> Modality:
        return self.declared[self.modalities.index(modality)]

    @property
    def covariate_keys(self) -> tuple[str | None, ...]:
        return (self.batch_key, *self.categorical_covariate_keys)

    @property
    def n_categories(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.categories)

    def to_dict(self) -> dict:
        out = asdict(replace(self, declared=()))
        out["declared"] = [d.to_dict() for d in self.declared]
        return out

    @classmethod
    def from_dict(cls, d: dict, modalities: dict[str, Modality] | None = None) -> DataSpec:
        """Read :meth:`to_dict`'s output. A spec saved before modalities were declared
        (``kinds`` and ``layers``) takes its declarations from ``modalities`` (the saved
        module configuration's), with the saved layers."""
        d = dict(d)
        if "declared" in d:
            declared = tuple(Modality.from_dict(v) for v in d.pop("declared"))
        else:
            d.pop("kinds")
            declared = tuple(
                Modality(modalities[m].kind, layer, name=m, **modalities[m].option_dict())
                for m, layer in zip(d["modalities"], d.pop("layers"))
            )
        tup = {
            k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
            if isinstance(v, list)
            else v
            for k, v in d.items()
        }
        return cls(declared=declared, **tup)


# ---- reading the object ------------------------------------------------------------------
def modality_views(data: Data, spec_modalities: tuple[str, ...]) -> dict[str, AnnData]:
    if isinstance(data, MuData):
        missing = [m for m in spec_modalities if m not in data.mod]
        if missing:
            raise DataError(
                f"modality {missing[0]!r} not found in the MuData (it has {list(data.mod)}). "
                "Declare the modalities it has: setup_mudata(mdata, modalities={name: kind, ...})."
            )
        return {m: data.mod[m] for m in spec_modalities}
    return {spec_modalities[0]: data}


def _cells(data: Data, mods: dict[str, AnnData]) -> pd.Index:
    cells = data.obs_names
    _check_unique(cells, "obs_names", "the MuData")
    for m, a in mods.items():
        _check_unique(a.obs_names, "obs_names", f"modality {m!r}")
        _check_unique(a.var_names, "var_names", f"modality {m!r}")
        if a.n_obs == 0 or a.n_vars == 0:
            raise DataError(
                f"modality {m!r} is empty ({a.n_obs} cells x {a.n_vars} features); "
                "remove it from the data, or leave it out of setup_mudata's modalities."
            )
        if cells.get_indexer(a.obs_names).min() < 0:
            raise DataError(
                f"cells of modality {m!r} are missing from the MuData's obs_names; "
                "call mdata.update() after changing a modality."
            )
    return cells


def _check_unique(index: pd.Index, what: str, where: str) -> None:
    if not index.is_unique:
        dup = index[index.duplicated()].unique()[:5].tolist()
        fix = "obs_names_make_unique()" if what == "obs_names" else "var_names_make_unique()"
        raise DataError(
            f"{where} has duplicate {what}, e.g. {dup}. Make them unique, "
            f"e.g. with .{fix}, before setup."
        )


def _counts(a: AnnData, layer: str | None, m: str) -> sp.csr_matrix:
    if layer is None:
        X = a.X
        if X is None:
            raise DataError(f"modality {m!r} has no .X; pass the layer with raw counts.")
    elif layer not in a.layers:
        raise DataError(
            f"layer {layer!r} not found in modality {m!r} "
            f"(layers: {list(a.layers)}). Pass the layer holding raw counts, "
            "or leave the layer unset to use .X."
        )
    else:
        X = a.layers[layer]
    try:
        return as_counts(X, f"modality {m!r} ({'.X' if layer is None else f'layer {layer!r}'})")
    except DataError as err:
        if a.raw is None:
            raise
        # scanpy's workflow keeps the counts in .raw, which a layer argument cannot name
        raise DataError(
            f"{err} Modality {m!r} has counts in .raw: copy them to a layer, "
            "adata.layers['counts'] = adata.raw[:, adata.var_names].X, and declare that "
            "layer."
        ) from None


def _column(data: Data, mods: dict[str, AnnData], key: str, cells: pd.Index) -> pd.Series:
    """A per-cell column from the MuData's obs, or else from the modalities' obs."""
    if key in data.obs:
        col = data.obs[key]
    else:
        parts = [a.obs[key].astype(object) for a in mods.values() if key in a.obs]
        if not parts:
            cols = sorted(set(data.obs.columns).union(*(a.obs.columns for a in mods.values())))
            raise DataError(
                f"key {key!r} not found in obs (columns: {cols}). Name an existing column, or "
                "leave it unset."
            )
        col = pd.concat(parts)
        clash = col.groupby(level=0).nunique() > 1
        if clash.any():
            raise DataError(
                f"obs[{key!r}] disagrees between modalities for cells "
                f"{clash[clash].index[:5].tolist()}; make it one value per cell."
            )
        col = col[~col.index.duplicated()].reindex(cells)
    if col.isna().any():
        raise DataError(
            f"obs[{key!r}] is missing for {int(col.isna().sum())} cells "
            f"(e.g. {col.index[col.isna()][:3].tolist()}); fill it in or drop them."
        )
    return col.astype(str)


# ---- the two entry points --------------------------------------------------------------
def register(
    data: Data,
    modalities: dict[str, Modality],
    batch_key: str | None,
    covariate_keys: tuple[str, ...],
    chunk_size: int = 4096,
) -> tuple[DataSpec, CellData | BackedCells]:
    """Validate training data. ``modalities``: name -> its declaration."""
    if not modalities:
        raise DataError("no modality to fit: declare at least one (modalities={name: kind}).")
    names = tuple(modalities)
    mods = modality_views(data, names)
    cells = _cells(data, mods)
    categories = []
    for key in (batch_key, *covariate_keys):
        col = _column(data, mods, key, cells) if key is not None else None
        categories.append(("all",) if col is None else tuple(sorted(col.unique())))
    spec = DataSpec(
        modalities=names,
        declared=tuple(modalities[m].named(m) for m in names),
        batch_key=batch_key,
        categorical_covariate_keys=tuple(covariate_keys),
        categories=tuple(categories),
        features=tuple(tuple(mods[m].var_names.astype(str)) for m in names),
        is_mudata=isinstance(data, MuData),
    )
    cell_data = to_cell_data(data, spec, chunk_size)
    warn_empty_features(spec, cell_data)
    warn_unlikely_design(spec, cell_data)
    return spec, cell_data


def warn_unlikely_design(spec: DataSpec, cells) -> None:
    """A :class:`DataWarning` for what is legal but most likely a mistake: a batch key
    with about one category per cell (a barcode or cell name, not a batch), and several
    modalities that share no cell (paired cells whose names differ between modalities)."""
    n_batches, n = spec.n_categories[BATCH], cells.n_cells
    if spec.batch_key is not None and n >= 20 and n_batches > n / 2:
        warnings.warn(
            f"obs[{spec.batch_key!r}] has {n_batches} categories for {n} cells: a batch key "
            "groups cells by sample or library, and this one looks like a cell identifier. "
            "Check batch_key.",
            DataWarning,
            stacklevel=5,
        )
    if len(spec.modalities) > 1 and not cells.mask.all(1).any():
        warnings.warn(
            f"no cell is in every modality ({list(spec.modalities)}): nothing pairs them, so "
            "their cells are placed together only as far as the model can tell unaided. If "
            "the cells were measured together, make their names match across modalities "
            "(barcode suffixes such as '-1' often differ), then call mdata.update().",
            DataWarning,
            stacklevel=5,
        )


def empty_features(spec: DataSpec, cells) -> dict[str, np.ndarray]:
    """Per modality, the names of the features with no count in any cell that has it."""
    out = {}
    for j, m in enumerate(spec.modalities):
        empty = cells.cells_per_feature(m) == 0
        if empty.any():
            out[m] = np.asarray(spec.features[j])[empty]
    return out


def warn_empty_features(spec: DataSpec, cells) -> None:
    """One warning naming the features without counts (kept: they are data, not errors).

    A gene or peak with no count among the cells of its modality is common in any real
    subset, split or concatenation of experiments. The model keeps it: its decoded mean
    is driven toward zero and every likelihood stays finite.
    """
    empty = empty_features(spec, cells)
    if not empty:
        return
    parts = [
        f"{len(v)} of {len(spec.features[spec.modalities.index(m)])} features of modality "
        f"{m!r} (e.g. {v[:3].tolist()})"
        for m, v in empty.items()
    ]
    warnings.warn(
        "features with no counts in any cell that has their modality are kept (their "
        f"decoded values will be near zero): {'; '.join(parts)}. Remove them first "
        "(scanpy.pp.filter_genes(adata, min_cells=1)) if you do not want them.",
        EmptyFeaturesWarning,
        stacklevel=5,  # the user's setup_* call
    )


def to_cell_data(data: Data, spec: DataSpec, chunk_size: int = 4096) -> CellData | BackedCells:
    """Validate ``data`` against a registered spec and align it (training or new data).

    Data opened backed (counts left on disk) give a :class:`BackedCells` that reads them
    in chunks of ``chunk_size`` cells; anything else is read into memory.
    """
    if spec.is_mudata != isinstance(data, MuData):
        want = "MuData" if spec.is_mudata else "AnnData"
        raise DataError(f"this model was set up on a {want}; pass a {want}.")
    mods = modality_views(data, spec.modalities)
    cells = _cells(data, mods)
    mask = np.zeros((len(cells), len(mods)), dtype=bool)
    pos = {}
    for j, m in enumerate(spec.modalities):
        _check_features(mods[m].var_names, spec.features[j], m)
        pos[m] = cells.get_indexer(mods[m].obs_names)
        mask[pos[m], j] = True
    if not mask.any(1).all():
        bad = cells[~mask.any(1)][:5].tolist()
        raise DataError(
            f"cells {bad} are in no modality registered ({list(spec.modalities)}); drop them "
            "from the MuData, or register the modality they have too."
        )
    cov = _codes(data, mods, spec, cells)
    sources = {m: mods[m].X for m, layer in zip(spec.modalities, spec.layers) if layer is None}
    if any(is_backed_matrix(X) for X in sources.values()):
        if len(sources) < len(mods) or not all(is_backed_matrix(X) for X in sources.values()):
            raise DataError(
                "some modalities are on disk (backed) and some are not, or the counts are in "
                "a layer (backed mode keeps only .X on disk): put the raw counts in .X of "
                "every modality and open the file backed."
            )
        for m, X in sources.items():
            check_backed_matrix(X, m)
        rows = {}
        for m in spec.modalities:
            rows[m] = np.full(len(cells), -1, dtype=np.int64)
            rows[m][pos[m]] = np.arange(len(pos[m]))
        backed = BackedCells(
            cells,
            sources,
            rows,
            mask,
            cov,
            {m: len(f) for m, f in zip(spec.modalities, spec.features)},
            chunk_size,
        )
        backed.validate()
        return backed
    x = {
        m: align_rows(_counts(mods[m], spec.layers[j], m), pos[m], len(cells))
        for j, m in enumerate(spec.modalities)
    }
    mask = check_cells_have_counts(cells, x, mask)
    return CellData(cells, x, mask, cov)


def _codes(data: Data, mods: dict[str, AnnData], spec: DataSpec, cells: pd.Index) -> np.ndarray:
    """(n_cells, K) category codes of the batch and covariate columns."""
    cov = np.zeros((len(cells), len(spec.categories)), dtype=np.int64)
    for k, (key, cats) in enumerate(zip(spec.covariate_keys, spec.categories)):
        if key is None:
            continue
        col = _column(data, mods, key, cells)
        unknown = sorted(set(col.unique()) - set(cats))
        if unknown:
            raise DataError(
                f"obs[{key!r}] has categories {unknown[:5]} that the model was not "
                f"trained on (known: {list(cats)[:10]})."
            )
        cov[:, k] = pd.Categorical(col, categories=list(cats)).codes
    return cov


def _check_features(names: pd.Index, expected: tuple[str, ...], m: str) -> None:
    got = np.asarray(names.astype(str))
    if len(got) != len(expected) or not (got == np.asarray(expected)).all():
        n = min(len(got), len(expected))
        diff = np.flatnonzero(got[:n] != np.asarray(expected[:n]))
        where = (
            f"first difference at position {diff[0]}: {got[diff[0]]!r} vs {expected[diff[0]]!r}"
            if len(diff)
            else f"{len(got)} features vs {len(expected)}"
        )
        raise DataError(
            f"features of modality {m!r} do not match the model ({where}). Subset and order "
            f"the data's var_names to the model's, e.g. adata[:, model_features]."
        )
