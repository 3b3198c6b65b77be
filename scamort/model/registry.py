"""Registration of the user's data (``setup_mudata`` / ``setup_anndata``), kept beside
the object and never written into it."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping

from mudata import MuData

from ..data import CellData, DataError, DataSpec, register
from ..kinds import KINDS, Modality, kind_named
from ..kinds.modality import as_modality

# setup_* registrations, keyed by id(data) and checked against a weak reference, so
# that nothing is ever written into the user's object.
_REGISTRY: dict[int, tuple[weakref.ref, DataSpec, CellData]] = {}

# setup_mudata's keywords before modalities were declared: old keyword -> (kind, field)
_LEGACY_KEYS = {
    "rna_key": ("rna", "name"),
    "atac_key": ("atac", "name"),
    "rna_layer": ("rna", "layer"),
    "atac_layer": ("atac", "layer"),
}


def setup_mudata(
    mdata: MuData,
    modalities: Mapping[str, str | Modality] | None = None,
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    chunk_size: int = 4096,
    **legacy,
) -> None:
    """Validate and register a MuData whose modalities may hold different cells.

    A cell in several registered modalities is paired; a cell in one is unpaired. No
    zero-padding or reordering is needed. Columns are read from ``mdata.obs`` or,
    failing that, from the modalities' obs. Nothing is written into ``mdata``; raises
    :class:`~scamort.DataError` naming the problem and the fix.

    Parameters
    ----------
    mdata
        The MuData, raw counts in ``.X`` or a layer of each modality.
    modalities
        Which modalities to fit, ``{name in mdata.mod: kind or scamort.Modality}``, e.g.
        ``{"gex": "rna", "peaks": scamort.Modality("atac", layer="counts")}``; a
        :class:`~scamort.Modality` also sets the layer of raw counts and the likelihood
        and its options. ``None`` (default): every modality of ``mdata`` whose kind its
        name says (``rna``, ``gex``, ``expression``, ... for RNA; ``atac``, ``peaks``,
        ``chromatin``, ... for ATAC), with the kind's defaults.
    batch_key
        obs column with the batch (``None``: one batch).
    categorical_covariate_keys
        Further categorical obs columns the decoders condition on.
    chunk_size
        A MuData read with ``backed=True`` stays on disk: its counts (in ``.X``, CSR) are
        read in chunks of this many consecutive cells, for the checks here (one pass over
        the file), for training and for every result.

    ``rna_key``, ``atac_key``, ``rna_layer`` and ``atac_layer`` still work in this
    release (with a ``DeprecationWarning``): declare the modalities instead.

    Returns None, as scvi-tools' ``setup_*`` do; :meth:`SCAMORT.view_setup` shows what
    was registered and :meth:`SCAMORT.get_setup` returns it.
    """
    if modalities is not None and not isinstance(modalities, Mapping):
        raise TypeError(
            "modalities is a mapping {name in mdata.mod: kind or scamort.Modality}, e.g. "
            f"{{'rna': 'rna', 'atac': 'atac'}}; got {modalities!r}."
        )
    if legacy:
        modalities = _from_legacy(modalities, legacy)
    elif modalities is None:
        modalities = _by_name(mdata)
    declared = {m: as_modality(v, m) for m, v in modalities.items()}
    _register(mdata, declared, batch_key, categorical_covariate_keys, chunk_size)


def setup_anndata(
    adata,
    modality: str | Modality = "rna",
    layer: str | None = None,
    batch_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    chunk_size: int = 4096,
) -> None:
    """Validate and register a single-modality AnnData (RNA alone behaves like scVI).

    ``modality`` is its kind (``"rna"``, ``"atac"``) or a :class:`~scamort.Modality`
    (kind, layer, likelihood and options); the modality is named after its kind.
    ``layer`` holds the raw counts (``None``: ``.X``, or the Modality's layer). An
    AnnData read with ``backed="r"`` stays on disk (see :meth:`setup_mudata`). Returns
    None (:meth:`SCAMORT.view_setup` shows what was registered).
    """
    declared = as_modality(modality)
    if layer is not None:
        declared = Modality(declared.kind, layer, **declared.option_dict())
    _register(
        adata,
        {declared.kind: declared.named(declared.kind)},
        batch_key,
        categorical_covariate_keys,
        chunk_size,
    )


def _by_name(mdata: MuData) -> dict[str, str]:
    """Every modality of ``mdata`` with the kind its name says; a DataError for a name
    that says none."""
    if not isinstance(mdata, MuData):
        raise DataError(
            f"setup_mudata takes a MuData, got {type(mdata).__name__}; register an AnnData "
            "with setup_anndata(adata, modality=...)."
        )
    kinds = {m: kind_named(m) for m in mdata.mod}
    unknown = [m for m, k in kinds.items() if k is None]
    if unknown:
        known = {k.name: sorted(k.names) for k in KINDS.values()}
        raise DataError(
            f"cannot tell the kind of data of modality {unknown[0]!r} from its name "
            f"(scamort recognises {known}). Declare the modalities to fit, each with its "
            f"kind (one of {sorted(KINDS)}): setup_mudata(mdata, modalities="
            f"{{{unknown[0]!r}: 'rna', ...}}), leaving out those not to fit."
        )
    return kinds


def _from_legacy(modalities, legacy: dict) -> dict:
    """``modalities`` from the keywords of scamort 0.1.0 (each with a DeprecationWarning)."""
    unknown = sorted(set(legacy) - set(_LEGACY_KEYS))
    if unknown:
        raise TypeError(f"setup_mudata() got an unexpected keyword argument {unknown[0]!r}")
    if modalities is not None:
        raise TypeError(
            f"pass modalities= or the old {sorted(legacy)}, not both; declare the layers in "
            "modalities: {'rna': scamort.Modality('rna', layer='counts'), ...}."
        )
    old = {"rna_key": "rna", "atac_key": "atac", "rna_layer": None, "atac_layer": None}
    for key, value in legacy.items():
        kind, what = _LEGACY_KEYS[key]
        new = (
            "its key in modalities=" if what == "name" else f"scamort.Modality({kind!r}, layer=...)"
        )
        warnings.warn(
            f"setup_mudata({key}=...) is deprecated and will be removed in the next release; "
            f"declare the {kind} modality as {new}, e.g. setup_mudata(mdata, "
            "modalities={'rna': 'rna', 'atac': scamort.Modality('atac', layer='counts')}).",
            DeprecationWarning,
            stacklevel=4,
        )
        old[key] = value
    return {
        old[f"{kind}_key"]: Modality(kind, old[f"{kind}_layer"])
        for kind in ("rna", "atac")
        if old[f"{kind}_key"] is not None
    }


def _register(data, declared, batch_key, covariate_keys, chunk_size=4096) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    spec, cells = register(data, declared, batch_key, tuple(covariate_keys or ()), chunk_size)
    _remember(data, spec, cells)


def get_setup(data) -> DataSpec:
    """What ``setup_*`` registered for ``data``: its modalities (kind, layer,
    likelihood), batch and covariate columns with their categories, and features."""
    return registered(data)[0]


def view_setup(data) -> None:
    """Print what ``setup_*`` registered for ``data`` and how many cells have each
    combination of modalities (scvi-tools' ``view_anndata_setup``)."""
    spec, cells = registered(data)
    print(setup_summary(spec, cells))


def setup_summary(spec: DataSpec, cells) -> str:
    """A few lines: the modalities, the columns and the cells per modality pattern."""
    lines = [f"{'MuData' if spec.is_mudata else 'AnnData'} of {cells.n_cells} cells"]
    for m, d, f in zip(spec.modalities, spec.declared, spec.features):
        options = ", ".join(f"{k}={v!r}" for k, v in d.option_dict().items())
        where = f"layer {d.layer!r}" if d.layer else ".X"
        lines.append(f"  modality {m!r}: {d.kind}, {len(f)} features, counts in {where}; {options}")
    for key, cats in zip(spec.covariate_keys, spec.categories):
        if key is not None:
            shown = ", ".join(map(str, cats[:8])) + (", ..." if len(cats) > 8 else "")
            lines.append(f"  obs[{key!r}]: {len(cats)} categories ({shown})")
    if spec.batch_key is None:
        lines.append("  batch: none (one batch)")
    patterns = {}
    for row in cells.mask:
        key = " + ".join(m for m, v in zip(spec.modalities, row) if v)
        patterns[key] = patterns.get(key, 0) + 1
    for key, n in sorted(patterns.items(), key=lambda kv: -kv[1]):
        lines.append(f"  cells with {key}: {n}")
    return "\n".join(lines)


def _remember(data, spec: DataSpec, cells: CellData) -> None:
    # The entry (and its aligned copy of the counts) goes when the user's object goes.
    if id(data) not in _REGISTRY:
        weakref.finalize(data, _REGISTRY.pop, id(data), None)
    _REGISTRY[id(data)] = (weakref.ref(data), spec, cells)


def registered(data) -> tuple[DataSpec, CellData]:
    """The registration of ``data`` by ``setup_*``; a DataError if there is none."""
    entry = _REGISTRY.get(id(data))
    if entry is None or entry[0]() is not data:
        raise DataError(
            "this object was not set up: call SCAMORT.setup_mudata(mdata, ...) "
            "or SCAMORT.setup_anndata(adata, ...) first."
        )
    return entry[1], entry[2]
