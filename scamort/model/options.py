"""``SCAMORT(...)``'s options below the handful it shows: :class:`ModelOptions`, and the
resolution of their ``"auto"`` values from the registered cells."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .._checks import check_option, with_fields
from ..data.cells import batches_without_paired
from ..nn.covariates import batch_codes

# batch-swap consistency's weight where single-modality batches make it the default
CYCLE_WEIGHT = 0.3


@dataclass(frozen=True)
class ModelOptions:
    """The model's training terms and network details, one level below ``SCAMORT(...)``.

    Pass them to ``SCAMORT`` by name (``SCAMORT(mdata, cycle_weight=0)``) or as one object
    (``SCAMORT(mdata, options=ModelOptions(cycle_weight=0))``); a name that is not a field
    here is a TypeError that lists the fields. Each modality's likelihood and its options
    are declared with the modality (:class:`~scamort.Modality`).

    n_layers_encoder, n_layers_decoder
        Hidden layers of the encoders / of the decoders, where they differ from
        ``n_layers`` (``None``: ``n_layers``).
    encode_covariates
        Also feed the covariates to the encoders (off by default, as in scVI).
    cross_reconstruction
        For paired cells, each single-modality posterior must also explain the other
        modalities (the subset ELBO of the joint data). Off: it explains only its own.
    single_view_weight
        Weight of the single-modality ELBOs of paired cells relative to the joint ELBO.
    single_views
        ``"all"``: each paired cell's every single-modality ELBO, every step.
        ``"sample"``: one of them per paired cell and step, drawn at random and weighted
        so that the loss is unbiased; one decoding per paired cell fewer.
        ``"auto"`` (default): ``"sample"`` when more than half of the registered cells
        are paired (there the single views are most of a step's work, and sampling them
        keeps the quality; see the benchmarks), ``"all"`` otherwise. The choice is
        stored in the model's ``config``.
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
        it), 0 otherwise or where a modality's input cannot read an expected profile
        (ATAC ``input="tfidf"``). The choice is stored in the model's ``config``.
    cross_cycle_weight
        Weight of modality-swap consistency (0, default, turns it off): a cell lacking a
        modality has it decoded from its experts' mean (the product of the experts it
        has, without the prior) under the batch and size of a cell of the minibatch that
        has it, and that modality's encoder must read it back as that product. It ties
        the experts together on the cells that no paired cell resembles.
    output_covariates
        Also feed the covariates to the decoders' output layers: a per-feature offset
        of every batch (and covariate category) on the logits, so that an additive batch
        effect on a feature is modelled exactly. ``None`` (default): on where either
        swap-consistency term is.
    prior_expert
        Whether the N(0, I) prior is one expert of every posterior's product (default).
        ``False``: a cell's posterior is the product of its modalities' experts alone, so
        a single-modality cell's posterior is its expert, trained as a posterior in its
        own right (no shrinkage that differs between the modalities); the embeddings
        then never include the prior.
    """

    n_layers_encoder: int | None = None
    n_layers_decoder: int | None = None
    encode_covariates: bool = False
    cross_reconstruction: bool = True
    single_view_weight: float = 1.0
    single_views: Literal["auto", "all", "sample"] = "auto"
    adversarial_batch_weight: float = 0.0
    adversarial_view_weight: float = 0.0
    cycle_weight: float | Literal["auto"] = "auto"
    cross_cycle_weight: float = 0.0
    output_covariates: bool | None = None
    prior_expert: bool = True

    def __post_init__(self):
        check_option("single_views", self.single_views, {"auto", "all", "sample"})
        if isinstance(self.cycle_weight, str) and self.cycle_weight != "auto":
            raise ValueError(
                f"cycle_weight must be a number >= 0 or 'auto', got {self.cycle_weight!r}."
            )

    @classmethod
    def build(cls, options: ModelOptions | None, given: dict) -> ModelOptions:
        """``options`` (or the defaults) with the fields in ``given`` set."""
        note = " (a modality's likelihood and options are declared with scamort.Modality)"
        return with_fields(cls, options, given, "SCAMORT", note)

    def resolved(self, mask: np.ndarray, cov: np.ndarray, unreadable: bool) -> ModelOptions:
        """The options with ``"auto"`` resolved for cells with modality mask ``mask`` and
        covariate codes ``cov``; ``unreadable``: some modality's input cannot read an
        expected profile."""
        single_views = self.single_views
        if single_views == "auto":
            single_views = "sample" if paired_fraction(mask) > 0.5 else "all"
        cycle_weight = self.cycle_weight
        if cycle_weight == "auto":
            separate = has_single_modality_batch(mask, batch_codes(cov))
            cycle_weight = CYCLE_WEIGHT if separate and not unreadable else 0.0
        return replace(self, single_views=single_views, cycle_weight=cycle_weight)


def has_single_modality_batch(mask: np.ndarray, batch: np.ndarray) -> bool:
    """Whether, with several modalities and batches, some batch has no cell with every
    modality: separate experiments, whose encoders meet their batch effects with no
    paired cell of the same batch to align them."""
    several = len(np.unique(batch)) > 1
    return several and len(batches_without_paired(mask, batch)) > 0


def paired_fraction(mask: np.ndarray) -> float:
    """The fraction of cells that have every registered modality (0 with one modality)."""
    if mask.shape[1] < 2:
        return 0.0
    return float(mask.all(axis=1).mean())
