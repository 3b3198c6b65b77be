"""The data designs of the quality benchmark: which cells the models see, with which modality.

Every design returns ``(full, split, label_key)``: ``full`` a paired MuData with every
count (the truth for imputation), ``split`` the MuData the models see, whose
``obs["modality"]`` is each cell's status (paired / rna_only / atac_only).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

DESIGNS = (
    "snare_thirds", "snare_paired", "snare_libraries", "sim10k", "sim_experiments",
    "sim5k_p100k", "sim5k_p250k",
)  # fmt: skip
# sim<cells>k_p<peaks>k: the simulator at realistic peak counts, thirds split, 2 batches
_SIM_PEAKS = re.compile(r"sim(\d+)k_p(\d+)k")
STATUS = ["paired", "rna_only", "atac_only"]


def _simulate(seed: int, n_cells: int, n_peaks: int, **kw):
    """The simulator with 2,000 genes and 10 types; every cell paired unless ``kw`` says."""
    import scamort

    options = {"frac_paired": 1.0, "frac_rna_only": 0.0, **kw}
    return scamort.datasets.simulate_multiome(
        n_cells=n_cells, n_genes=2_000, n_peaks=n_peaks, n_cell_types=10, seed=seed, **options
    )


def load(dataset: str, seed: int):
    import scamort

    if dataset.startswith("snare"):
        full = scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True)
    elif dataset == "sim10k":
        full = _simulate(seed, 10_000, 10_000)
    elif dataset == "sim_experiments":
        full = _simulate(
            seed, 6_000, 10_000, n_batches=6, separate_experiments=True, keep_hidden=True
        )
        blocks = {s: [f"batch_{b}" for b in range(i, 6, 3)] for i, s in enumerate(STATUS)}
        return full, experiments_split(full, blocks), "cell_type"
    elif m := _SIM_PEAKS.fullmatch(dataset):
        full = _simulate(seed, int(m.group(1)) * 1000, int(m.group(2)) * 1000)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DESIGNS}")
    if dataset == "snare_libraries":
        blocks = library_blocks(full.obs["batch"].unique(), seed)
        return full, experiments_split(full, blocks), "cell_type"
    frac = (0.0, 0.0) if dataset == "snare_paired" else (1 / 3, 1 / 3)
    split = scamort.datasets.unpair(full, *frac, seed=seed)
    return full, split, "cell_type"


def library_blocks(libraries, seed: int) -> dict[str, list[str]]:
    """SNARE-seq's 12 libraries dealt by a seeded shuffle into three blocks of four: a
    paired experiment, an RNA-only one and an ATAC-only one."""
    order = np.random.default_rng(seed).permutation(sorted(libraries))
    k = len(order) // 3
    return {s: sorted(order[i * k : (i + 1) * k].tolist()) for i, s in enumerate(STATUS)}


def experiments_split(full, blocks: dict[str, list[str]]):
    """Three separate experiments built from whole batches (``blocks``: status -> the
    batches of that experiment), as a user would have them (a paired MuData, an RNA
    AnnData, an ATAC AnnData), put together by :func:`scamort.combine`. Modality status is
    confounded with batch. ``snare_libraries`` deals SNARE-seq's libraries this way;
    ``sim_experiments`` the simulator's separate experiments (two batches each)."""
    import mudata as md

    import scamort

    obs = full.obs.drop(columns=["modality"], errors="ignore")

    def part(modality: str, status: str):
        cells = full.obs_names[full.obs["batch"].isin(blocks[status]).to_numpy()]
        a = full[modality][cells].copy()
        a.obs = obs.loc[cells].copy()
        return a

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiments = {
            "paired": md.MuData({"rna": part("rna", "paired"), "atac": part("atac", "paired")}),
            "rna_only": part("rna", "rna_only"),
            "atac_only": part("atac", "atac_only"),
        }
        split = scamort.combine(experiments, modalities={"rna_only": "rna", "atac_only": "atac"})
    split.obs["modality"] = pd.Categorical(split.obs["dataset"].astype(str), categories=STATUS)
    split.uns["blocks"] = blocks
    return split
