"""The module's hyperparameters (:class:`ModuleConfig`) and its loss output."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch

from .._checks import check_option, check_weight
from ..kinds import KINDS, Modality
from ..kinds.modality import as_modality

SingleViews = Literal["all", "sample"]

__all__ = ["LossOutput", "ModuleConfig"]


@dataclass(frozen=True)
class ModuleConfig:
    """Every hyperparameter of the module; saved as JSON next to the weights.

    ``modalities`` declares each modality (its kind, likelihood and the likelihood's
    options, :class:`~scamort.kinds.Modality`), by name, in the order of ``n_features``;
    a kind's name stands for its defaults.
    """

    n_features: dict[str, int]
    modalities: dict[str, Modality]
    n_categories: tuple[int, ...] = (1,)
    n_latent: int = 20
    n_hidden: int = 256
    n_layers: int = 1
    # hidden layers of the encoders / the decoders; None: n_layers
    n_layers_encoder: int | None = None
    n_layers_decoder: int | None = None
    dropout: float = 0.1
    encode_covariates: bool = False
    cross_reconstruction: bool = True
    single_view_weight: float = 1.0
    single_views: SingleViews = "all"
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
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if set(self.modalities) != set(self.n_features):
            raise ValueError("modalities and n_features must name the same modalities.")
        specs = {m: as_modality(self.modalities[m], m) for m in self.n_features}
        object.__setattr__(self, "modalities", specs)
        check_option("single_views", self.single_views, {"all", "sample"})
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
        self._check_swaps_can_read()
        object.__setattr__(self, "n_categories", tuple(int(n) for n in self.n_categories))
        for name in ("n_latent", "n_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}.")
        for name in ("n_layers", "n_layers_encoder", "n_layers_decoder"):
            value = self.n_layers if getattr(self, name) is None else getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
            object.__setattr__(self, name, int(value))

    def _check_swaps_can_read(self) -> None:
        unreadable = self.unreadable_profiles()
        for name in ("cycle_weight", "cross_cycle_weight"):
            if getattr(self, name) > 0 and unreadable:
                m = unreadable[0]
                raise ValueError(
                    f"{name} > 0 re-encodes expected profiles, which the input of modality "
                    f"{m!r} ({self.modalities[m]!r}) cannot read; use input='binary' with it."
                )

    def unreadable_profiles(self) -> list[str]:
        """The modalities whose encoder input cannot read a decoded expected profile."""
        return [m for m, spec in self.modalities.items() if not spec.reads_expected_profile]

    @property
    def likelihoods(self) -> dict[str, str]:
        """Each modality's likelihood (read from its declaration)."""
        return {m: spec.likelihood for m, spec in self.modalities.items()}

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["modalities"] = {m: spec.to_dict() for m, spec in self.modalities.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ModuleConfig:
        """Read :meth:`to_dict`'s output, or a configuration saved before modalities were
        declared (per-kind options at the top level)."""
        d = dict(d)
        if "modalities" not in d:
            d = _upgrade(d)
        d["modalities"] = {m: Modality.from_dict(v) for m, v in d["modalities"].items()}
        d["n_categories"] = tuple(d["n_categories"])
        return cls(**d)


def _upgrade(d: dict) -> dict:
    """A configuration of scamort 0.1.0 (``likelihoods`` and the kinds' options at the
    top level) in today's form."""
    likelihoods = d.pop("likelihoods")
    old_names = {name for k in KINDS.values() for name in k.legacy_options}
    legacy = {name: d.pop(name) for name in old_names if name in d}
    specs = {}
    for m, lik in likelihoods.items():
        kind = next(k for k in KINDS.values() if lik in k.options.likelihoods)
        options = {
            option: legacy[old] for old, option in kind.legacy_options.items() if old in legacy
        }
        specs[m] = {**options, "name": m, "kind": kind.name, "likelihood": lik}
    return {**d, "modalities": specs}


@dataclass
class LossOutput:
    """Scalar loss plus per-cell terms of the joint ELBO (kl weight 1)."""

    loss: torch.Tensor
    elbo: torch.Tensor  # (N,)
    reconstruction: torch.Tensor  # (N,)
    kl: torch.Tensor  # (N,)
