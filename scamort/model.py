"""The user-facing model: setup, train, latent spaces, normalized values, save/load."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
import weakref
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.distributions import Normal

from . import __version__
from ._io import atomic_write
from .data import (
    CellData,
    DataError,
    DataSpec,
    make_loader,
    register,
    resolve_placement,
    to_cell_data,
)
from .data.backed import BackedCells, ChunkBatches
from .data.loaders import Placement
from .data.setup import Data
from .module import ModuleConfig, MultiVAE, elbo, iwae, product_of_experts, refine
from .module.refine import LogLik
from .module.vae import check_option
from .train import AtomicCheckpointIO, History, TrainingPlan

# setup_* registrations, keyed by id(data) and checked against a weak reference, so
# that nothing is ever written into the user's object.
_REGISTRY: dict[int, tuple[weakref.ref, DataSpec, CellData]] = {}

_LIKELIHOODS = {"rna": ("nb", "zinb"), "atac": ("bernoulli", "poisson")}


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
    cell_factor_hidden
        Width of the hidden layer of the network that reads the ATAC cell factor (the
        cell's capture efficiency) off its peaks; ``None``: ``n_hidden``.
    seed
        Seed of the weight initialisation.
    """

    def __init__(
        self,
        data: Data,
        n_latent: int = 20,
        n_hidden: int = 256,
        n_layers: int = 1,
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
        cell_factor_hidden: int | None = None,
        seed: int = 0,
    ):
        spec, cells = _registered(data)
        check_option("rna_likelihood", rna_likelihood, _LIKELIHOODS["rna"])
        check_option("atac_likelihood", atac_likelihood, _LIKELIHOODS["atac"])
        chosen = {"rna": rna_likelihood, "atac": atac_likelihood}
        check_option("single_views", single_views, {"auto", "all", "sample"})
        if single_views == "auto":
            single_views = "sample" if _paired_fraction(cells.mask) > 0.5 else "all"
        config = ModuleConfig(
            n_features={m: len(f) for m, f in zip(spec.modalities, spec.features)},
            likelihoods={m: chosen[k] for m, k in zip(spec.modalities, spec.kinds)},
            n_categories=spec.n_categories,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout=dropout,
            encode_covariates=encode_covariates,
            dispersion=dispersion,
            cross_reconstruction=cross_reconstruction,
            single_view_weight=single_view_weight,
            single_views=single_views,
            atac_input=atac_input,
            adversarial_batch_weight=adversarial_batch_weight,
            cell_factor_hidden=cell_factor_hidden,
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

    # ---- setup ---------------------------------------------------------------------------
    @staticmethod
    def setup_mudata(
        mdata,
        rna_key: str | None = "rna",
        atac_key: str | None = "atac",
        rna_layer: str | None = None,
        atac_layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        chunk_size: int = 4096,
    ) -> DataSpec:
        """Validate and register a MuData whose modalities may hold different cells.

        A cell in both ``rna_key`` and ``atac_key`` is paired; a cell in one of them is
        unpaired. No zero-padding or reordering is needed. Columns are read from
        ``mdata.obs`` or, failing that, from the modalities' obs. Raises
        :class:`~scamort.data.DataError` naming the problem and the fix.

        A MuData read with ``backed=True`` stays on disk: its counts (in ``.X``, CSR) are
        read in chunks of ``chunk_size`` consecutive cells, for the checks here (one pass
        over the file), for training and for every result.
        """
        mods = {
            m: (k, layer)
            for m, k, layer in ((rna_key, "rna", rna_layer), (atac_key, "atac", atac_layer))
            if m is not None
        }
        return _register(mdata, mods, batch_key, categorical_covariate_keys, chunk_size)

    @staticmethod
    def setup_anndata(
        adata,
        modality: Literal["rna", "atac"] = "rna",
        layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        chunk_size: int = 4096,
    ) -> DataSpec:
        """Validate and register a single-modality AnnData (RNA alone behaves like scVI).

        An AnnData read with ``backed="r"`` stays on disk (see :meth:`setup_mudata`).
        """
        check_option("modality", modality, {"rna", "atac"})
        return _register(
            adata, {modality: (modality, layer)}, batch_key, categorical_covariate_keys, chunk_size
        )

    # ---- training ------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        accelerator: str = "auto",
        devices: int | str = 1,
        strategy: str = "auto",
        early_stopping: bool = False,
        early_stopping_patience: int = 10,
        validation_fraction: float = 0.1,
        kl_warmup_epochs: float | None = None,
        seed: int = 0,
        progress_bar: bool = True,
        refine_steps: int = 0,
        refine_lr: float = 0.05,
        data_placement: Placement = "auto",
        precision: str = "32-true",
        compile: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        resume: bool | str | os.PathLike = False,
        buffer_chunks: int = 4,
        max_steps: int | None = None,
    ) -> SCAMORT:
        """Fit the model with Lightning (same code on CPU and GPU).

        ``max_epochs=None`` picks ``clip(round(3e5 / n_cells), 20, 400)``;
        ``max_steps`` also stops training after that many optimizer steps.
        ``kl_warmup_epochs=None`` warms the KL weight up over the first quarter of the
        training (of the epochs, or of ``max_steps`` when that ends it sooner). Early
        stopping watches the held-out ELBO (``elbo_validation``).
        Training is reproducible for a fixed ``seed`` on a given device.
        ``refine_steps=K > 0`` trains semi-amortized (each step refines every cell's joint
        posterior K steps; the decoders also learn from it and the encoders are pulled
        toward it), at roughly K + 1 times the cost of a step.

        A larger ``batch_size`` B (a GPU has room for it) makes fewer steps per epoch;
        keep the number of steps and scale the learning rate by the square root:
        ``lr=1e-3 * (B / 512) ** 0.5`` and ``max_epochs`` times B / 512 (measured on SNARE-seq
        up to B = 1024; see the benchmarks).

        Several devices: ``devices=N, strategy="ddp"`` trains with Lightning's
        distributed data parallel (GPUs, or CPU processes with the gloo backend), each
        rank on its own share of every epoch's cells. ``batch_size`` is the global
        minibatch (each rank takes ``batch_size / N``), so the steps are those of one
        device. Run the script with ``torchrun --nproc-per-node N`` or plainly (Lightning
        then starts the other ranks by re-running it); only rank 0 should write results
        (:attr:`global_rank`).

        Calling ``train`` again continues from the current weights (with a fresh
        optimizer) and appends to :attr:`history`, whose ``epoch`` counts on.

        Checkpoints: with ``checkpoint_dir``, ``last.ckpt`` (weights, optimizer state,
        epoch, history, random state) is written there every ``checkpoint_every`` epochs,
        atomically. ``resume=True`` continues from ``checkpoint_dir/last.ckpt`` when it
        exists (and starts afresh when it does not); ``resume=path`` continues from that
        checkpoint. A resumed run makes the same steps as one never stopped.

        Data opened backed (``read_h5ad(..., backed="r")``, ``read_h5mu(...,
        backed=True)``) are streamed from disk: every epoch visits the chunks of
        consecutive cells in a new random order, ``buffer_chunks`` chunks at a time with
        their cells shuffled together; ``validation_fraction`` holds out whole chunks.
        ``data_placement`` does not apply to them (minibatches come from the host).
        """
        n = self._cells.n_cells
        max_epochs = max_epochs or int(np.clip(round(3e5 / n), 20, 400))
        if not 0 <= validation_fraction < 1:
            raise ValueError("validation_fraction must be in [0, 1).")
        if isinstance(self._cells, BackedCells):
            train_loader, val_loader = self._chunk_loaders(
                validation_fraction, batch_size, seed, buffer_chunks
            )
            store, resident = None, False
        else:
            order = np.random.default_rng(seed).permutation(n)
            n_val = int(round(validation_fraction * n))
            store = self._cells.tensors
            target = _target_device(accelerator, devices)
            resident = resolve_placement(data_placement, target, store.nbytes)
            pin = target.type == "cuda"
            train_loader = make_loader(
                store, np.sort(order[n_val:]), batch_size, True, seed, resident, pin
            )
            val_loader = (
                make_loader(store, np.sort(order[:n_val]), batch_size, False, 0, resident, pin)
                if n_val
                else None
            )
        if early_stopping and val_loader is None:
            raise ValueError(
                "early_stopping needs validation cells: set validation_fraction > 0 (backed "
                "data hold out whole chunks, so it needs at least one chunk's worth)."
            )
        if kl_warmup_epochs is None:
            # a quarter of the training that will run: max_steps can end it before max_epochs
            epochs_run = max_epochs
            if max_steps is not None:
                epochs_run = min(max_epochs, max_steps / max(len(train_loader), 1))
            warmup = epochs_run / 4
        else:
            warmup = kl_warmup_epochs
        plan = TrainingPlan(
            self.module,
            lr,
            weight_decay,
            warmup,
            refine_steps,
            refine_lr,
            store if resident else None,
        )
        history = History()
        callbacks = [history]
        if early_stopping:
            callbacks.append(
                L.pytorch.callbacks.EarlyStopping(
                    "elbo_validation", patience=early_stopping_patience, mode="max"
                )
            )
        ckpt_path = _resume_path(resume, checkpoint_dir)
        if checkpoint_dir is not None:
            if checkpoint_every < 1:
                raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}.")
            callbacks.append(
                L.pytorch.callbacks.ModelCheckpoint(
                    dirpath=checkpoint_dir,
                    filename="last",
                    every_n_epochs=checkpoint_every,
                    save_top_k=1,
                    save_on_train_epoch_end=True,
                    enable_version_counter=False,
                )
            )
        if compile:
            for net in (*self.module.encoders.values(), *self.module.decoders.values()):
                net.compile(dynamic=True)
        with _quiet_lightning(), torch.random.fork_rng(devices=_cuda_devices()):
            trainer = L.Trainer(
                max_epochs=max_epochs,
                max_steps=-1 if max_steps is None else max_steps,
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                precision=precision,
                logger=False,
                enable_checkpointing=checkpoint_dir is not None,
                plugins=[AtomicCheckpointIO()],
                use_distributed_sampler=False,
                enable_progress_bar=progress_bar,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                callbacks=callbacks,
                limit_val_batches=1.0 if val_loader is not None else 0,
            )
            torch.manual_seed(seed)
            trainer.fit(plan, train_loader, val_loader, ckpt_path=ckpt_path)
        new = pd.DataFrame(history.rows)
        if ckpt_path is None and len(self.history) and len(new):
            # a further train() continues the history: epochs count on from the last one
            new["epoch"] += int(self.history["epoch"].iloc[-1]) + 1
            new = pd.concat([self.history, new], ignore_index=True)
        self.history = new
        self.is_trained = True
        self.global_rank = trainer.global_rank
        self.module.to(trainer.strategy.root_device)
        return self

    def _chunk_loaders(self, validation_fraction, batch_size, seed, buffer_chunks):
        """Train and validation loaders over the chunks of backed data (whole chunks held out)."""
        n_chunks = len(self._cells.chunks())
        order = np.random.default_rng(seed).permutation(n_chunks)
        n_val = int(round(validation_fraction * n_chunks))
        if n_val == n_chunks:
            n_val = 0
        train = ChunkBatches(
            self._cells, np.sort(order[n_val:]), batch_size, True, seed, buffer_chunks
        )
        val = (
            ChunkBatches(self._cells, np.sort(order[:n_val]), batch_size, False, 0, buffer_chunks)
            if n_val
            else None
        )
        return train, val

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to_device(self, device: str | torch.device) -> SCAMORT:
        """Move the module (for inference) to ``device``."""
        self.module.to(device)
        return self

    # ---- results ---------------------------------------------------------------------------
    def _cell_data(self, data: Data | None) -> CellData | BackedCells:
        if data is None or data is self.data:
            return self._cells
        return to_cell_data(data, self.spec, self._chunk_size)

    def _batches(self, cells: CellData | BackedCells, indices, batch_size: int):
        """Minibatches on the module's device, by the same paths as training (backed data:
        read from disk one chunk of cells at a time)."""
        idx = np.arange(cells.n_cells) if indices is None else np.asarray(indices)
        self.module.eval()
        if isinstance(cells, BackedCells):
            for start in range(0, len(idx), cells.chunk_size):
                part = cells.take(idx[start : start + cells.chunk_size])
                yield from self._batches(part, None, batch_size)
            return
        store = cells.tensors
        if resolve_placement("auto", self.device, store.nbytes):
            store = store.to(self.device)
        for start in range(0, len(idx), batch_size):
            yield _to(store.batch(idx[start : start + batch_size]), self.device)

    def _posterior(self, batch: dict, modality: str, paired: str = "product") -> Normal:
        """q(z | the cell's modalities) for 'joint', or one expert with the prior.

        ``paired="average"`` (joint only): the equal mixture of the cell's single-modality
        posteriors, as its moment-matched Gaussian (mean: the average of their means);
        a cell with one modality gets that modality's posterior either way."""
        mask = batch["mask"]
        experts = self.module.experts(batch["x"], mask, batch["cov"], batch["mask_host"])
        if modality != "joint" or paired == "product":
            return product_of_experts(experts, self._view_mask(mask, modality))
        singles = [
            product_of_experts(experts, self._view_mask(mask, m)) for m in self.spec.modalities
        ]
        w = (mask / mask.sum(1, keepdim=True)).T[..., None]  # (M, N, 1)
        loc = torch.stack([q.loc for q in singles])
        mean = (w * loc).sum(0)
        second = (w * (torch.stack([q.scale for q in singles]) ** 2 + loc**2)).sum(0)
        var = (second - mean**2).clamp_min(torch.finfo(mean.dtype).tiny)
        return Normal(mean, var.sqrt(), validate_args=False)

    def _view_mask(self, mask, modality: str):
        """The modality mask (a tensor, or the host bool array) restricted to ``modality``
        ('joint': unchanged)."""
        if modality == "joint":
            return mask
        keep = np.arange(mask.shape[1]) == self.spec.modalities.index(modality)
        if isinstance(mask, torch.Tensor):
            keep = torch.as_tensor(keep, device=mask.device)
        return mask * keep

    def _check_modality(self, modality: str) -> None:
        check_option("modality", modality, {"joint", *self.spec.modalities})

    def get_latent_representation(
        self,
        data: Data | None = None,
        modality: str = "joint",
        indices: np.ndarray | None = None,
        give_mean: bool = True,
        batch_size: int = 1024,
        refine_steps: int = 0,
        refine_lr: float = 0.05,
        refine_samples: int = 1,
        refine_tol: float | None = None,
        return_elbo: bool = False,
        seed: int = 0,
        paired: Literal["auto", "product", "average"] = "auto",
    ) -> np.ndarray | tuple[np.ndarray, pd.DataFrame]:
        """Posterior of z for each cell, shape (n_cells, n_latent).

        ``modality="joint"`` uses every modality the cell has (product of experts).
        ``modality="rna"`` / ``"atac"`` uses that one expert with the prior; rows of cells
        lacking that modality are NaN. ``give_mean=False`` draws one sample instead.

        ``refine_steps=K > 0`` refines each cell's posterior by K Adam steps on its own
        ELBO with the model frozen (semi-amortized inference), vectorised over blocks of
        ``batch_size`` cells; ``refine_lr``, ``refine_samples`` (draws per step) and
        ``refine_tol`` (stop when no parameter moves more) tune it. For a single-modality
        latent, the ELBO scores that modality only. ``return_elbo=True`` also returns a
        DataFrame with each cell's ``elbo_amortized`` and ``elbo_refined`` (16 common
        draws; NaN where the cell lacks the modality).

        ``paired`` (joint latent only) is how a cell with several modalities is embedded:
        ``"product"``, the product-of-experts posterior (all its evidence at once), or
        ``"average"``, the average of its single-modality posterior means (the equal
        mixture of the posteriors an RNA-only and an ATAC-only cell would get). Product
        posteriors are sharper and sit farther from the origin than single-modality ones,
        so ``"average"`` mixes paired with unpaired cells better (see the benchmarks).
        Cells with one modality get the same embedding either way. Refinement and
        ``return_elbo`` apply to the product posterior. ``"auto"`` (default) is
        ``"average"``, or ``"product"`` when refining or returning the ELBO.
        """
        paired = self._check_latent_options(modality, paired, refine_steps > 0 or return_elbo)
        return self._latent(
            self._cell_data(data),
            modality,
            indices,
            give_mean,
            batch_size,
            refine_steps,
            refine_lr,
            refine_samples,
            refine_tol,
            return_elbo,
            seed,
            paired,
        )

    def _check_latent_options(self, modality: str, paired: str, refining: bool) -> str:
        """Validate the latent options; return ``paired`` with ``"auto"`` resolved."""
        self._check_modality(modality)
        check_option("paired", paired, {"auto", "product", "average"})
        if modality != "joint" and paired != "auto":
            raise ValueError(
                f"paired={paired!r} is for the joint latent; a {modality!r} latent uses that "
                "modality alone. Leave paired unset."
            )
        if paired == "auto":
            return "product" if refining else "average"
        if paired == "average" and refining:
            raise ValueError(
                "refinement (refine_steps, return_elbo) works on the product-of-experts "
                "posterior: pass paired='product' (or 'auto') to refine."
            )
        return paired

    def _latent(
        self,
        cells,
        modality,
        indices,
        give_mean,
        batch_size,
        refine_steps,
        refine_lr,
        refine_samples,
        refine_tol,
        return_elbo,
        seed,
        paired="product",
    ):
        gen = torch.Generator(device=self.device).manual_seed(seed)
        zs, before, after = [], [], []
        for batch in self._batches(cells, indices, batch_size):
            with torch.no_grad():
                q = self._posterior(batch, modality, paired)
            loc, scale = q.loc, q.scale
            if refine_steps > 0 or return_elbo:
                with _frozen(self.module), torch.enable_grad():
                    r = refine(
                        self._log_lik(batch, modality),
                        loc,
                        scale,
                        refine_steps,
                        lr=refine_lr,
                        n_samples=refine_samples,
                        tol=refine_tol,
                        generator=gen,
                    )
                loc, scale = r.loc, r.scale
                before.append(r.elbo_before)
                after.append(r.elbo_after)
            z = (
                loc
                if give_mean
                else loc + scale * torch.randn(loc.shape, generator=gen, device=loc.device)
            )
            has = self._has(batch, modality)
            zs.append(_nan_rows(z, has))
            if before:
                before[-1], after[-1] = _nan_rows(before[-1], has), _nan_rows(after[-1], has)
        z = np.concatenate(zs)
        if not return_elbo:
            return z
        obs = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
        table = pd.DataFrame(
            {"elbo_amortized": np.concatenate(before), "elbo_refined": np.concatenate(after)},
            index=obs,
        )
        return z, table

    def write_latent_representation(
        self,
        key: str = "X_scamort",
        data: Data | None = None,
        modality: str = "joint",
        batch_size: int = 1024,
        refine_steps: int = 0,
        refine_lr: float = 0.05,
        seed: int = 0,
        paired: Literal["auto", "product", "average"] = "auto",
    ) -> None:
        """Put the latent means in ``data.obsm[key]``.

        For data opened backed the result goes into the file instead, one chunk of cells
        at a time (``obsm/<key>`` of the AnnData, or of the MuData's global obs), so that
        memory does not grow with the cells; open the file with ``backed="r+"``. Read it
        back with ``read_h5ad`` / ``read_h5mu``. Rows of cells lacking ``modality`` are
        NaN. See :meth:`get_latent_representation` for the arguments.
        """
        paired = self._check_latent_options(modality, paired, refine_steps > 0)
        data = self.data if data is None else data
        cells = self._cell_data(data)

        def latent(indices):
            return self._latent(
                cells,
                modality,
                indices,
                give_mean=True,
                batch_size=batch_size,
                refine_steps=refine_steps,
                refine_lr=refine_lr,
                refine_samples=1,
                refine_tol=None,
                return_elbo=False,
                seed=seed,
                paired=paired,
            )

        if not isinstance(cells, BackedCells):
            data.obsm[key] = latent(None)
            return
        f = _writable_file(data)
        group = f.require_group("obsm")
        if key in group:
            del group[key]
        out = group.create_dataset(key, shape=(cells.n_cells, self.config.n_latent), dtype="f4")
        out.attrs["encoding-type"], out.attrs["encoding-version"] = "array", "0.2.0"
        for start, stop in cells.chunks():
            out[start:stop] = latent(np.arange(start, stop))
        f.flush()

    def get_gaps(
        self,
        data: Data | None = None,
        indices: np.ndarray | None = None,
        steps: tuple[int, ...] = (5, 20, 100),
        converge_steps: int = 500,
        lr: float = 0.05,
        n_eval: int = 32,
        iw_samples: int = 256,
        batch_size: int = 512,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Per-cell amortization and approximation gaps of the joint posterior.

        For each cell (Cremer et al. 2018):

        - ``elbo_amortized``: ELBO of the encoders' product-of-experts posterior;
        - ``elbo_refined_K``: after K refinement steps, for each K in ``steps``;
        - ``elbo_converged``: after ``converge_steps`` steps, standing in for the best
          Gaussian posterior q*;
        - ``log_px_iwae``: importance-weighted bound on log p(x) with ``iw_samples``
          samples from q* (a lower bound that tightens as samples grow);
        - ``amortization_gap`` = elbo_converged - elbo_amortized;
        - ``approximation_gap`` = log_px_iwae - elbo_converged (a lower estimate of the
          true approximation gap, since the IWAE bound is below log p(x)).

        All ELBOs are measured on the same ``n_eval`` draws per cell (common random
        numbers), so their differences are precise. Cost: about ``converge_steps +
        iw_samples`` decoder passes per cell, so run it on a sample of cells.
        """
        cells = self._cell_data(data)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        steps = tuple(sorted(k for k in steps if k <= converge_steps))
        rows = []
        for batch in self._batches(cells, indices, batch_size):
            with torch.no_grad():
                q = self._posterior(batch, "joint")
            log_lik = self._log_lik(batch, "joint")
            with _frozen(self.module):
                with torch.enable_grad():
                    r = refine(
                        log_lik,
                        q.loc,
                        q.scale,
                        converge_steps,
                        lr=lr,
                        generator=gen,
                        checkpoints=steps,
                    )
                with torch.no_grad():
                    eps = torch.randn((n_eval, *q.loc.shape), generator=gen, device=q.loc.device)
                    cols = {"elbo_amortized": elbo(log_lik, q.loc, q.scale, eps)}
                    for k in steps:
                        cols[f"elbo_refined_{k}"] = elbo(log_lik, *r.checkpoints[k], eps)
                    cols["elbo_converged"] = elbo(log_lik, r.loc, r.scale, eps)
                    cols["log_px_iwae"] = iwae(log_lik, r.loc, r.scale, iw_samples, generator=gen)
            rows.append(pd.DataFrame({k: v.cpu().numpy() for k, v in cols.items()}))
        out = pd.concat(rows, ignore_index=True)
        out.index = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
        out["amortization_gap"] = out["elbo_converged"] - out["elbo_amortized"]
        out["approximation_gap"] = out["log_px_iwae"] - out["elbo_converged"]
        return out

    def _log_lik(self, batch: dict, modality: str) -> LogLik:
        """log p(x_n | z) for z of shape (S, N, D), over the modalities the posterior uses."""
        x, cov = batch["x"], batch["cov"]
        has = self._view_mask(batch["mask_host"], modality)
        with torch.no_grad():
            log_sizes = self.module.log_sizes(x, batch["mask"], batch["mask_host"])

        def log_lik(z: torch.Tensor) -> torch.Tensor:
            s, n, d = z.shape
            cells = np.tile(np.arange(n), s)  # row s * n + i is cell i
            ll = self.module.log_likelihood(
                z.reshape(s * n, d), x, has[cells], cov, log_sizes, cells
            )
            return ll.reshape(s, n)

        return log_lik

    def _has(self, batch: dict, modality: str) -> torch.Tensor:
        if modality == "joint":
            return torch.ones(batch["mask"].shape[0], dtype=torch.bool, device=self.device)
        return batch["mask"][:, self.spec.modalities.index(modality)].bool()

    @torch.inference_mode()
    def get_normalized(
        self,
        modality: str,
        data: Data | None = None,
        indices: np.ndarray | None = None,
        library_size: float | None = None,
        transform_batch: str | None = None,
        n_samples: int = 1,
        batch_size: int = 1024,
        return_numpy: bool = False,
        seed: int = 0,
    ) -> pd.DataFrame | np.ndarray:
        """Decoded mean of ``modality`` for every cell, from its joint posterior.

        Cells that lack the modality get it imputed from the modalities they have.
        RNA (NB and ZINB) and Poisson ATAC: ``library_size * softmax(f(z))``, which sums
        to ``library_size`` over the features (default 1; the ZINB dropout is not
        applied, as in scvi-tools). Bernoulli ATAC: the probability of accessibility
        without the cell factor (region factor kept), in [0, 1]; ``library_size`` does not
        apply to it. ``transform_batch`` decodes every cell as if from that batch
        (batch-corrected values); ``n_samples > 1`` averages over posterior samples,
        drawn reproducibly from ``seed``, instead of using the posterior mean.
        """
        check_option("modality", modality, self.spec.modalities)
        lik = self.config.likelihoods[modality]
        if lik == "bernoulli":
            if library_size not in (None, 1, 1.0):
                raise ValueError(
                    f"library_size does not apply to {modality!r}: its values are "
                    "accessibility probabilities (Bernoulli). Leave library_size unset."
                )
            library_size = 1.0
        library_size = 1.0 if library_size is None else library_size
        if not (np.isfinite(library_size) and library_size > 0):
            raise ValueError(f"library_size must be a positive number, got {library_size}.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        cells = self._cell_data(data)
        codes = self._batch_code(transform_batch)
        log_size = float(np.log(library_size))
        gen = torch.Generator(device=self.device).manual_seed(seed)
        out = []
        for batch in self._batches(cells, indices, batch_size):
            q = self._posterior(batch, "joint")
            cov = batch["cov"].clone()
            if codes is not None:
                cov[:, 0] = codes
            if n_samples == 1:
                z = q.loc[None]
            else:
                eps = torch.randn((n_samples, *q.loc.shape), generator=gen, device=q.loc.device)
                z = q.loc + q.scale * eps
            means = [
                _decoded_mean(
                    self.module.generative(
                        zs, cov, modality, zs.new_full((zs.shape[0], 1), log_size)
                    )
                )
                for zs in z
            ]
            out.append(torch.stack(means).mean(0).float().cpu().numpy())
        values = np.concatenate(out)
        if return_numpy:
            return values
        j = self.spec.modalities.index(modality)
        obs = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
        return pd.DataFrame(values, index=obs, columns=list(self.spec.features[j]))

    def get_normalized_expression(self, data: Data | None = None, **kwargs):
        """:meth:`get_normalized` for the RNA modality (imputed for ATAC-only cells)."""
        return self.get_normalized(self._modality_of("rna"), data, **kwargs)

    def get_accessibility_estimates(self, data: Data | None = None, **kwargs):
        """:meth:`get_normalized` for the ATAC modality (imputed for RNA-only cells)."""
        return self.get_normalized(self._modality_of("atac"), data, **kwargs)

    @torch.inference_mode()
    def get_elbo(
        self, data: Data | None = None, indices=None, batch_size: int = 1024, seed: int = 0
    ) -> np.ndarray:
        """Per-cell joint ELBO (one posterior sample drawn from ``seed``), over the
        modalities each cell has. The global random state is left as it was."""
        cells = self._cell_data(data)
        out = []
        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(seed)
            for b in self._batches(cells, indices, batch_size):
                out.append(self.module.loss(b, 1.0).elbo.cpu().numpy())
        return np.concatenate(out)

    def _modality_of(self, kind: str) -> str:
        if kind not in self.spec.kinds:
            raise ValueError(f"this model has no {kind} modality (it has {self.spec.modalities}).")
        return self.spec.modalities[self.spec.kinds.index(kind)]

    def _batch_code(self, transform_batch: str | None) -> int | None:
        if transform_batch is None:
            return None
        cats = self.spec.categories[0]
        if self.spec.batch_key is None or transform_batch not in cats:
            raise ValueError(
                f"transform_batch={transform_batch!r} is not a batch of the "
                f"model (batches: {list(cats) if self.spec.batch_key else []})."
            )
        return cats.index(transform_batch)

    # ---- save / load ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write ``model.pt`` (weights only), ``config.json`` and ``history.csv`` to ``path``.

        Each file is written to a temporary name and renamed, so a crash never leaves
        a half-written model.
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} is not empty; pass overwrite=True to replace it.")
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "scamort_version": __version__,
            "module": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "is_trained": self.is_trained,
        }
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        atomic_write(path / "model.pt", lambda f: torch.save(state, f))
        atomic_write(path / "config.json", lambda f: f.write(json.dumps(config, indent=1).encode()))
        atomic_write(
            path / "history.csv", lambda f: f.write(self.history.to_csv(index=False).encode())
        )

    @classmethod
    def load(cls, path: str | os.PathLike, data: Data, chunk_size: int = 4096) -> SCAMORT:
        """Load a saved model for ``data``, whose features must match the model's exactly.

        ``data`` is checked against the model's registration (modalities, layers, batch and
        covariate keys); any ``setup_*`` registration of ``data`` is left as it is. Backed
        data are read in chunks of ``chunk_size`` cells.
        """
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} holds no saved scamort model (no config.json).")
        config = json.loads((path / "config.json").read_text())
        spec = DataSpec.from_dict(config["spec"])
        module_config = ModuleConfig(**config["module"])
        cells = to_cell_data(data, spec, chunk_size)
        model = cls.__new__(cls)
        model._init(data, spec, cells, module_config, seed=0)
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        model.module.load_state_dict(state)
        model.is_trained = config["is_trained"]
        hist = path / "history.csv"
        model.history = pd.read_csv(hist) if hist.stat().st_size > 1 else pd.DataFrame()
        return model

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


def _register(data, mods, batch_key, covariate_keys, chunk_size=4096) -> DataSpec:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    spec, cells = register(data, mods, batch_key, tuple(covariate_keys or ()), chunk_size)
    _remember(data, spec, cells)
    return spec


def _remember(data, spec: DataSpec, cells: CellData) -> None:
    # The entry (and its aligned copy of the counts) goes when the user's object goes.
    if id(data) not in _REGISTRY:
        weakref.finalize(data, _REGISTRY.pop, id(data), None)
    _REGISTRY[id(data)] = (weakref.ref(data), spec, cells)


def _registered(data) -> tuple[DataSpec, CellData]:
    entry = _REGISTRY.get(id(data))
    if entry is None or entry[0]() is not data:
        raise DataError(
            "this object was not set up: call SCAMORT.setup_mudata(mdata, ...) "
            "or SCAMORT.setup_anndata(adata, ...) first."
        )
    return entry[1], entry[2]


def _to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``; its host arrays (``mask_host``) stay."""

    def move(v):
        return v if isinstance(v, np.ndarray) else v.to(device)

    return {
        k: ({m: move(t) for m, t in v.items()} if isinstance(v, dict) else move(v))
        for k, v in batch.items()
    }


