"""Write the tutorial notebooks (outputs stripped) from the cell sources below.

    python scripts/make_notebooks.py

Edit the sources here, not the .ipynb files; the notebooks are executed by the docs build.
"""

from pathlib import Path

import nbformat as nbf
from tutorial_analysis import ANALYSIS

FAST = """import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets needed
# SCAMORT_TUTORIAL_FAST=1 (set by CI) runs on a subsample for a few epochs: it checks
# that every step works; its figures are not meant to be good. Unset, the full data.
FAST = os.environ.get("SCAMORT_TUTORIAL_FAST") == "1"
N_CELLS = 1500 if FAST else None   # None: all 10,309 cells
EPOCHS = 4 if FAST else 40"""

QUICKSTART = [
    (
        "md",
        """# Quick start: SNARE-seq with unpaired cells

Fit scamort on the bundled SNARE-seq mouse cortex data (10,309 cells, 1,677 genes, 25,734
regions, 23 published cell types) after hiding the ATAC profile of a third of the cells and
the RNA profile of another third. Then embed, cluster, draw a UMAP, impute the missing
modality, refine the posteriors and look at the amortization gap.

On 2 CPU cores the full run takes about 15 minutes; `FAST` mode (what CI runs) about one.""",
    ),
    ("code", FAST),
    (
        "code",
        """import numpy as np
import scanpy as sc

import scamort

full = scamort.datasets.snareseq_mouse_cortex()
if N_CELLS:
    rng = np.random.default_rng(0)
    full = full[np.sort(rng.choice(full.n_obs, N_CELLS, replace=False))].copy()
mdata = scamort.datasets.unpair(full, frac_rna_only=1 / 3, frac_atac_only=1 / 3, seed=0)
mdata""",
    ),
    ("code", "mdata.obs['modality'].value_counts()"),
    (
        "md",
        """## Fit

`setup_mudata` validates the counts and registers the data; nothing is written into
`mdata`. A cell present in both modalities is paired, a cell in one is unpaired: no
padding, no reordering. `batch` is the sequencing library. The modalities `rna` and
`atac` are recognised by their names; under other names, or with a layer of raw counts or
another likelihood, declare them: `setup_mudata(mdata, modalities={"gex": "rna", "peaks":
scamort.Modality("atac", layer="counts")})`.""",
    ),
    (
        "code",
        """scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
model = scamort.SCAMORT(mdata, seed=0)
model""",
    ),
    (
        "code",
        """model.train(max_epochs=EPOCHS, progress_bar=False, seed=0)
scamort.pl.history(model)""",
    ),
    (
        "md",
        """## Embed, cluster, UMAP

The joint latent exists for every cell; the single-modality latents (`modality="rna"` or
`"atac"`) have NaN rows for cells that lack that modality.

A paired cell is embedded by the average of its RNA and ATAC posteriors (`paired="auto"`,
the default), which places it among the unpaired cells of its type; `paired="product"`
gives its product-of-experts posterior, the sharper one, which refinement works on.""",
    ),
    (
        "code",
        """adata = sc.AnnData(obs=mdata.obs[["cell_type", "modality", "batch"]].copy())
adata.obsm["X_scamort"] = model.get_latent_representation()
sc.pp.neighbors(adata, use_rep="X_scamort", random_state=0)
sc.tl.leiden(adata, resolution=1.0, flavor="igraph", n_iterations=2, directed=False, random_state=0)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color=["cell_type", "modality", "leiden"], wspace=0.5)""",
    ),
    (
        "md",
        """How well do the clusters recover the published cell types, do the RNA-only and
ATAC-only cells land with their paired counterparts, and can labels move from RNA-only
to ATAC-only cells?""",
    ),
    (
        "code",
        """from sklearn.metrics import adjusted_rand_score

from scamort import metrics

status = mdata.obs["modality"].to_numpy()
labels = mdata.obs["cell_type"].to_numpy()
z = adata.obsm["X_scamort"]
paired, rna_only, atac_only = (status == s for s in ("paired", "rna_only", "atac_only"))
z_rna = model.get_latent_representation(modality="rna")
z_atac = model.get_latent_representation(modality="atac")
{
    "ARI (Leiden, resolution 1)": adjusted_rand_score(labels, adata.obs["leiden"]),
    "FOSCTTM (paired cells, RNA vs ATAC embedding)": metrics.foscttm(
        z_rna[paired], z_atac[paired]
    ),
    "label transfer RNA-only -> ATAC-only": metrics.label_transfer_accuracy(
        z[rna_only], labels[rna_only], z[atac_only], labels[atac_only]
    ),
}""",
    ),
    (
        "md",
        """## Impute the missing modality

RNA-only cells get accessibility estimates and ATAC-only cells expression, decoded from
their posterior. The SNARE-seq cells were all paired before we hid one modality, so the
hidden profiles are there to check against: the correlation, across ATAC-only cells, of
the imputed and the hidden expression of each gene.""",
    ),
    (
        "code",
        """expr = model.get_normalized_expression(
    library_size=1e4, indices=np.flatnonzero(atac_only)
)
hidden = full["rna"][expr.index, expr.columns].X.toarray()
hidden = np.log1p(1e4 * hidden / np.maximum(hidden.sum(1, keepdims=True), 1))
pred = np.log1p(expr.to_numpy())
keep = hidden.std(0) > 0
r = [np.corrcoef(pred[:, g], hidden[:, g])[0, 1] for g in np.flatnonzero(keep)]
print(f"median per-gene correlation, imputed vs hidden RNA: {np.median(r):.2f}")
marker = expr.columns[keep][np.argmax(r)]
print(f"best imputed gene: {marker}")""",
    ),
    (
        "code",
        """acc = model.get_accessibility_estimates(indices=np.flatnonzero(rna_only))
acc.iloc[:5, :5]""",
    ),
    (
        "md",
        """## Refine the posteriors

Semi-amortized inference: start from each cell's encoder posterior and take a few
gradient steps on that cell's own ELBO (the decoders stay fixed). `return_elbo=True`
gives each cell's ELBO before and after.""",
    ),
    (
        "code",
        """z_ref, elbos = model.get_latent_representation(refine_steps=20, return_elbo=True)
(elbos["elbo_refined"] - elbos["elbo_amortized"]).describe()""",
    ),
    (
        "md",
        """## The amortization and approximation gaps

On a sample of cells of each modality status: the ELBO after 5, 20 and 100 refinement
steps and at convergence (q\\*), and an importance-weighted estimate of log p(x).""",
    ),
    (
        "code",
        """rng = np.random.default_rng(0)
per_status = 20 if FAST else 60
idx = np.sort(np.concatenate([
    rng.choice(np.flatnonzero(status == s), per_status, replace=False)
    for s in ("paired", "rna_only", "atac_only")
]))
gaps = model.get_gaps(indices=idx, converge_steps=100 if FAST else 300, iw_samples=64)
gaps["modality"] = status[idx]
scamort.gaps.summarize_gaps(gaps, gaps["modality"])""",
    ),
    ("code", """scamort.gaps.plot_gap_curve(gaps, gaps["modality"])"""),
    (
        "md",
        """## Save and load

`save` writes the weights, the configuration and the training history; `load` checks
that the data it is given has the model's features.""",
    ),
    (
        "code",
        """import tempfile

with tempfile.TemporaryDirectory() as tmp:
    model.save(f"{tmp}/model")
    again = scamort.SCAMORT.load(f"{tmp}/model", mdata)
np.abs(again.get_latent_representation() - model.get_latent_representation()).max()""",
    ),
]

