"""Registration of the user's data (``setup_mudata`` / ``setup_anndata``), kept beside
the object and never written into it."""

from __future__ import annotations

import weakref
from typing import Literal

from ..data import (
    CellData,
    DataError,
    DataSpec,
    register,
)
from ..module.config import check_option

# setup_* registrations, keyed by id(data) and checked against a weak reference, so
# that nothing is ever written into the user's object.


_REGISTRY: dict[int, tuple[weakref.ref, DataSpec, CellData]] = {}


def setup_mudata(
    mdata,
    rna_key: str | None = "rna",
    atac_key: str | None = "atac",
    rna_layer: str | None = None,
    atac_layer: str | None = None,
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    chunk_size: int = 4096,
) -> DataSpec:
    """Validate and register a MuData whose modalities may hold different cells.

    A cell in both ``rna_key`` and ``atac_key`` is paired; a cell in one of them is
    unpaired. No zero-padding or reordering is needed. Columns are read from
    ``mdata.obs`` or, failing that, from the modalities' obs. Raises
    :class:`~scamort.data.DataError` naming the problem and the fix.

    A MuData read with ``backed=True`` stays on disk: its counts (in ``.X``, CSR) are
    read in chunks of ``chunk_size`` consecutive cells, for the checks here (one pass
    over the file), for training and for every result.
    """
    mods = {
        m: (k, layer)
        for m, k, layer in ((rna_key, "rna", rna_layer), (atac_key, "atac", atac_layer))
        if m is not None
    }
    return _register(mdata, mods, batch_key, categorical_covariate_keys, chunk_size)


def setup_anndata(
    adata,
    modality: Literal["rna", "atac"] = "rna",
    layer: str | None = None,
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    chunk_size: int = 4096,
) -> DataSpec:
    """Validate and register a single-modality AnnData (RNA alone behaves like scVI).

    An AnnData read with ``backed="r"`` stays on disk (see :meth:`setup_mudata`).
    """
    check_option("modality", modality, {"rna", "atac"})
    return _register(
        adata, {modality: (modality, layer)}, batch_key, categorical_covariate_keys, chunk_size
    )


def _register(data, mods, batch_key, covariate_keys, chunk_size=4096) -> DataSpec:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    spec, cells = register(data, mods, batch_key, tuple(covariate_keys or ()), chunk_size)
    _remember(data, spec, cells)
    return spec


def _remember(data, spec: DataSpec, cells: CellData) -> None:
    # The entry (and its aligned copy of the counts) goes when the user's object goes.
    if id(data) not in _REGISTRY:
        weakref.finalize(data, _REGISTRY.pop, id(data), None)
    _REGISTRY[id(data)] = (weakref.ref(data), spec, cells)


def _registered(data) -> tuple[DataSpec, CellData]:
    entry = _REGISTRY.get(id(data))
    if entry is None or entry[0]() is not data:
        raise DataError(
            "this object was not set up: call SCAMORT.setup_mudata(mdata, ...) "
            "or SCAMORT.setup_anndata(adata, ...) first."
        )
    return entry[1], entry[2]
