"""Make unpaired cells from a paired data set by hiding one modality."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pandas as pd


def unpair(
    mdata: md.MuData,
    frac_rna_only: float = 1 / 3,
    frac_atac_only: float = 1 / 3,
    rna_key: str = "rna",
    atac_key: str = "atac",
    seed: int = 0,
) -> md.MuData:
    """A new MuData in which a random subset of paired cells keeps only one modality.

    ``frac_rna_only`` of the cells lose their ATAC profile and ``frac_atac_only`` their
    RNA profile; the rest stay paired. The input is not modified. ``.obs`` keeps the
    input's columns and gains ``modality`` (paired / rna_only / atac_only). Every feature
    is kept, also one left with no count in the remaining cells.
    """
    if frac_rna_only < 0 or frac_atac_only < 0 or frac_rna_only + frac_atac_only > 1:
        raise ValueError("need 0 <= frac_rna_only, frac_atac_only and their sum <= 1.")
    cells = mdata.obs_names
    rng = np.random.default_rng(seed)
    u = rng.permutation(len(cells))
    n_rna, n_atac = round(frac_rna_only * len(cells)), round(frac_atac_only * len(cells))
    status = np.full(len(cells), "paired", dtype=object)
    status[u[:n_rna]] = "rna_only"
    status[u[n_rna : n_rna + n_atac]] = "atac_only"
    status = pd.Series(status, index=cells)
    keep = {rna_key: status != "atac_only", atac_key: status != "rna_only"}
    mods = {}
    for name, mod in mdata.mod.items():
        sub = (
            mod[keep[name].reindex(mod.obs_names).fillna(True).to_numpy()] if name in keep else mod
        )
        mods[name] = sub.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = md.MuData(mods)
    obs = mdata.obs.copy()
    obs["modality"] = pd.Categorical(status, categories=["paired", "rna_only", "atac_only"])
    out.obs = obs.loc[out.obs_names]
    return out
