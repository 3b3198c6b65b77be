"""Training: loaders, the Lightning trainer, checkpoints, continued history."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import CombinedLoader

from ..data import (
    make_loader,
    resolve_placement,
)
from ..data.backed import BackedCells, ChunkBatches
from ..data.loaders import Placement, holdout
from ..train import AtomicCheckpointIO, EarlyStopping, History, TrainingPlan
from ..train.plan import encoders_learn, only_encoders_learn

if TYPE_CHECKING:
    from ._model import SCAMORT


def train(
    self,
    max_epochs: int | None = None,
    batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    early_stopping: bool | Literal["auto"] = "auto",
    early_stopping_patience: int = 10,
    validation_fraction: float = 0.1,
    final_epochs: int | None = None,
    heldout_encoders: bool = False,
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

    ``max_epochs=None`` picks ``clip(round(3e5 / n_cells), 20, 400)`` (the default
    epochs); ``max_steps`` also stops training after that many optimizer steps.
    ``kl_warmup_epochs=None`` warms the KL weight up over a quarter of the default
    epochs, or of the training when that is shorter (fewer ``max_epochs``, or
    ``max_steps`` ending it sooner): more epochs than the default do not stretch the
    warm-up. Early stopping watches the held-out ELBO (``elbo_validation``, on the
    ``validation_fraction`` of cells held out) and ends training once it has not
    improved for ``early_stopping_patience`` epochs after the warm-up (epochs of the
    warm-up do not count); ``"auto"`` (default) turns it on
    whenever there are held-out cells. The decoders overfit on long runs (on SNARE-seq
    the held-out ELBO peaks near epoch 20 and falls after, and the clusters with it),
    so ``max_epochs`` is a ceiling: more epochs do not make a worse model.
    After early stopping, ``final_epochs`` more epochs (``None``: a third of the epochs
    trained, rounded up) train the encoders alone on every cell, the held-out ones
    included, at a tenth of ``lr`` (a fresh optimizer, KL weight 1); the decoders stay
    as the held-out ELBO chose them. The encoders then have seen every cell they embed:
    cells they never saw are embedded less well (on SNARE-seq's separate-experiments
    design the RNA and ATAC views of the held-out paired cells were 180 times further
    apart by FOSCTTM than those trained on, 0.069 against 0.0004; after the final pass
    0.020, and 0.0020 over all paired cells instead of 0.0069). A larger learning rate
    or training the decoders too closes more of that gap but mixes the modalities less
    on SNARE-seq and the simulator, and training the decoders further loses precision
    in differential calls (docs/benchmarks.md). Those epochs are marked ``all_cells``
    in :attr:`history` (they have no held-out ELBO) and are not checkpointed;
    ``final_epochs=0`` leaves the held-out cells unseen, as does
    ``early_stopping=False``. ``heldout_encoders=True`` lets the held-out cells train
    the encoders all along: every step also reads a minibatch of them (their share of
    the cells) whose ELBO reaches the encoders alone, so the decoders, which their
    held-out ELBO judges, still never learn from them. It brings the held-out paired
    cells' RNA and ATAC views as close as the others' (on SNARE-seq's separate
    experiments FOSCTTM 0.0008 instead of 0.0032, both with the final pass) at the cost
    of reading every cell per epoch, and mixes the modalities a little less (modality
    iLISI 0.564 against 0.578 there, 0.539 against 0.570 on the simulator's separate
    experiments; docs/benchmarks.md), so it is off by default.
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
    if self._query_hooks is not None:
        if not any(p.requires_grad for p in self.module.parameters()):
            raise ValueError(
                "this query adds no batch or covariate category the reference lacks, so "
                "there is nothing to train: its embedding is ready (get_latent_representation"
                "; refine_steps brings each cell closer to its best posterior)."
            )
        weight_decay = 0.0  # decay would shrink the frozen reference weights too
    n = self._cells.n_cells
    epochs_by_size = default_epochs(n)
    max_epochs = max_epochs or epochs_by_size
    if early_stopping not in (True, False, "auto"):
        raise ValueError(f"early_stopping must be True, False or 'auto', got {early_stopping!r}.")
    if not 0 <= validation_fraction < 1:
        raise ValueError("validation_fraction must be in [0, 1).")
    if final_epochs is not None and not (
        isinstance(final_epochs, (int, np.integer)) and final_epochs >= 0
    ):
        raise ValueError(f"final_epochs must be an integer >= 0, got {final_epochs!r}.")
    if not isinstance(heldout_encoders, (bool, np.bool_)):
        raise ValueError(f"heldout_encoders must be True or False, got {heldout_encoders!r}.")
    if isinstance(self._cells, BackedCells):
        train_loader, val_loader, heldout_loader = self._chunk_loaders(
            validation_fraction, batch_size, seed, buffer_chunks
        )
        store, resident = None, False

        def all_cells_loader():
            chunks = np.arange(len(self._cells.chunks()))
            return ChunkBatches(self._cells, chunks, batch_size, True, seed + 1, buffer_chunks)
    else:
        train_idx, val_idx = holdout(n, validation_fraction, seed)
        store = self._cells.tensors
        target = _target_device(accelerator, devices)
        resident = resolve_placement(data_placement, target, store.nbytes)
        pin = target.type == "cuda"
        train_loader = make_loader(store, train_idx, batch_size, True, seed, resident, pin)
        val_loader = (
            make_loader(store, val_idx, batch_size, False, 0, resident, pin)
            if len(val_idx)
            else None
        )

        def heldout_loader(n_steps):
            step = max(1, -(-len(val_idx) // n_steps))
            return make_loader(store, val_idx, step, True, seed + 2, resident, pin)

        def all_cells_loader():
            return make_loader(store, np.arange(n), batch_size, True, seed + 1, resident, pin)

    if early_stopping == "auto":
        early_stopping = val_loader is not None
    if early_stopping and val_loader is None:
        raise ValueError(
            "early_stopping needs validation cells: set validation_fraction > 0 (backed "
            "data hold out whole chunks, so it needs at least one chunk's worth)."
        )
    if kl_warmup_epochs is None:
        warmup = default_warmup(max_epochs, epochs_by_size, max_steps, len(train_loader))
    else:
        warmup = kl_warmup_epochs

    def plan_with(warmup_epochs, lr=lr):
        return TrainingPlan(
            self.module,
            lr,
            weight_decay,
            warmup_epochs,
            refine_steps,
            refine_lr,
            store if resident else None,
        )

    history = History()
    callbacks = [history]
    if early_stopping:
        callbacks.append(EarlyStopping(warmup, early_stopping_patience))
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
    fit = {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "precision": precision,
        "progress_bar": progress_bar,
    }
    fit_loader = train_loader
    if heldout_encoders and val_loader is not None and encoders_learn(self.module):
        # as many held-out minibatches as training ones, each its share of the cells
        encoders_loader = heldout_loader(max(len(train_loader), 1))
        with _quiet_lightning():
            fit_loader = CombinedLoader(
                {"fit": train_loader, "encoders": encoders_loader}, "max_size_cycle"
            )
    trainer = _fit(
        plan_with(warmup),
        fit_loader,
        val_loader,
        callbacks,
        max_epochs,
        max_steps,
        seed,
        checkpointing=checkpoint_dir is not None,
        ckpt_path=ckpt_path,
        **fit,
    )
    rows = [{**r, "all_cells": False} for r in history.rows]
    if final_epochs is None:  # a third of the epochs early stopping let run
        final_epochs = -(-len(rows) // 3)
    if early_stopping and final_epochs > 0 and encoders_learn(self.module):
        final = History()
        with only_encoders_learn(self.module):
            trainer = _fit(
                plan_with(0.0, lr / 10), all_cells_loader(), None, [final], final_epochs,
                None, seed + 1, **fit,
            )  # fmt: skip
        after = int(rows[-1]["epoch"]) + 1 if rows else 0
        rows = rows + [{**r, "epoch": r["epoch"] + after, "all_cells": True} for r in final.rows]
    new = pd.DataFrame(rows)
    if ckpt_path is None and len(self.history) and len(new):
        # a further train() continues the history: epochs count on from the last one
        new["epoch"] += int(self.history["epoch"].iloc[-1]) + 1
        new = pd.concat([self.history, new], ignore_index=True)
    self.history = new
    self.is_trained = True
    self.global_rank = trainer.global_rank
    self.module.to(trainer.strategy.root_device)
    return self


def _fit(
    plan,
    train_loader,
    val_loader,
    callbacks,
    max_epochs,
    max_steps,
    seed,
    accelerator,
    devices,
    strategy,
    precision,
    progress_bar,
    checkpointing=False,
    ckpt_path=None,
) -> L.Trainer:
    """One Lightning fit of ``plan``; returns its trainer."""
    with _quiet_lightning(), torch.random.fork_rng(devices=_cuda_devices()):
        trainer = L.Trainer(
            max_epochs=max_epochs,
            max_steps=-1 if max_steps is None else max_steps,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=precision,
            logger=False,
            enable_checkpointing=checkpointing,
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
    return trainer


def default_epochs(n_cells: int) -> int:
    """``max_epochs=None``: ``clip(round(3e5 / n_cells), 20, 400)``."""
    return int(np.clip(round(3e5 / n_cells), 20, 400))


def default_warmup(max_epochs, default_epochs, max_steps, steps_per_epoch) -> float:
    """KL warm-up epochs: a quarter of the default epochs, or of the training that will
    run when it is shorter (fewer ``max_epochs``, or ``max_steps`` ending it sooner)."""
    epochs_run = min(max_epochs, default_epochs)
    if max_steps is not None:
        epochs_run = min(epochs_run, max_steps / max(steps_per_epoch, 1))
    return epochs_run / 4


def _chunk_loaders(self, validation_fraction, batch_size, seed, buffer_chunks):
    """Train and validation loaders over the chunks of backed data (whole chunks held
    out), and a function of a number of steps giving a shuffled loader over the held-out
    ones in about that many minibatches."""
    train_ids, val_ids = holdout(len(self._cells.chunks()), validation_fraction, seed)
    train = ChunkBatches(self._cells, train_ids, batch_size, True, seed, buffer_chunks)
    val = (
        ChunkBatches(self._cells, val_ids, batch_size, False, 0, buffer_chunks)
        if len(val_ids)
        else None
    )

    def heldout(n_steps):
        spans = self._cells.chunks()
        step = max(1, -(-sum(spans[i][1] - spans[i][0] for i in val_ids) // n_steps))
        return ChunkBatches(self._cells, val_ids, step, True, seed + 2, buffer_chunks)

    return train, val, heldout


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


@contextlib.contextmanager
def _quiet_lightning():
    """Hide Lightning's start-up banner and hints; keep its warnings and progress bar."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*have no `val_dataloader`.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
            yield
    finally:
        log.setLevel(level)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
