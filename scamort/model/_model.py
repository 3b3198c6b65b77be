"""The user-facing class, composed from one file per concern.

Each concern lives in its own module as plain functions whose first argument is the
model (``self``); the class body below binds them as its methods. There is no mixin
tree: reading this file gives the whole API, and each method's code is one import away.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..data.cells import batches_without_paired
from ..data.setup import Data
from ..module import ModuleConfig, MultiVAE
from ..module.config import check_option
from . import (
    access,
    diagnostics,
    differential,
    latent,
    novelty,
    persistence,
    query,
    registry,
    training,
    values,
)
from .registry import _registered

_LIKELIHOODS = {"rna": ("nb", "zinb"), "atac": ("bernoulli", "poisson")}


# batch-swap consistency's weight where single-modality batches make it the default
CYCLE_WEIGHT = 0.3


def _has_single_modality_batch(mask: np.ndarray, batch: np.ndarray) -> bool:
    """Whether, with several modalities and batches, some batch has no cell with every
    modality: separate experiments, whose encoders meet their batch effects with no
    paired cell of the same batch to align them."""
    several = len(np.unique(batch)) > 1
    return several and len(batches_without_paired(mask, batch)) > 0


def _paired_fraction(mask: np.ndarray) -> float:
    """The fraction of cells that have every registered modality (0 with one modality)."""
    if mask.shape[1] < 2:
        return 0.0
    return float(mask.all(axis=1).mean())


class SCAMORT:
    """Product-of-experts VAE for RNA + ATAC, paired and unpaired cells in one latent space.

    Call :meth:`setup_mudata` or :meth:`setup_anndata` on the data first.

    Parameters
    ----------
    data
        The AnnData / MuData registered with ``setup_*``.
    n_latent, n_hidden, n_layers, dropout
        Latent dimension and the shape of every encoder and decoder network.
    n_layers_encoder, n_layers_decoder
        Hidden layers of the encoders / of the decoders, where they differ from
        ``n_layers`` (``None``: ``n_layers``).
    rna_likelihood
        ``"nb"`` (default) or ``"zinb"``.
    atac_likelihood
        ``"bernoulli"`` on binarized peaks with cell and region factors (PeakVI, default)
        or ``"poisson"`` on counts with a cell depth offset.
    dispersion
        ``"gene"``: one inverse dispersion per gene; ``"gene-batch"``: per gene and batch.
    encode_covariates
        Also feed the covariates to the encoders (off by default, as in scVI).
    cross_reconstruction
        For paired cells, each single-modality posterior must also explain the other
        modality (the subset ELBO of the joint data). Off: it explains only its own.
    single_view_weight
        Weight of the single-modality ELBOs of paired cells relative to the joint ELBO.
    single_views
        ``"all"``: each paired cell's every single-modality ELBO, every step.
        ``"sample"``: one of them per paired cell and step, drawn at random and weighted
        so that the loss is unbiased; one decoding per paired cell fewer.
        ``"auto"`` (default): ``"sample"`` when more than half of the registered cells
        are paired (there the single views are most of a step's work, and sampling them
        keeps the quality; see the benchmarks), ``"all"`` otherwise. The choice is
        stored in :attr:`config`.
    atac_input
        What the ATAC expert reads: ``"binary"`` peaks (PeakVI) or ``"tfidf"``,
        log1p(1e4 x TF x IDF) of the binarized peaks (TF: over the cell's open peaks; IDF:
        cells with ATAC / (1 + cells where the peak is open), from the training data).
    adversarial_batch_weight
        Weight of adversarial batch mixing (as MULTIVI's): a small classifier learns the
        batch from z and the encoders are trained to make its guess uniform over the
        other batches. 0 (default) turns it off; it needs at least two batches.
    adversarial_view_weight
        Weight of adversarial view mixing (0, default, turns it off; 10 is the weight
        screened): per modality, a small classifier learns whether a posterior read
        from that modality alone is a paired cell's (its single-modality view) or a
        cell's measured in that modality only, and the encoders are trained to make it
        guess the other (both classes weighted equally). It acts only in minibatches
        that hold both paired cells and cells measured in one modality. At 10 it brings
        RNA-only and ATAC-only cells among the paired cells' views of their modality
        (modality iLISI 0.06-0.11 higher on SNARE-seq's and the simulator's separate
        experiments and thirds splits), with clusters and label transfer level or a
        little lower; but a cell type that one experiment alone has loses part of its
        neighbourhood to the other experiments' cells, whichever experiment has it
        (simulator: its share of own-type neighbours 0.53-0.71 against 0.68-0.80
        without it; weight 3 costs half to most of that). Use it where the experiments
        hold the same cell types. See the benchmarks.
    cycle_weight
        Weight of batch-swap consistency (0 turns it off): each cell's expected profile
        is decoded under the batch of another cell of the minibatch, and the encoder of
        that modality must read it back as the same posterior (a KL divergence per
        cell). It teaches the encoders to read through what the decoders model as batch
        effects, without asking the batches to have the same cell types, as the
        adversary does. ``"auto"`` (default): 0.3 for separate experiments (several
        batches, and some batch without a single paired cell: an RNA-only or ATAC-only
        experiment, whose encoder meets its batch effect with no paired cell to align
        it), 0 otherwise or with ``atac_input="tfidf"``, which cannot read an expected
        profile. The choice is stored in :attr:`config`.
    cross_cycle_weight
        Weight of modality-swap consistency (0, default, turns it off): a cell lacking a
        modality has it decoded from its experts' mean (the product of the experts it
        has, without the prior) under the batch and size of a cell of the minibatch that
        has it, and that modality's encoder must read it back as that product. It ties
        the experts together on the cells that no paired cell resembles.
    output_covariates
        Also feed the covariates to the decoders' output layers: a per-feature offset
        of every batch (and covariate category) on the logits, so that an additive batch
        effect on a feature is modelled exactly. ``None`` (default): on where
        either swap-consistency term is.
    prior_expert
        Whether the N(0, I) prior is one expert of every posterior's product (default).
        ``False``: a cell's posterior is the product of its modalities' experts alone, so
        a single-modality cell's posterior is its expert, trained as a posterior in its
        own right (no shrinkage that differs between the modalities); the embeddings
        then never include the prior.
    cell_factor_hidden
        Width of the hidden layer of the network that reads the ATAC cell factor (the
        cell's capture efficiency) off its peaks; ``None``: ``n_hidden``.
    peak_sampling
        Bernoulli ATAC only: during training, score every open peak of a cell exactly
        and the closed ones on a random ``peak_sampling`` fraction (< 1) or number (>= 1)
        of the peak columns per minibatch, weighted by the inverse inclusion probability
        (reconstruction sampling: unbiased, and a training step's ATAC cost grows with
        the open peaks). ``None`` (default): every column; the sampled likelihood is
        faster per epoch but loses integration quality at a fixed number of epochs (see
        docs/speed.md), so it is not the default. Validation,
        :meth:`get_elbo`, :meth:`get_gaps`, refinement and every result use the exact
        likelihood.
    seed
        Seed of the weight initialisation.
    """

    def __init__(
        self,
        data: Data,
        n_latent: int = 20,
        n_hidden: int = 256,
        n_layers: int = 1,
        n_layers_encoder: int | None = None,
        n_layers_decoder: int | None = None,
        dropout: float = 0.1,
        rna_likelihood: Literal["nb", "zinb"] = "nb",
        atac_likelihood: Literal["bernoulli", "poisson"] = "bernoulli",
        dispersion: Literal["gene", "gene-batch"] = "gene",
        encode_covariates: bool = False,
        cross_reconstruction: bool = True,
        single_view_weight: float = 1.0,
        single_views: Literal["auto", "all", "sample"] = "auto",
        atac_input: Literal["binary", "tfidf"] = "binary",
        adversarial_batch_weight: float = 0.0,
        adversarial_view_weight: float = 0.0,
        cycle_weight: float | Literal["auto"] = "auto",
        cross_cycle_weight: float = 0.0,
        output_covariates: bool | None = None,
        prior_expert: bool = True,
        cell_factor_hidden: int | None = None,
        peak_sampling: float | None = None,
        seed: int = 0,
    ):
        spec, cells = _registered(data)
        check_option("rna_likelihood", rna_likelihood, _LIKELIHOODS["rna"])
        check_option("atac_likelihood", atac_likelihood, _LIKELIHOODS["atac"])
        chosen = {"rna": rna_likelihood, "atac": atac_likelihood}
        check_option("single_views", single_views, {"auto", "all", "sample"})
        if single_views == "auto":
            single_views = "sample" if _paired_fraction(cells.mask) > 0.5 else "all"
        if isinstance(cycle_weight, str):
            if cycle_weight != "auto":
                raise ValueError(
                    f"cycle_weight must be a number >= 0 or 'auto', got {cycle_weight!r}."
                )
            separate = _has_single_modality_batch(cells.mask, cells.cov[:, 0])
            # (TF-IDF input cannot read an expected profile: off with it)
            cycle_weight = CYCLE_WEIGHT if separate and atac_input != "tfidf" else 0.0
        config = ModuleConfig(
            n_features={m: len(f) for m, f in zip(spec.modalities, spec.features)},
            likelihoods={m: chosen[k] for m, k in zip(spec.modalities, spec.kinds)},
            n_categories=spec.n_categories,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            n_layers_encoder=n_layers_encoder,
            n_layers_decoder=n_layers_decoder,
            dropout=dropout,
            encode_covariates=encode_covariates,
            dispersion=dispersion,
            cross_reconstruction=cross_reconstruction,
            single_view_weight=single_view_weight,
            single_views=single_views,
            atac_input=atac_input,
            adversarial_batch_weight=adversarial_batch_weight,
            adversarial_view_weight=adversarial_view_weight,
            cycle_weight=cycle_weight,
            cross_cycle_weight=cross_cycle_weight,
            output_covariates=output_covariates,
            prior_expert=prior_expert,
            cell_factor_hidden=cell_factor_hidden,
            peak_sampling=peak_sampling,
        )
        self._init(data, spec, cells, config, seed)
        for m in self.module._tfidf_modalities():
            j = spec.modalities.index(m)
            idf = cells.mask[:, j].sum() / (1.0 + cells.cells_per_feature(m))
            getattr(self.module, f"idf_{m}").copy_(torch.as_tensor(idf, dtype=torch.float32))

    def _init(self, data, spec, cells, config, seed):
        self.data, self.spec, self._cells, self.config = data, spec, cells, config
        # Backed data are read in chunks of this many cells: new data passed to a result
        # method are read the same way as the training data.
        self._chunk_size = getattr(cells, "chunk_size", 4096)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = MultiVAE(config)
        self.history = pd.DataFrame()
        self.is_trained = False
        # This process's rank in the last distributed training (0 otherwise): only rank 0
        # should write results.
        self.global_rank = 0
        # A query model's gradient hooks (load_query_data), and the training cells'
        # ELBO-on-depth fit behind get_novelty (computed when first needed).
        self._query_hooks = None
        self._calibration = None

    # ---- setup (registry.py) -------------------------------------------------------------
    setup_mudata = staticmethod(registry.setup_mudata)
    setup_anndata = staticmethod(registry.setup_anndata)

    # ---- training (training.py) ----------------------------------------------------------
    train = training.train
    _chunk_loaders = training._chunk_loaders

    # ---- cells, devices, posteriors (access.py) ------------------------------------------
    device = property(access.device)
    to_device = access.to_device
    _cell_data = access._cell_data
    _batches = access._batches
    _posterior = access._posterior
    _view_mask = access._view_mask
    _check_modality = access._check_modality
    _log_lik = access._log_lik
    _has = access._has
    _modality_of = access._modality_of
    _batch_code = access._batch_code

    # ---- latent spaces (latent.py) -------------------------------------------------------
    get_latent_representation = latent.get_latent_representation
    write_latent_representation = latent.write_latent_representation
    _check_latent_options = latent._check_latent_options
    _check_prior = latent._check_prior
    _refinement = latent._refinement
    _unbridged_batches = latent._unbridged_batches
    _refine_unpaired = latent._refine_unpaired
    _refine_rows = latent._refine_rows
    _latent = latent._latent

    # ---- normalized values and imputation (values.py) ------------------------------------
    get_normalized = values.get_normalized
    get_normalized_expression = values.get_normalized_expression
    get_accessibility_estimates = values.get_accessibility_estimates

    # ---- differential expression and accessibility (differential.py) --------------------
    differential_expression = differential.differential_expression
    differential_accessibility = differential.differential_accessibility

    # ---- new data on a trained model (query.py, novelty.py) -----------------------------
    load_query_data = classmethod(query.load_query_data)
    get_novelty = novelty.get_novelty
    _novelty_calibration = novelty._novelty_calibration

    # ---- diagnostics (diagnostics.py) ----------------------------------------------------
    get_elbo = diagnostics.get_elbo
    get_gaps = diagnostics.get_gaps

    # ---- save / load (persistence.py) ----------------------------------------------------
    save = persistence.save
    load = classmethod(persistence.load)

    def __repr__(self) -> str:
        c = self.config
        mods = ", ".join(
            f"{m}: {c.n_features[m]} features ({c.likelihoods[m]})" for m in self.spec.modalities
        )
        paired = int((self._cells.mask.sum(1) > 1).sum())
        return (
            f"SCAMORT({self._cells.n_cells} cells, {paired} paired; {mods}; "
            f"n_latent={c.n_latent}, trained={self.is_trained})"
        )
