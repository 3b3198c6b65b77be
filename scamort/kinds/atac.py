"""ATAC: peak counts, Bernoulli on binarized peaks with cell and region factors (PeakVI,
default) or Poisson on counts with a cell depth offset."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_option
from ..likelihoods import PeakBernoulli, Poisson, peak_bernoulli_log_lik
from ..likelihoods.sampled import sampled_peak_bernoulli_log_lik
from ..nn.decoders import Decoder, log_library
from ..nn.inputs import Binarize, Log1p, TfIdf
from ..nn.mlp import MLP
from ..nn.sparse import SparseRows
from .base import DecoderShape, Kind, KindOptions


@dataclass(frozen=True)
class ATACOptions(KindOptions):
    """Options of an ATAC modality.

    likelihood
        ``"bernoulli"`` on binarized peaks with cell and region factors (PeakVI, default)
        or ``"poisson"`` on counts with a cell depth offset.
    input
        What the expert reads: ``"binary"`` (default) the likelihood's own view of the
        peaks (binarized for Bernoulli, log1p counts for Poisson), or ``"tfidf"``,
        log1p(1e4 x TF x IDF) of the binarized peaks (TF: over the cell's open peaks;
        IDF: cells with ATAC / (1 + cells where the peak is open), from the training
        data). TF-IDF input cannot read a decoded expected profile, so batch-swap
        consistency is off with it.
    cell_factor_hidden
        Bernoulli: width of the hidden layer of the network that reads the cell factor
        (the cell's capture efficiency) off its peaks; ``None``: the model's ``n_hidden``.
    peak_sampling
        Bernoulli: during training, score every open peak of a cell exactly and the
        closed ones on a random ``peak_sampling`` fraction (< 1) or number (>= 1) of the
        peak columns per minibatch, weighted by the inverse inclusion probability
        (unbiased; a step's cost grows with the open peaks). ``None`` (default): every
        column; the sampled likelihood is faster per epoch but loses integration quality
        at a fixed number of epochs (docs/speed.md). Validation, ELBOs, refinement and
        every result use the exact likelihood.
    """

    likelihoods: ClassVar[tuple[str, ...]] = ("bernoulli", "poisson")
    likelihood: Literal["bernoulli", "poisson"] = "bernoulli"
    input: Literal["binary", "tfidf"] = "binary"
    cell_factor_hidden: int | None = None
    peak_sampling: float | None = None

    def __post_init__(self):
        super().__post_init__()
        check_option("input", self.input, {"binary", "tfidf"})
        if self.peak_sampling is not None and not self.peak_sampling > 0:
            raise ValueError(f"peak_sampling must be > 0 (or None), got {self.peak_sampling}.")


def sampled_columns(peak_sampling: float | None, n_peaks: int) -> int | None:
    """The number of peak columns scored per minibatch for ``peak_sampling`` (a fraction
    below 1 or a number from 1 up; None: all, exact)."""
    if peak_sampling is None:
        return None
    k = round(peak_sampling * n_peaks) if peak_sampling < 1 else int(peak_sampling)
    return max(1, min(k, n_peaks))


class BernoulliDecoder(Decoder):
    """PeakVI: y_np ~ Bernoulli(sigmoid(f(z, s))_p * sigmoid(c_n) * sigmoid(r_p))."""

    # normalized values are accessibility probabilities: no library size applies
    scales_with_library = False
    binary_observations = True

    def __init__(
        self,
        shape: DecoderShape,
        *,
        cell_factor_hidden: int | None = None,
        n_sampled: int | None = None,
    ):
        super().__init__(shape)
        n_features, dropout = shape.n_features, shape.dropout
        # Training scores the closed peaks on n_sampled random columns (unbiased; see
        # likelihoods/sampled.py); evaluation mode is always exact.
        self.n_sampled = n_sampled if n_sampled is not None and n_sampled < n_features else None
        self.region_logit = nn.Parameter(torch.zeros(n_features))
        # The cell factor c_n is read off the cell's own peaks (PeakVI's l-encoder), by a
        # network of one hidden layer of width cell_factor_hidden (default n_hidden).
        width = cell_factor_hidden or shape.n_hidden
        self.cell_factor_body = MLP(n_features, 0, width, 1, dropout, sparse_input=True)
        self.cell_factor = nn.Linear(width, 1)
        self._binarize = Binarize()

    def observed(self, x):
        return (x > 0).to(x.dtype)

    def log_size(self, x: SparseRows) -> torch.Tensor:
        return F.logsigmoid(self.cell_factor(self.cell_factor_body(self._binarize(x), None)))

    def expected_input(self, z, cov, log_size, batch) -> torch.Tensor:
        return self(z, cov, log_size, batch).mean

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        log_p = F.logsigmoid(self.logits(h, cov)) + F.logsigmoid(self.region_logit) + log_size
        return PeakBernoulli(log_p)

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        h = self.body(z, cov)
        if self.training and self.n_sampled is not None:
            open_w = (x.val > 0).float()
            h_in, weight = self.output_layer(h, cov)
            return sampled_peak_bernoulli_log_lik(
                h_in, weight, self.out.bias, self.region_logit, log_size, x.crow, x.col,
                open_w, self.n_sampled,
            )  # fmt: skip
        rid, cid = x.row_ids(), x.col.long()
        logits = self.logits(h, cov)
        open_w = (x.val > 0).to(logits.dtype)
        return peak_bernoulli_log_lik(logits, self.region_logit, log_size, rid, cid, open_w)


class PoissonDecoder(Decoder):
    """y_np ~ Poisson(l_n * softmax(f(z, s))_p), l_n the cell's fragment count."""

    def log_size(self, x):
        return log_library(x)

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        return Poisson(F.log_softmax(self.logits(h, cov), dim=-1) + log_size)

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        # sum_p rate_np = l_n exactly (softmax), so only the non-zero counts are read:
        # sum_p [x log rate - rate - log x!] = sum_nz [x log rate - log x!] - l_n.
        log_rate = F.log_softmax(self.logits(self.body(z, cov), cov), dim=-1) + log_size
        rid = x.row_ids()
        terms = x.val * log_rate[rid, x.col.long()] - torch.lgamma(x.val + 1.0)
        return log_rate.new_zeros(x.n_rows).index_add_(0, rid, terms) - log_size[:, 0].exp()


def decoder(options: ATACOptions, shape: DecoderShape) -> Decoder:
    if options.likelihood == "poisson":
        return PoissonDecoder(shape)
    return BernoulliDecoder(
        shape,
        cell_factor_hidden=options.cell_factor_hidden,
        n_sampled=sampled_columns(options.peak_sampling, shape.n_features),
    )


def encoder_input(options: ATACOptions, n_features: int) -> nn.Module:
    if options.input == "tfidf":
        return TfIdf(n_features)
    return Binarize() if options.likelihood == "bernoulli" else Log1p()


# A genomic interval as a peak name: chr1:100-200, chr1-100-200, 1_100_200, ...
_INTERVAL = re.compile(r"^(chr)?[0-9A-Za-z_.]+[:_-]\d+[-_]\d+$")


def looks_like_peaks(names: pd.Index) -> bool:
    """Whether more than 90 % of ``names`` are genomic intervals."""
    return bool(len(names)) and np.mean([bool(_INTERVAL.match(v)) for v in names]) > 0.9


def differential_table(result: pd.DataFrame, mode: str, fdr_target: float) -> pd.DataFrame:
    """scvi-tools' differential table in MULTIVI's accessibility columns."""
    out = pd.DataFrame(
        {
            "prob_da": result["proba_de"] if mode == "change" else result["proba_m1"],
            "is_da_fdr": result[f"is_de_fdr_{fdr_target}"] if mode == "change" else None,
            "bayes_factor": result["bayes_factor"],
            "effect_size": result["scale2"] - result["scale1"],
            "emp_effect": result.get("emp_mean2", np.nan) - result.get("emp_mean1", np.nan),
            "est_prob1": result["scale1"],
            "est_prob2": result["scale2"],
            "emp_prob1": result.get("emp_mean1", np.nan),
            "emp_prob2": result.get("emp_mean2", np.nan),
        },
        index=result.index,
    )
    for col in ("comparison", "group1", "group2"):
        if col in result:
            out[col] = result[col]
    return out


KIND = Kind(
    name="atac",
    description="chromatin accessibility (peak counts)",
    options=ATACOptions,
    decoder=decoder,
    encoder_input=encoder_input,
    names=frozenset({"atac", "peaks", "peak", "chromatin", "scatac", "atac-seq"}),
    tenx_feature_types=frozenset({"Peaks"}),
    looks_like=looks_like_peaks,
    differential_delta=0.05,
    differential_table=differential_table,
    legacy_options={
        "atac_likelihood": "likelihood",
        "atac_input": "input",
        "cell_factor_hidden": "cell_factor_hidden",
        "peak_sampling": "peak_sampling",
    },
)
