"""The user-facing class.

Each public method is written in the file of its concern (``latent.py``, ``values.py``,
``training.py``, ...) and named in the class body below, so this file lists the whole
API. The concern files never reach each other through the model: what they share (the
registered cells, the module on its device, minibatches, posteriors) is one explicit
object, :class:`~scamort.model.inference.Inference` (``model._inference``), which they
take as an argument or read off the model.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from ..data.cells import CellData
from ..data.setup import Data, DataSpec
from ..kinds import KINDS
from ..module import ModuleConfig, MultiVAE
from . import (
    diagnostics,
    latent,
    novelty,
    persistence,
    query,
    registry,
    sampling,
    training,
    values,
)
from . import differential as de
from .history import TrainingHistory
from .inference import Inference
from .options import ModelOptions


class SCAMORT:
    """Product-of-experts VAE: cells with any subset of the modalities in one latent space.

    Call :meth:`setup_mudata` or :meth:`setup_anndata` on the data first; each
    modality's kind, likelihood and options are declared there
    (:class:`~scamort.Modality`).

    Parameters
    ----------
    data
        The AnnData / MuData registered with ``setup_*``.
    n_latent
        Dimension of the latent space.
    n_hidden, n_layers, dropout
        Width, depth and dropout of every encoder and decoder network.
    seed
        Seed of the weight initialisation.
    options, **kwargs
        The training terms and network details (:class:`~scamort.ModelOptions`: the
        swap-consistency and adversarial terms, cross reconstruction, single views,
        covariates in the encoders, the prior as an expert, ...), as one object or by
        name. A name that is neither an argument nor an option is a TypeError.

    The model-level spellings of modality options of scamort 0.1.0 (``rna_likelihood``,
    ``atac_likelihood``, ``dispersion``, ``atac_input``, ``cell_factor_hidden``,
    ``peak_sampling``) still work in this release, each with a ``DeprecationWarning``
    naming the :class:`~scamort.Modality` form.
    """

    def __init__(
        self,
        data: Data,
        n_latent: int = 20,
        n_hidden: int = 256,
        n_layers: int = 1,
        dropout: float = 0.1,
        seed: int = 0,
        options: ModelOptions | None = None,
        **kwargs,
    ):
        spec, cells = registry.registered(data)
        spec, kwargs = _legacy_modality_options(spec, kwargs)
        unreadable = not all(d.reads_expected_profile for d in spec.declared)
        opts = ModelOptions.build(options, kwargs).resolved(cells.mask, cells.cov, unreadable)
        config = ModuleConfig(
            n_features={m: len(f) for m, f in zip(spec.modalities, spec.features)},
            modalities=dict(zip(spec.modalities, spec.declared)),
            n_categories=spec.n_categories,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout=dropout,
            **vars(opts),
        )
        self._setup(data, spec, cells, config, seed)
        self.module.fit_inputs(
            {m: cells.cells_per_feature(m) for m in spec.modalities},
            {m: int(cells.mask[:, j].sum()) for j, m in enumerate(spec.modalities)},
        )

    @classmethod
    def _build(cls, data: Data, spec: DataSpec, cells, config: ModuleConfig, seed: int):
        """A model of ``config`` for registered cells, without ``__init__``'s option
        handling (saved and query models)."""
        model = cls.__new__(cls)
        model._setup(data, spec, cells, config, seed)
        return model

    def _setup(self, data, spec: DataSpec, cells, config: ModuleConfig, seed: int) -> None:
        self.data, self.spec, self.config = data, spec, config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = MultiVAE(config)
        self._inference = Inference(
            self.module, data, spec, cells, getattr(cells, "chunk_size", 4096)
        )
        self.history = TrainingHistory()
        self.is_trained = False
        # This process's rank in the last distributed training (0 otherwise): only rank 0
        # should write results.
        self.global_rank = 0
        # A query model's gradient hooks (load_query_data); the training cells' ELBO-on-
        # depth fit behind get_novelty (computed when first needed), and for a query
        # model the reference's training cells it is computed on.
        self._query_hooks = None
        self._calibration = None
        self._calibration_cells = None

    @property
    def _cells(self) -> CellData:
        """The registered cells (aligned counts, modality masks, covariate codes)."""
        return self._inference.cells

    @property
    def device(self) -> torch.device:
        return self._inference.device

    def to_device(self, device: str | torch.device) -> SCAMORT:
        """Move the module (for inference) to ``device``."""
        self.module.to(device)
        return self

    # ---- setup (registry.py) -------------------------------------------------------------
    setup_mudata = staticmethod(registry.setup_mudata)
    setup_anndata = staticmethod(registry.setup_anndata)
    get_setup = staticmethod(registry.get_setup)
    view_setup = staticmethod(registry.view_setup)

    def view_anndata_setup(self) -> None:
        """Print the model's registered data: modalities, columns, cells per pattern."""
        print(registry.setup_summary(self.spec, self._cells))

    # ---- training (training.py) ----------------------------------------------------------
    train = training.train

    # ---- latent spaces (latent.py) -------------------------------------------------------
    get_latent_representation = latent.get_latent_representation
    write_latent_representation = latent.write_latent_representation

    # ---- normalized values and imputation (values.py) ------------------------------------
    get_normalized = values.get_normalized
    get_normalized_expression = values.get_normalized_expression
    get_accessibility_estimates = values.get_accessibility_estimates

    # ---- differential analysis (differential.py) ----------------------------------------
    differential = de.differential
    differential_expression = de.differential_expression
    differential_accessibility = de.differential_accessibility

    # ---- new data on a trained model (query.py, novelty.py) -----------------------------
    load_query_data = classmethod(query.load_query_data)
    get_novelty = novelty.get_novelty

    # ---- diagnostics (diagnostics.py) ----------------------------------------------------
    get_elbo = diagnostics.get_elbo
    get_reconstruction_error = diagnostics.get_reconstruction_error
    get_marginal_ll = diagnostics.get_marginal_ll
    get_gaps = diagnostics.get_gaps

    # ---- draws from the model (sampling.py) ----------------------------------------------
    posterior_predictive_sample = sampling.posterior_predictive_sample
    get_likelihood_parameters = sampling.get_likelihood_parameters

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


def _legacy_modality_options(spec: DataSpec, kwargs: dict) -> tuple[DataSpec, dict]:
    """``spec`` with the modality options given at the model level in scamort 0.1.0
    (``rna_likelihood=``, ``peak_sampling=``, ...) moved into the declarations of the
    modalities of their kind, each with a DeprecationWarning; the other ``kwargs``."""
    rest, declared = dict(kwargs), list(spec.declared)
    for kind in KINDS.values():
        for old, option in kind.legacy_options.items():
            if old not in rest:
                continue
            value = rest.pop(old)
            kind.options(**{option: value})  # an invalid value is an error, used or not
            warnings.warn(
                f"SCAMORT({old}=...) is deprecated and will be removed in the next release; "
                f"declare it with the modality: setup_mudata(mdata, modalities={{name: "
                f"scamort.Modality({kind.name!r}, {option}={value!r}), ...}}) or "
                f"setup_anndata(adata, modality=scamort.Modality({kind.name!r}, "
                f"{option}={value!r})).",
                DeprecationWarning,
                stacklevel=3,
            )
            declared = [
                d.with_options(**{option: value}) if d.kind == kind.name else d for d in declared
            ]
    return replace(spec, declared=tuple(declared)), rest
