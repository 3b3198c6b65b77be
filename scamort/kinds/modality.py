"""One modality declared once: its name in the data, its kind, its layer, its options."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .base import KindOptions


@dataclass(frozen=True, init=False)
class Modality:
    """A modality of the data: what kind it is, where its raw counts are, how it is modelled.

    Declare modalities in ``SCAMORT.setup_mudata(mdata, modalities={...})``, e.g.
    ``{"gex": "rna", "peaks": scamort.Modality("atac", layer="counts",
    likelihood="poisson")}``, or in ``setup_anndata(adata, modality=...)``.

    Parameters
    ----------
    kind
        A registered kind of data: ``"rna"`` or ``"atac"`` (``scamort.kinds.KINDS``).
    layer
        The layer holding raw counts (``None``: ``.X``).
    **options
        The kind's options, with its defaults for those not given: for RNA
        :class:`~scamort.kinds.rna.RNAOptions` (``likelihood``, ``dispersion``), for ATAC
        :class:`~scamort.kinds.atac.ATACOptions` (``likelihood``, ``input``,
        ``cell_factor_hidden``, ``peak_sampling``). An option the kind does not have is a
        ValueError that lists those it has.

    The name is set by the setup call (the modality's key in the data).
    """

    kind: str
    layer: str | None
    options: KindOptions
    name: str | None

    def __init__(self, kind: str, layer: str | None = None, *, name: str | None = None, **options):
        from . import get_kind

        entry = get_kind(kind)
        valid = entry.options.names()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{kind} modalities have no option {unknown[0]!r}; their options are {valid}."
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "options", entry.options(**options))
        object.__setattr__(self, "name", name)

    @property
    def entry(self):
        """The registered :class:`~scamort.kinds.base.Kind`."""
        from . import get_kind

        return get_kind(self.kind)

    @property
    def reads_expected_profile(self) -> bool:
        """Whether the expert's input transform can read a decoded expected profile."""
        return self.entry.encoder_input(self.options, 1).reads_expected_profile

    @property
    def likelihood(self) -> str:
        return self.options.likelihood

    def named(self, name: str) -> Modality:
        """The same declaration under ``name``."""
        return Modality(self.kind, self.layer, name=name, **self.option_dict())

    def with_options(self, **options) -> Modality:
        """The same declaration with some options changed (validated)."""
        return Modality(self.kind, self.layer, name=self.name, **{**self.option_dict(), **options})

    def option_dict(self) -> dict:
        return asdict(self.options)

    def to_dict(self) -> dict:
        """JSON-serialisable; :meth:`from_dict` reads it back."""
        return {"name": self.name, "kind": self.kind, "layer": self.layer, **self.option_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Modality:
        d = dict(d)
        return cls(d.pop("kind"), d.pop("layer", None), name=d.pop("name", None), **d)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.option_dict().items())
        where = f", layer={self.layer!r}" if self.layer is not None else ""
        named = f", name={self.name!r}" if self.name is not None else ""
        return f"Modality({self.kind!r}{where}{named}, {opts})"


def as_modality(value, name: str | None = None) -> Modality:
    """A :class:`Modality` from a declaration: a Modality, or a kind's name."""
    if isinstance(value, Modality):
        return value if name is None or value.name == name else value.named(name)
    if isinstance(value, str):
        return Modality(value, name=name)
    raise TypeError(
        f"a modality is declared by a kind name ('rna', 'atac') or a scamort.Modality, "
        f"got {value!r}."
    )


__all__ = ["Modality", "as_modality"]
