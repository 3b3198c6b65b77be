"""RNA: gene counts, negative binomial (optionally zero-inflated), as scVI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_option
from ..likelihoods import NegativeBinomial, ZeroInflatedNegativeBinomial
from ..likelihoods.negative_binomial import log_nb_rows
from ..nn.decoders import Decoder, log_library
from ..nn.inputs import Log1p
from ..nn.sparse import SparseRows
from .base import DecoderShape, Kind, KindOptions


@dataclass(frozen=True)
class RNAOptions(KindOptions):
    """Options of an RNA modality.

    likelihood
        ``"nb"`` (default) or ``"zinb"`` (zero-inflated).
    dispersion
        ``"gene"``: one inverse dispersion per gene; ``"gene-batch"``: per gene and batch.
    """

    likelihoods: ClassVar[tuple[str, ...]] = ("nb", "zinb")
    likelihood: Literal["nb", "zinb"] = "nb"
    dispersion: Literal["gene", "gene-batch"] = "gene"

    def __post_init__(self):
        super().__post_init__()
        check_option("dispersion", self.dispersion, {"gene", "gene-batch"})


class NBDecoder(Decoder):
    """x_ng ~ NB(l_n * softmax(f(z, s))_g, theta_g), optionally zero-inflated."""

    def __init__(
        self, shape: DecoderShape, *, zero_inflated: bool = False, n_dispersion_groups: int = 1
    ):
        super().__init__(shape)
        self.log_theta = nn.Parameter(torch.zeros(n_dispersion_groups, shape.n_features))
        self.zi = nn.Linear(self.body.n_out, shape.n_features) if zero_inflated else None

    def log_size(self, x: torch.Tensor) -> torch.Tensor:
        return log_library(x)

    def forward(self, z, cov, log_size, batch):
        h = self.body(z, cov)
        log_mu = F.log_softmax(self.logits(h, cov), dim=-1) + log_size
        log_theta = self.log_theta[batch if self.log_theta.shape[0] > 1 else 0]
        if self.zi is None:
            return NegativeBinomial(log_mu, log_theta)
        return ZeroInflatedNegativeBinomial(log_mu, log_theta, self.zi(h))

    def normalized_mean(self, dist) -> torch.Tensor:
        # the NB mean without the ZINB dropout (sums to the library size), as scvi-tools
        return dist.log_mu.exp()

    def log_prob(self, z, cov, log_size, batch, x: SparseRows) -> torch.Tensor:
        dist = self(z, cov, log_size, batch)
        if self.zi is not None:  # a zero's probability depends on the dropout: dense
            return dist.log_prob(x.dense()).sum(-1)
        return log_nb_rows(dist.log_mu, dist.log_theta, x.row_ids(), x.col.long(), x.val)


def decoder(options: RNAOptions, shape: DecoderShape) -> NBDecoder:
    return NBDecoder(
        shape,
        zero_inflated=options.likelihood == "zinb",
        n_dispersion_groups=shape.n_batches if options.dispersion == "gene-batch" else 1,
    )


KIND = Kind(
    name="rna",
    description="gene expression counts",
    options=RNAOptions,
    decoder=decoder,
    encoder_input=lambda options, n_features: Log1p(),
    names=frozenset({"rna", "gex", "gene expression", "expression", "scrna", "rna-seq"}),
    tenx_feature_types=frozenset({"Gene Expression"}),
    differential_delta=0.25,
    legacy_options={"rna_likelihood": "likelihood", "dispersion": "dispersion"},
)
