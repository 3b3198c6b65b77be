"""Differential expression and accessibility with scvi-tools' semantics and machinery.

The Bayesian decision machinery is scvi-tools' own (``_de_core`` and
``DifferentialComputation``: the change mode with ``delta``, the vanilla mode, batch
correction, the posterior expected FDR, pseudocounts, one-vs-rest), so tables written
for scVI's and MULTIVI's results read scamort's the same way. scamort supplies what that
machinery asks of a model: normalized values of sampled cells under a posterior draw
(``model_fn``), the latent means (``representation_fn``), and a minimal stand-in for
scvi-tools' data manager (the counts and the batch categories), since scamort does not
register data with scvi-tools. The raw-count columns are computed here, on the cells
that measured the modality (scvi-tools' helper would average absent cells' empty rows
in as zeros).

Every cell takes part, including unpaired ones through the modality they lack (an
ATAC-only cluster's markers from its imputed expression); ``observed_only=True``
restricts both groups to the cells that measured the modality.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch

from .._checks import check_option
from ..data.setup import Data
from ..nn.covariates import BATCH, with_batch

if TYPE_CHECKING:
    from ._model import SCAMORT


class _Registry:
    """The two things scvi-tools' differential code reads from its data manager."""

    def __init__(self, adata, counts, batches):
        self.adata, self._counts, self._batches = adata, counts, batches

    def get_from_registry(self, key):
        return self._counts

    def get_state_registry(self, key):
        return pd.Series({"categorical_mapping": np.asarray(self._batches)})


def _sampler(model: SCAMORT, modality: str, cells, positions, seed: int, batch_size: int):
    """scvi-tools' ``model_fn``: for ``n_samples_overall`` cells drawn (seeded) from the
    selection, one posterior draw each, decoded to normalized values, under
    ``transform_batch`` (a batch name) or the cell's own batch (None)."""
    inf = model._inference
    decoder = model.module.decoders[modality]
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=inf.device).manual_seed(seed)

    @torch.inference_mode()
    def model_fn(adata, indices, transform_batch=None, n_samples_overall=None, **_):
        pick = positions[np.asarray(indices)]
        if n_samples_overall is not None:
            pick = rng.choice(pick, n_samples_overall)
        code = inf.batch_code(transform_batch)
        out = []
        for batch in inf.batches(cells, pick, batch_size):
            q = inf.posterior(batch, "joint")
            z = q.loc + q.scale * torch.randn(q.loc.shape, generator=gen, device=q.loc.device)
            cov = batch["cov"] if code is None else with_batch(batch["cov"], code)
            dist = model.module.generative(z, cov, modality)
            out.append(decoder.normalized_mean(dist).float().cpu().numpy())
        return np.concatenate(out)

    return model_fn


def _raw_stats(counts, has, binary: bool):
    """scvi-tools' raw-count columns, over the cells of each group that have the modality."""

    def stats(registry, idx1, idx2):
        out = {}
        for k, idx in (("1", idx1), ("2", idx2)):
            idx = np.flatnonzero(np.asarray(idx))
            idx = idx[has[idx]]
            if len(idx) == 0:  # no cell of the group measured the modality
                nan = np.full(counts.shape[1], np.nan)
                names = ("emp_mean",) if binary else ("raw_mean", "non_zeros_proportion")
                out.update({f"{n}{k}": nan for n in names})
                if not binary:
                    out[f"raw_normalized_mean{k}"] = nan
                continue
            x = counts[idx]
            if binary:
                out[f"emp_mean{k}"] = np.asarray((x > 0).mean(0)).ravel()
                continue
            lib = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
            out[f"raw_mean{k}"] = np.asarray(x.mean(0)).ravel()
            out[f"non_zeros_proportion{k}"] = np.asarray((x > 0).mean(0)).ravel()
            norm = x.multiply(1e4 / lib[:, None]).tocsr()
            out[f"raw_normalized_mean{k}"] = np.asarray(norm.mean(0)).ravel()
        return out

    return stats


