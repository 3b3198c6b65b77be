"""Cell sources of the tutorial "After the embedding" (notebooks/analysis.ipynb): markers of
the integrated clusters, a query mapped onto a reference, cells the reference does not
explain. Written by ``scripts/make_notebooks.py``."""

FAST = """import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets needed
# SCAMORT_TUTORIAL_FAST=1 (set by CI) runs on a subsample for a few epochs: it checks
# that every step works; its figures are not meant to be good. Unset, the full data.
FAST = os.environ.get("SCAMORT_TUTORIAL_FAST") == "1"
N_CELLS = 1500 if FAST else None   # None: all 10,309 cells
EPOCHS = 4 if FAST else None       # None: scamort's default for the data size"""

ANALYSIS = [
    (
        "md",
        """# After the embedding: markers, new data, unexplained cells

Three things come after an integrated embedding:

1. **Markers.** Which genes and which peaks mark each cluster? `differential_expression`
   and `differential_accessibility` answer with scvi-tools' tables.
2. **New data.** Next month's samples go into the same space without retraining:
   `load_query_data` (scArches surgery), then a short `train` of the new batches' weights.
3. **Cells the reference does not explain.** `get_novelty` scores each query cell by how
   far its ELBO falls below what the reference's own cells reach.

SNARE-seq mouse cortex plays all parts: eight of its twelve libraries are the reference
(paired), the other four arrive later as an RNA-only query. The astrocytes are left out
of the reference, so the query holds a cell type the reference has never seen.""",
    ),
    ("code", FAST),
    (
        "code",
        """import mudata as md
import numpy as np
import pandas as pd
import scanpy as sc

import scamort

md.set_options(pull_on_update=False)
full = scamort.datasets.snareseq_mouse_cortex()
if N_CELLS:
    rng = np.random.default_rng(0)
    full = full[np.sort(rng.choice(full.n_obs, N_CELLS, replace=False))].copy()
libraries = np.random.default_rng(0).permutation(sorted(full.obs["batch"].unique()))
in_reference = full.obs["batch"].isin(libraries[:8]) & (full.obs["cell_type_coarse"] != "Astro")
later = full.obs["batch"].isin(libraries[8:])
reference_cells = full.obs_names[in_reference.to_numpy()]
reference = md.MuData({m: full[m][reference_cells].copy() for m in ("rna", "atac")})
reference.obs = full.obs.loc[reference_cells].copy()
query = full["rna"][full.obs_names[later.to_numpy()]].copy()   # an RNA-only experiment
query.obs = full.obs.loc[query.obs_names].copy()
print(reference.n_obs, "reference cells;", query.n_obs, "query cells (RNA only)")""",
    ),
    (
        "md",
        """## The reference

`encode_covariates=True` lets the encoders see the batch, which is what scArches
recommends for a model that will take queries: the query's new batches then get their
own encoder weights too.""",
    ),
    (
        "code",
        """scamort.SCAMORT.setup_mudata(reference, batch_key="batch")
model = scamort.SCAMORT(reference, encode_covariates=True, seed=0)
model.train(max_epochs=EPOCHS, progress_bar=False, seed=0)
ref = sc.AnnData(obs=reference.obs[["batch", "cell_type", "cell_type_coarse"]].copy())
ref.obsm["X_scamort"] = model.get_latent_representation()
sc.pp.neighbors(ref, use_rep="X_scamort", random_state=0)
sc.tl.leiden(
    ref, resolution=0.5, flavor="igraph", n_iterations=2, directed=False, random_state=0
)
reference.obs["leiden"] = ref.obs["leiden"].to_numpy()
pd.crosstab(ref.obs["leiden"], ref.obs["cell_type_coarse"])""",
    ),
    (
        "md",
        """## Markers of the clusters

One cluster against the rest (`group2=None`) for every cluster at once. `mode="change"`
(the default) gives `proba_de`, the posterior probability that the absolute log2 fold
change exceeds `delta`, and `is_de_fdr_0.05` calls at a 5 % posterior expected FDR: the
columns of scvi-tools' tables, so code written for MULTIVI reads these.""",
    ),
    (
        "code",
        """de = model.differential_expression(groupby="leiden", delta=0.5)
up = de[de["lfc_mean"] > 0].sort_values("proba_de", ascending=False)
print("genes called up at 5 % FDR, per cluster:",
      up[up["is_de_fdr_0.05"]].groupby("group1", observed=True).size().to_dict())
top = up.groupby("group1", observed=True).head(3)
top[["group1", "lfc_mean", "proba_de", "is_de_fdr_0.05", "raw_normalized_mean1"]]""",
    ),
    (
        "code",
        """markers = list(dict.fromkeys(top.index))  # each cluster's top genes, in order
expression = reference["rna"].copy()
expression.obs["leiden"] = reference.obs["leiden"].to_numpy()
sc.pp.normalize_total(expression, target_sum=1e4)
sc.pp.log1p(expression)
sc.pl.dotplot(expression, markers, groupby="leiden")""",
    ),
    (
        "md",
        """Peaks: the same call for accessibility, here for the largest cluster. MULTIVI's
columns (`prob_da`, `is_da_fdr`, `effect_size`, `emp_prob1`, ...); SNARE-seq's regions
carry the gene they were linked to.""",
    ),
    (
        "code",
        """largest = ref.obs["leiden"].value_counts().index[0]
da = model.differential_accessibility(groupby="leiden", group1=largest)
da = da.join(reference["atac"].var[["linked_gene"]])
da.sort_values("effect_size", ascending=False)[
    ["prob_da", "is_da_fdr", "effect_size", "emp_prob1", "emp_prob2", "linked_gene"]
].head(8)""",
    ),
    (
        "md",
        """Cells without RNA take part through their imputed expression, so an ATAC-only
cluster gets gene markers too; `observed_only=True` uses only the cells that measured the
modality.

## Mapping the new experiment

The query is matched to the reference's genes by name (a missing gene is an error that
names it; extra genes are dropped with a warning). Its four libraries are new batch
categories: they get new covariate weights, and everything else stays frozen.""",
    ),
    (
        "code",
        """query_model = scamort.SCAMORT.load_query_data(query, model, modality="rna")
query_model.train(max_epochs=EPOCHS or 50, progress_bar=False, seed=0)
z_query = query_model.get_latent_representation()

from sklearn.neighbors import KNeighborsClassifier

knn = KNeighborsClassifier(n_neighbors=15).fit(ref.obsm["X_scamort"], ref.obs["cell_type"])
query.obs["predicted"] = knn.predict(z_query)
seen = query.obs["cell_type_coarse"] != "Astro"
accuracy = (query.obs["predicted"] == query.obs["cell_type"])[seen].mean()
print(f"label transfer to the query's cell types the reference has: {accuracy:.2f}")""",
    ),
    (
        "code",
        """both = sc.AnnData(
    obs=pd.concat([
        ref.obs[["cell_type_coarse"]].assign(source="reference"),
        query.obs[["cell_type_coarse"]].assign(source="query (RNA only)"),
    ])
)
both.obsm["X_scamort"] = np.vstack([ref.obsm["X_scamort"], z_query])
sc.pp.neighbors(both, use_rep="X_scamort", random_state=0)
sc.tl.umap(both, random_state=0)
sc.pl.umap(both, color=["cell_type_coarse", "source"], wspace=0.5)""",
    ),
    (
        "md",
        """## Cells the reference does not explain

`get_novelty` compares each cell's ELBO with what the reference's own cells of the same
depth and modalities reach, in units of their spread, and adds the gain of a few steps
of per-cell refinement (the amortization gap left on the cell). The astrocytes, absent
from the reference, should rank on top; a label transferred to them by nearest neighbours
is wrong by construction, and the score says so.""",
    ),
    (
        "code",
        """from sklearn.metrics import roc_auc_score

scores = query_model.get_novelty(refine_steps=20)
scores["cell_type_coarse"] = query.obs.loc[scores.index, "cell_type_coarse"].to_numpy()
is_astro = scores["cell_type_coarse"] == "Astro"
print(f"AUROC of the novelty score for the held-out astrocytes: "
      f"{roc_auc_score(is_astro, scores['novelty']):.2f}")
scores.groupby("cell_type_coarse")["novelty"].median().sort_values(ascending=False).head(6)""",
    ),
]
