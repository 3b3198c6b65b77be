"""What a kind of data supplies to the package: :class:`Kind`, its options, its decoders'
shape. One file per kind (``rna.py``, ``atac.py``) fills one :class:`Kind`; the registry
(``__init__.py``) lists them. Code outside ``scamort/kinds`` asks the entry; it never
branches on a kind's or a likelihood's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import pandas as pd
from torch import nn

from .._checks import check_option
from ..nn.decoders import Decoder, DecoderShape


@dataclass(frozen=True)
class KindOptions:
    """A modality's likelihood and that likelihood's options (each kind extends it)."""

    likelihoods: ClassVar[tuple[str, ...]] = ()
    likelihood: str = ""

    def __post_init__(self):
        check_option("likelihood", self.likelihood, self.likelihoods)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class Kind:
    """A kind of data: how a modality of it is decoded, encoded, recognised and analysed."""

    name: str
    description: str
    # the per-modality options (a frozen dataclass deriving from KindOptions; its
    # defaults are the kind's defaults)
    options: type[KindOptions]
    # the decoder of a modality of this kind, for its options
    decoder: Callable[[KindOptions, DecoderShape], Decoder]
    # what the modality's expert reads, for its options and number of features
    encoder_input: Callable[[KindOptions, int], nn.Module]
    # modality names (lower case) by which setup_mudata and combine recognise it
    names: frozenset[str]
    # 10x Cell Ranger feature types holding it
    tenx_feature_types: frozenset[str] = frozenset()
    # whether an AnnData's var_names (up to 200) look like this kind's features, for a
    # modality whose name and feature types say nothing (None: never guessed so)
    looks_like: Callable[[pd.Index], bool] | None = None
    # differential analysis: the default delta of mode="change", and the reshaping of
    # scvi-tools' table into the kind's customary columns (None: as it is)
    differential_delta: float = 0.25
    differential_table: Callable[[pd.DataFrame, str, float], pd.DataFrame] | None = None
    # the model-level spellings of its options before modalities were declared
    # (``SCAMORT(rna_likelihood=...)``): old name -> option name, read by the
    # deprecation path and by the loader of models saved then
    legacy_options: dict[str, str] = field(default_factory=dict)
