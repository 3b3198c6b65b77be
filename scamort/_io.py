"""Reading inputs and writing outputs atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import mudata as md


def read(path: str | os.PathLike):
    """Read a ``.h5mu`` as MuData or a ``.h5ad`` as AnnData."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if path.suffix == ".h5mu":
            return md.read_h5mu(path)
        if path.suffix == ".h5ad":
            return ad.read_h5ad(path)
    raise ValueError(f"{path}: expected a .h5mu or .h5ad file.")


def write_atomic(data, path: str | os.PathLike) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        if isinstance(data, md.MuData):
            data.write_h5mu(tmp)
        else:
            data.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