def _writable_file(data):
    """The open h5py file behind backed data, if it was opened for writing."""
    manager = getattr(data, "file", None)
    f = getattr(manager, "_file", None)
    if f is None or not f:
        raise DataError("the data are not backed by an open file.")
    if f.mode != "r+":
        raise DataError(
            f"{f.filename} is open read-only: open it with backed='r+' to write results into it."
        )
    return f


def _resume_path(resume, checkpoint_dir) -> str | None:
    """The checkpoint to resume from: None (a fresh start), or an existing file."""
    if resume is False or resume is None:
        return None
    if resume is True:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir= (where last.ckpt is kept).")
        last = Path(checkpoint_dir) / "last.ckpt"
        return str(last) if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    return str(path)


def _target_device(accelerator: str, devices) -> torch.device:
    """The device Lightning will train on (its first one), before the Trainer exists."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not gpu:
        return torch.device("cpu")
    first = devices[0] if isinstance(devices, (list, tuple)) else 0
    return torch.device("cuda", first)


def _decoded_mean(dist) -> torch.Tensor:
    """The normalized value of a decoded distribution: the NB mean without the ZINB
    dropout (sums to the library size), the Poisson rate, or the Bernoulli probability."""
    if hasattr(dist, "log_mu"):
        return dist.log_mu.exp()
    return dist.mean


def _nan_rows(v: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    keep = keep.reshape(-1, *([1] * (v.dim() - 1)))
    return torch.where(keep, v, torch.full_like(v, torch.nan)).detach().float().cpu().numpy()


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """Evaluation mode and no parameter gradients inside; both restored on exit."""
    flags, training = [p.requires_grad for p in module.parameters()], module.training
    module.eval()
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(training)


@contextlib.contextmanager
def _quiet_lightning():
    """Hide Lightning's start-up banner and hints; keep its warnings and progress bar."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
            yield
    finally:
        log.setLevel(level)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