INTEGRATION = [
    (
        "md",
        """# Integrating an RNA-only and an ATAC-only dataset with a paired one

A common situation: a small paired multiome experiment, plus larger single-modality
experiments (scRNA-seq, scATAC-seq) of the same tissue done separately. scamort puts all
of them in one latent space, with the paired cells as the bridge.

We make the three datasets from SNARE-seq's 12 sequencing libraries, so that each
dataset also has its own batch effects: libraries 1-4 are the paired experiment,
libraries 5-8 keep only their RNA, libraries 9-12 only their ATAC. The three objects are
built separately, as they would arrive, and combined with `scamort.combine`.""",
    ),
    ("code", FAST),
    (
        "code",
        """import mudata as md
import numpy as np
import scanpy as sc

import scamort

md.set_options(pull_on_update=False)  # keep .obs columns in the modalities (mudata >= 0.4)
full = scamort.datasets.snareseq_mouse_cortex()
if N_CELLS:
    rng = np.random.default_rng(0)
    full = full[np.sort(rng.choice(full.n_obs, N_CELLS, replace=False))].copy()
libraries = sorted(full.obs["batch"].unique())
names = ("paired", "rna_only", "atac_only")
dataset = full.obs["batch"].map(
    {b: names[i * 3 // len(libraries)] for i, b in enumerate(libraries)}
)
full.obs["dataset"] = dataset.to_numpy()
full.obs["dataset"].value_counts()""",
    ),
    (
        "md",
        """Three objects, as a user would have them: a paired MuData, an RNA AnnData and an
ATAC AnnData, each with its own cells and its cell-level annotations in `.obs`.""",
    ),
    (
        "code",
        """def cells(name):
    return full.obs_names[full.obs["dataset"] == name]

obs_cols = ["batch", "cell_type"]
paired = md.MuData({
    "rna": full["rna"][cells("paired")].copy(),
    "atac": full["atac"][cells("paired")].copy(),
})
rna_only = full["rna"][cells("rna_only")].copy()
atac_only = full["atac"][cells("atac_only")].copy()
for a in (paired["rna"], paired["atac"], rna_only, atac_only):
    a.obs = full.obs.loc[a.obs_names, obs_cols].copy()
paired, rna_only, atac_only""",
    ),
    (
        "md",
        """## Combine

`scamort.combine` takes the experiments as they are (a MuData, AnnData objects, or
paths to `.h5mu`, `.h5ad` and 10x `.h5` files) and returns one MuData: each modality over
the features shared by the experiments that measure it, an `obs["dataset"]` column naming
each cell's experiment, and every experiment's cell annotations. Cells in both
modalities are paired, the others unpaired; scamort reads that from the MuData itself.
A gene or peak with no counts in some experiment is kept (setup says how many).""",
    ),
    (
        "code",
        """mdata = scamort.combine(
    {"paired": paired, "rna_only": rna_only, "atac_only": atac_only}
)
mdata""",
    ),
    (
        "md",
        """The library (`batch`) is the batch key. Libraries are nested in datasets, so
it also absorbs differences between the three experiments. (A `dataset` column could be
added with `categorical_covariate_keys=["dataset"]` when libraries are shared between
experiments.)""",
    ),
    (
        "code",
        """scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
model = scamort.SCAMORT(mdata, seed=0)
model.train(max_epochs=EPOCHS, progress_bar=False, seed=0)
model.history.table[["epoch", "elbo_train", "elbo_validation"]].tail(3)""",
    ),
    (
        "code",
        """obs = mdata.obs[["batch", "dataset", "cell_type"]]
adata = sc.AnnData(obs=obs.copy())
adata.obsm["X_scamort"] = model.get_latent_representation()
sc.pp.neighbors(adata, use_rep="X_scamort", random_state=0)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color=["cell_type", "dataset", "batch"], wspace=0.5)""",
    ),
    (
        "md",
        """## Transfer labels to the unpaired datasets

Suppose only the paired experiment is annotated. A nearest-neighbour classifier on the
shared latent space carries its labels to the RNA-only and the ATAC-only datasets; the
published labels of those cells tell us how well.""",
    ),
    (
        "code",
        """from scamort import metrics

z = adata.obsm["X_scamort"]
labels = obs["cell_type"].to_numpy()
ref = (obs["dataset"] == "paired").to_numpy()
{
    f"paired -> {name}": metrics.label_transfer_accuracy(
        z[ref], labels[ref], z[query], labels[query]
    )
    for name in ("rna_only", "atac_only")
    for query in [(obs["dataset"] == name).to_numpy()]
}""",
    ),
    (
        "md",
        """## Impute across datasets

Expression for the ATAC-only dataset, decoded as if every cell came from the
paired experiment's first library (`transform_batch`). This matters here: the RNA
decoder has never seen an RNA profile from the ATAC-only libraries, so their batch
effect on RNA is unknown, and decoding in a library that had RNA puts all cells on one
footing.""",
    ),
    (
        "code",
        """atac_cells = np.flatnonzero(obs["dataset"] == "atac_only")
expr = model.get_normalized_expression(
    indices=atac_cells, library_size=1e4, transform_batch=libraries[0]
)
expr.iloc[:5, :5]""",
    ),
    (
        "md",
        """The ATAC-only cells had RNA before we hid it: compare the imputed expression of
each cell type's top marker, averaged per type, with the hidden truth.""",
    ),
    (
        "code",
        """import pandas as pd

truth = full["rna"][expr.index, expr.columns].X.toarray()
truth = pd.DataFrame(
    np.log1p(1e4 * truth / np.maximum(truth.sum(1, keepdims=True), 1)),
    index=expr.index, columns=expr.columns,
)
types = obs.loc[expr.index, "cell_type"]
mean_pred = np.log1p(expr).groupby(types.to_numpy()).mean()
mean_true = truth.groupby(types.to_numpy()).mean()
r = [np.corrcoef(mean_pred[g], mean_true[g])[0, 1] for g in expr.columns if mean_true[g].std() > 0]
print(f"median per-gene correlation of cell-type means, imputed vs hidden: {np.median(r):.2f}")""",
    ),
]


def write(cells, path: Path) -> None:
    nb = nbf.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.cells = [
        nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        for kind, src in cells
    ]
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i}"
    nbf.write(nb, path)


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent / "notebooks"
    write(QUICKSTART, root / "quickstart.ipynb")
    write(INTEGRATION, root / "integration.ipynb")
    write(ANALYSIS, root / "analysis.ipynb")
