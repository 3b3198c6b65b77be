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

from ..data import (
    make_loader,
    resolve_placement,
)
from ..data.backed import BackedCells, ChunkBatches
from ..data.loaders import Placement, holdout
from ..train import AtomicCheckpointIO, EarlyStopping, History, TrainingPlan

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
    if isinstance(self._cells, BackedCells):
        train_loader, val_loader = self._chunk_loaders(
            validation_fraction, batch_size, seed, buffer_chunks
        )
        store, resident = None, False
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
    """Train and validation loaders over the chunks of backed data (whole chunks held out)."""
    train_ids, val_ids = holdout(len(self._cells.chunks()), validation_fraction, seed)
    train = ChunkBatches(self._cells, train_ids, batch_size, True, seed, buffer_chunks)
    val = (
        ChunkBatches(self._cells, val_ids, batch_size, False, 0, buffer_chunks)
        if len(val_ids)
        else None
    )
    return train, val


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
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
            yield
    finally:
        log.setLevel(level)


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
