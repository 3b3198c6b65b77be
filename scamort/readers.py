"""Reading users' files: ``.h5mu``, ``.h5ad`` and 10x Genomics ``.h5``, with clear errors.

Every failure to read a file is a :class:`ReadError` whose message starts with
``cannot read FILE:`` and says what is wrong and what to do. The file is only ever opened
for reading (``backed="r+"`` is the one exception, asked for by the caller to write
results into it).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import h5py
import mudata as md

from .data.setup import DataError
from .kinds import KINDS

SUFFIXES = (".h5mu", ".h5ad", ".h5")

# 10x feature types (Cell Ranger ARC) and the modality each becomes.
# 10x Cell Ranger feature types -> the kind (and modality name) holding them
TENX_TYPES = {t: kind.name for kind in KINDS.values() for t in sorted(kind.tenx_feature_types)}


class ReadError(DataError):
    """A file cannot be read; the message names the file, the cause and the fix."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        super().__init__(f"cannot read {path}: {cause}")


def file_kind(path: str | os.PathLike) -> str:
    """``"mudata"``, ``"anndata"`` or ``"10x"``: what an HDF5 file holds, by its content.

    Raises :class:`ReadError` for a missing path, a directory, an empty or non-HDF5 file,
    an unknown suffix, or a suffix that disagrees with the content.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(path, "no such file.")
    if path.is_dir():
        raise ReadError(path, "it is a directory; pass a .h5mu, .h5ad or 10x .h5 file.")
    if path.suffix not in SUFFIXES:
        raise ReadError(
            path,
            f"unknown file type {path.suffix or '(no suffix)'!r}; scamort reads .h5mu "
            "(MuData), .h5ad (AnnData) and .h5 (10x Genomics filtered_feature_bc_matrix.h5).",
        )
    if path.stat().st_size == 0:
        raise ReadError(path, "the file is empty (0 bytes); write or copy it again.")
    if not h5py.is_hdf5(path):
        raise ReadError(
            path,
            f"it is not an HDF5 file (a {path.suffix} file is HDF5): it is corrupt, "
            "truncated or of another format; write or copy it again.",
        )
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
    except OSError as err:
        raise ReadError(
            path, f"the HDF5 file is truncated or corrupt ({err}); write or copy it again."
        ) from err
    kind = "mudata" if "mod" in keys else "10x" if "matrix" in keys else "anndata"
    if kind == "anndata" and not keys & {"X", "obs", "var"}:
        raise ReadError(
            path,
            f"the HDF5 file holds neither a MuData, an AnnData nor a 10x matrix (its "
            f"top-level groups: {sorted(keys)}).",
        )
    expected = {".h5mu": "mudata", ".h5ad": "anndata", ".h5": "10x"}[path.suffix]
    if kind != expected:
        what = {"mudata": "a MuData", "anndata": "an AnnData", "10x": "a 10x matrix"}
        right = {"mudata": ".h5mu", "anndata": ".h5ad", "10x": ".h5"}[kind]
        raise ReadError(
            path,
            f"the name says {what[expected]} ({path.suffix}) but the file holds "
            f"{what[kind]}; rename it to {path.with_suffix(right).name}.",
        )
    return kind


def read(path: str | os.PathLike, backed: str | None = None) -> md.MuData | ad.AnnData:
    """Read a ``.h5mu`` (MuData), ``.h5ad`` (AnnData) or 10x ``.h5`` (a paired MuData with
    ``rna`` and ``atac``, see :func:`read_10x_multiome`).

    ``backed="r"`` / ``"r+"`` leaves the count matrices on disk (not for 10x files).
    Raises :class:`ReadError` with the cause and the fix when the file cannot be read.
    """
    kind = file_kind(path)
    if kind == "10x":
        if backed:
            raise ReadError(path, "10x .h5 files cannot be read backed; convert to .h5mu first.")
        return _read_10x(path)
    reader = md.read_h5mu if kind == "mudata" else ad.read_h5ad
    return _guarded(path, lambda: reader(path, backed=backed))


def read_10x_multiome(path: str | os.PathLike) -> md.MuData:
    """Cell Ranger ARC's ``filtered_feature_bc_matrix.h5`` as a paired MuData.

    Read with :func:`scanpy.read_10x_h5` (``gex_only=False``) and split by
    ``var["feature_types"]``: "Gene Expression" becomes ``rna`` (gene symbols as
    var_names, made unique with ``var_names_make_unique``, ids in ``gene_ids``) and
    "Peaks" becomes ``atac``. Other feature types (antibody capture, ...) are left out
    with a warning. A file with only one of the two types gives a MuData with that one.
    """
    if file_kind(path) != "10x":
        raise ReadError(path, "it is not a 10x matrix (no 'matrix' group).")
    return _read_10x(path)


def _read_10x(path) -> md.MuData:
    """:func:`read_10x_multiome` on a file already checked by :func:`file_kind`."""
    import scanpy as sc

    adata = _guarded(path, lambda: sc.read_10x_h5(path, gex_only=False))
    if "feature_types" not in adata.var:
        raise ReadError(path, "the 10x matrix has no feature types.")
    types = adata.var["feature_types"].astype(str)
    other = sorted(set(types) - set(TENX_TYPES))
    if other:
        warnings.warn(
            f"{path}: feature types {other} are not modelled by scamort and were left out.",
            stacklevel=2,
        )
    mods = {}
    for feature_type, name in TENX_TYPES.items():
        keep = (types == feature_type).to_numpy()
        if keep.any():
            mod = adata[:, keep].copy()
            mod.var_names_make_unique()  # gene symbols repeat; other names are unique
            mods[name] = mod
    if not mods:
        raise ReadError(
            path,
            f"the 10x matrix has no features of the types scamort models ({list(TENX_TYPES)}; "
            f"it has {sorted(set(types))}).",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData(mods)


def _guarded(path, read_it):
    """Run a reader of the ecosystem; what it raises on a damaged file becomes a ReadError
    (the original error stays attached as the cause)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return read_it()
    except (OSError, KeyError, ValueError, TypeError, IndexError) as err:
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ReadError(
            path,
            f"the file is damaged or incomplete ({type(err).__name__}: {cause}); write or "
            "copy it again.",
        ) from err
