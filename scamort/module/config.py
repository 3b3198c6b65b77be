"""The module's hyperparameters (:class:`ModuleConfig`), its loss output, and the checks
of option values shared by the module and the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from ..nn import DECODERS

Likelihood = Literal["nb", "zinb", "bernoulli", "poisson"]
Dispersion = Literal["gene", "gene-batch"]
SingleViews = Literal["all", "sample"]


def sampled_columns(peak_sampling: float | None, n_peaks: int) -> int | None:
    """The number of peak columns scored per minibatch for ``peak_sampling`` (a fraction
    below 1 or a number from 1 up; None: all, exact)."""
    if peak_sampling is None:
        return None
    k = round(peak_sampling * n_peaks) if peak_sampling < 1 else int(peak_sampling)
    return max(1, min(k, n_peaks))


def check_option(name: str, value, valid) -> None:
    """Raise one ValueError that lists the valid choices."""
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {sorted(valid)}.")


def check_weight(name: str, value) -> None:
    """Raise a ValueError unless ``value`` is a real number >= 0 (NaN and strings fail)."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (real and value >= 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


@dataclass(frozen=True)
class ModuleConfig:
    """Every hyperparameter of the module; saved as JSON next to the weights."""

    n_features: dict[str, int]
    likelihoods: dict[str, Likelihood]
    n_categories: tuple[int, ...] = (1,)
    n_latent: int = 20
    n_hidden: int = 256
    n_layers: int = 1
    # hidden layers of the encoders / the decoders; None: n_layers
    n_layers_encoder: int | None = None
    n_layers_decoder: int | None = None
    dropout: float = 0.1
    encode_covariates: bool = False
    dispersion: Dispersion = "gene"
    cross_reconstruction: bool = True
    single_view_weight: float = 1.0
    single_views: SingleViews = "all"
    atac_input: Literal["binary", "tfidf"] = "binary"
    adversarial_batch_weight: float = 0.0
    # a classifier per modality tells a paired cell's single-modality posterior from a
    # posterior of a cell measured in that modality alone; the encoders learn to fool it
    adversarial_view_weight: float = 0.0
    cycle_weight: float = 0.0
    cross_cycle_weight: float = 0.0
    # the N(0, I) prior is one expert of every posterior's product (False: the experts
    # alone, each trained as a posterior in its own right)
    prior_expert: bool = True
    output_covariates: bool | None = False  # None: on where a swap-consistency term is
    cell_factor_hidden: int | None = None  # width of the ATAC cell-factor network; None: n_hidden
    # Bernoulli ATAC in training: closed peaks scored on this fraction (< 1) or number
    # (>= 1) of the peak columns per minibatch (unbiased); None: every column
    peak_sampling: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for m, lik in self.likelihoods.items():
            check_option(f"likelihood of {m!r}", lik, DECODERS)
        check_option("dispersion", self.dispersion, {"gene", "gene-batch"})
        check_option("single_views", self.single_views, {"all", "sample"})
        check_option("atac_input", self.atac_input, {"binary", "tfidf"})
        for name in (
            "adversarial_batch_weight",
            "adversarial_view_weight",
            "cycle_weight",
            "cross_cycle_weight",
        ):
            check_weight(name, getattr(self, name))
        if self.adversarial_batch_weight > 0 and self.n_categories[0] < 2:
            raise ValueError(
                "adversarial_batch_weight > 0 needs a batch to mix: register the data with "
                "a batch_key that has at least two batches."
            )
        if self.output_covariates is None:
            on = max(self.cycle_weight, self.cross_cycle_weight) > 0
            object.__setattr__(self, "output_covariates", on)
        for name in ("cycle_weight", "cross_cycle_weight"):
            if getattr(self, name) > 0 and self.atac_input == "tfidf":
                raise ValueError(
                    f"{name} > 0 re-encodes expected profiles, which atac_input='tfidf' "
                    "cannot read; use atac_input='binary' with it."
                )
        if self.peak_sampling is not None and not self.peak_sampling > 0:
            raise ValueError(f"peak_sampling must be > 0 (or None), got {self.peak_sampling}.")
        if set(self.likelihoods) != set(self.n_features):
            raise ValueError("likelihoods and n_features must name the same modalities.")
        object.__setattr__(self, "n_categories", tuple(int(n) for n in self.n_categories))
        for name in ("n_layers", "n_layers_encoder", "n_layers_decoder"):
            value = self.n_layers if getattr(self, name) is None else getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
            object.__setattr__(self, name, int(value))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LossOutput:
    """Scalar loss plus per-cell terms of the joint ELBO (kl weight 1)."""

    loss: torch.Tensor
    elbo: torch.Tensor  # (N,)
    reconstruction: torch.Tensor  # (N,)
    kl: torch.Tensor  # (N,)