def differential(
    self: SCAMORT,
    modality: str,
    groupby: str | None = None,
    group1: str | list[str] | None = None,
    group2: str | None = None,
    idx1: np.ndarray | str | None = None,
    idx2: np.ndarray | str | None = None,
    mode: Literal["vanilla", "change"] = "change",
    delta: float | None = None,
    batch_size: int | None = None,
    all_stats: bool = True,
    batch_correction: bool = False,
    batchid1: list[str] | None = None,
    batchid2: list[str] | None = None,
    fdr_target: float = 0.05,
    silent: bool = False,
    data: Data | None = None,
    observed_only: bool = False,
    seed: int = 0,
    **kwargs,
) -> pd.DataFrame:
    """Differential values of ``modality`` between groups of cells, as scvi-tools' SCVI /
    MULTIVI.

    ``groupby`` names an obs column; ``group1`` (one or several of its values; all of them
    when None) is compared with ``group2`` (the rest when None). Or ``idx1`` / ``idx2``
    give the cells directly (masks, positions or obs query strings). ``mode="change"``
    (default) gives ``proba_de``, the posterior probability that |log2 fold change| >
    ``delta`` (``None``: the kind's default, 0.25 for genes, 0.05 for peaks), and
    ``is_de_fdr_{fdr_target}``, the calls at that posterior expected FDR;
    ``mode="vanilla"`` the probability that group 1's value exceeds group 2's.
    ``batch_correction=True`` decodes every cell in each batch (``batchid1`` /
    ``batchid2``) and compares like with like; ``pseudocounts`` and the other options of
    :meth:`scvi.model.base.DifferentialComputation.get_bayes_factors` pass through
    ``kwargs``. Progress is shown (a bar over the comparisons, and one over the cells
    decoded when that lasts); ``silent=True`` hides it.

    Every cell is used, cells lacking the modality through their imputed values; with
    ``observed_only=True`` only the cells that measured it. Samples are drawn from
    ``seed``. The table has scvi-tools' columns (``proba_de``, ``bayes_factor``,
    ``lfc_mean``, ``lfc_median``, ``lfc_std``, ``scale1``, ``scale2``, ``raw_mean1``, ...),
    one row per feature and comparison, sorted by ``proba_de`` (``bayes_factor`` in
    vanilla mode), or the kind's customary columns (ATAC: MULTIVI's, see
    :meth:`differential_accessibility`).
    """
    from scvi.model.base._de_core import _de_core

    check_option("mode", mode, {"change", "vanilla"})
    inf = self._inference
    check_option("modality", modality, self.spec.modalities)
    kind = self.spec.declaration(modality).entry
    j = self.spec.modalities.index(modality)
    cells = inf.cells_of(data)
    source = self.data if data is None else data
    obs = source.obs.reindex(cells.obs_names)
    keep = cells.mask[:, j] if observed_only else np.ones(cells.n_cells, dtype=bool)
    positions = np.flatnonzero(keep)
    groups = {"groupby": groupby, "group1": group1, "group2": group2}
    idx1, idx2 = _check_groups(obs, positions, cells, modality, observed_only, idx1, idx2, **groups)
    table = ad.AnnData(obs=obs.iloc[positions].copy())
    counts = cells.x[modality][positions]
    for b in [*(batchid1 or []), *(batchid2 or [])]:
        inf.batch_code(b)  # an unknown batch name is an error naming the batches
    binary = self.module.decoders[modality].binary_observations
    one = idx1 is not None or (group1 is not None and np.size(group1) == 1)
    with inf.step(f"differential {modality}: decoding cells", not silent):
        result = _de_core(
            _Registry(table, counts, self.spec.categories[BATCH]),
            model_fn=_sampler(self, modality, cells, positions, seed, batch_size or 1024),
            representation_fn=lambda adata, indices: self.get_latent_representation(
                data, indices=positions[np.asarray(indices)], refine_steps=0
            ),
            groupby=groupby,
            group1=group1,
            group2=group2,
            idx1=idx1,
            idx2=idx2,
            all_stats=all_stats,
            all_stats_fn=_raw_stats(counts, cells.mask[positions, j], binary),
            col_names=list(self.spec.features[j]),
            mode=mode,
            batchid1=batchid1,
            batchid2=batchid2,
            delta=kind.differential_delta if delta is None else delta,
            batch_correction=batch_correction and self.spec.batch_key is not None,
            fdr=fdr_target,
            silent=silent or one,  # its bar counts comparisons: one says nothing
            **kwargs,
        )
    if kind.differential_table is None:
        return result
    return kind.differential_table(result, mode, fdr_target)


