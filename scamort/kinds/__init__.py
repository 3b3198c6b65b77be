"""The kinds of data scamort models, one file each, and their registry.

A kind (:class:`~scamort.kinds.base.Kind`) supplies a modality's decoders (its
likelihoods, each a pure log-prob function with a thin Distribution in
``scamort/likelihoods``), its encoder's input transform, its normalised values, its
default options and the names it is recognised by. Adding a kind is its file plus one
entry in ``KINDS`` below.
"""

from __future__ import annotations

from . import atac, rna
from .base import DecoderShape, Kind, KindOptions
from .modality import Modality

KINDS: dict[str, Kind] = {k.name: k for k in (rna.KIND, atac.KIND)}


def get_kind(name: str) -> Kind:
    """The registered kind called ``name``; a ValueError lists the kinds."""
    if name not in KINDS:
        raise ValueError(f"unknown kind of data {name!r}; scamort models {sorted(KINDS)}.")
    return KINDS[name]


def kind_named(modality_name: str) -> str | None:
    """The kind a modality name says (``"gex"`` -> ``"rna"``), or None."""
    key = str(modality_name).lower()
    return next((k.name for k in KINDS.values() if key in k.names), None)


def kind_of_10x(feature_type: str) -> str | None:
    """The kind a 10x Cell Ranger feature type holds (``"Peaks"`` -> ``"atac"``), or None."""
    return next((k.name for k in KINDS.values() if feature_type in k.tenx_feature_types), None)


__all__ = [
    "KINDS",
    "DecoderShape",
    "Kind",
    "KindOptions",
    "Modality",
    "get_kind",
    "kind_named",
    "kind_of_10x",
]
