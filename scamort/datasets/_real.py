"""Real data sets shipped with the package (no download needed)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mudata as md
import numpy as np

_FILE = "snareseq_mouse_cortex.h5mu"


def _data_path(name: str) -> Path:
    """The file shipped in the wheel, or the repository's ``data/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / name, here.parents[1] / "data" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} is not installed with scamort; reinstall the package.")


def snareseq_mouse_cortex(drop_empty_features: bool = False) -> md.MuData:
    """SNARE-seq adult mouse cortex (Chen, Lake & Zhang 2019): 10,309 paired cells.

    RNA: 1,677 genes; ATAC: 25,734 regions (mm10), raw int32 counts. ``.obs`` has
    ``cell_type`` (23 clusters), ``cell_type_coarse`` (15 groups) and ``batch`` (12
    libraries). Curated by scMoMaT (MIT licence); cite Chen et al. 2019.

    Parameters
    ----------
    drop_empty_features
        Remove the 990 regions that have no count in any cell, leaving 24,744 regions
        (a warning says how many were removed). Off by default: the file is returned as
        published, and the model keeps features without counts (setup warns of them).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.read_h5mu(_data_path(_FILE))
        if drop_empty_features:
            dropped = {}
            for name in ("rna", "atac"):
                mod = mdata.mod[name]
                keep = np.asarray(mod.X.sum(0)).ravel() > 0
                if not keep.all():
                    dropped[name] = int((~keep).sum())
                    mdata.mod[name] = mod[:, keep].copy()
            mdata.update()
            if dropped:
                warnings.warn(
                    f"snareseq_mouse_cortex(drop_empty_features=True) removed features with no "
                    f"count in any cell: {dropped}.",
                    stacklevel=2,
                )
    mdata.obs = mdata["rna"].obs.copy()
    return mdata