def _check_groups(obs, positions, cells, modality, observed_only, idx1, idx2, groupby, group1,
                  group2):  # fmt: skip
    """Validate the groups; return idx1 and idx2 re-expressed over ``positions``."""
    if groupby is not None and groupby not in obs:
        raise ValueError(f"groupby={groupby!r} is not a column of obs (columns: {list(obs)}).")
    if groupby is None and idx1 is None:
        raise ValueError("pass groupby (an obs column) or idx1 (the cells of group 1).")
    for name, idx in (("idx1", idx1), ("idx2", idx2)):
        if idx is not None and not isinstance(idx, str):
            idx = np.asarray(idx)
            if idx.dtype == bool and len(idx) != cells.n_cells:
                raise ValueError(f"{name} as a mask needs one entry per cell ({cells.n_cells}).")
    idx1 = _restrict(idx1, positions, cells.n_cells)
    idx2 = _restrict(idx2, positions, cells.n_cells)
    which = f" that measured {modality!r} (observed_only=True)" if observed_only else ""
    for name, idx in (("idx1", idx1), ("idx2", idx2)):
        if idx is not None and not isinstance(idx, str) and not np.any(idx):
            raise ValueError(f"{name} holds no cells{which}.")
    if groupby is not None and idx1 is None:
        present = set(obs.iloc[positions][groupby].astype(str))
        named = [group1] if isinstance(group1, str) else list(group1 or [])
        missing = [g for g in [*named, *([group2] if group2 else [])] if str(g) not in present]
        if missing:
            raise ValueError(f"groups {missing} of {groupby!r} have no cells{which}.")
    return idx1, idx2


def _restrict(idx, positions, n_cells):
    """A mask or index list over all cells, re-expressed over ``positions``."""
    if idx is None or isinstance(idx, str):
        return idx
    idx = np.asarray(idx)
    mask = idx if idx.dtype == bool else np.isin(np.arange(n_cells), idx)
    return mask[positions]


def differential_expression(
    self: SCAMORT,
    groupby: str | None = None,
    group1: str | list[str] | None = None,
    group2: str | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Differential expression between groups of cells: :meth:`differential` on the RNA
    modality (``delta`` 0.25 by default; ATAC-only cells take part through their imputed
    expression unless ``observed_only=True``). Every other argument is
    :meth:`differential`'s."""
    rna = self._inference.modality_of("rna")
    return self.differential(rna, groupby, group1, group2, **kwargs)


def differential_accessibility(
    self: SCAMORT,
    groupby: str | None = None,
    group1: str | list[str] | None = None,
    group2: str | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Differential accessibility between groups of cells, with MULTIVI's output columns:
    :meth:`differential` on the ATAC modality (``delta`` 0.05 by default), on the
    accessibility estimates (Bernoulli ATAC: probabilities without the cell factor).

    Columns: ``prob_da``, ``is_da_fdr`` (at ``fdr_target``; change mode),
    ``bayes_factor``, ``effect_size`` (group 2 minus group 1), ``emp_effect``,
    ``est_prob1`` / ``est_prob2`` and ``emp_prob1`` / ``emp_prob2`` (observed fractions
    of open cells among the cells with ATAC), and ``comparison``, ``group1``, ``group2``
    where groups were named. RNA-only cells take part through their imputed
    accessibility unless ``observed_only=True``. Every other argument is
    :meth:`differential`'s.
    """
    atac = self._inference.modality_of("atac")
    return self.differential(atac, groupby, group1, group2, **kwargs)


def _signature_of_differential(wrapper) -> None:
    """``wrapper`` shows :func:`differential`'s parameters, ``modality`` left out (the
    wrapper names it), so ``help()`` and the API docs list every argument it takes."""
    sig = inspect.signature(differential)
    params = [p for p in sig.parameters.values() if p.name not in ("modality", "kwargs")]
    wrapper.__signature__ = sig.replace(parameters=[*params, sig.parameters["kwargs"]])


_signature_of_differential(differential_expression)
_signature_of_differential(differential_accessibility)
