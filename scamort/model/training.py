"""Training: loaders, the Lightning trainer, checkpoints, continued history."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import CombinedLoader
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data import (
    make_loader,
    resolve_placement,
)
from ..data.backed import BackedCells, ChunkBatches
from ..data.loaders import holdout
from ..train import AtomicCheckpointIO, EarlyStopping, History, TrainingPlan
from ..train.options import TrainingOptions
from ..train.plan import TrainingBar, encoders_learn, only_encoders_learn, read_checkpoint
from .history import TrainingHistory

if TYPE_CHECKING:
    from ._model import SCAMORT


def train(
    self,
    max_epochs: int | None = None,
    batch_size: int = 512,
    lr: float = 1e-3,
    accelerator: str = "auto",
    devices: int | str = 1,
    early_stopping: bool | Literal["auto"] = "auto",
    seed: int = 0,
    progress_bar: bool = True,
    options: TrainingOptions | None = None,
    **kwargs,
) -> SCAMORT:
    """Fit the model with Lightning (same code on CPU and GPU).

    Parameters
    ----------
    max_epochs
        A ceiling on the epochs; ``None``: ``clip(round(3e5 / n_cells), 20, 400)``.
        Early stopping ends training sooner: the decoders overfit on long runs (on
        SNARE-seq the held-out ELBO peaks near epoch 20 and falls after, and the clusters
        with it), so more epochs do not make a worse model.
    batch_size
        Cells per minibatch. A larger ``B`` (a GPU has room for it) makes fewer steps per
        epoch: keep the number of steps and scale the learning rate by the square root,
        ``lr=1e-3 * (B / 512) ** 0.5`` and ``max_epochs`` times B / 512 (measured on
        SNARE-seq up to B = 1024; see the benchmarks). With ``devices=N`` it is the
        global minibatch (each rank takes ``B / N``).
    lr
        Adam's learning rate.
    accelerator, devices
        Lightning's: ``"cpu"``, ``"gpu"`` or ``"auto"``, and how many. Several devices
        train with distributed data parallel (``strategy="ddp"``; GPUs, or CPU processes
        with the gloo backend), each rank on its share of every epoch's cells; run the
        script with ``torchrun --nproc-per-node N`` or plainly. Only rank 0 should write
        results (:attr:`global_rank`).
    early_stopping
        Watch the held-out ELBO (``elbo_validation``, on the ``validation_fraction`` of
        cells held out) and end training once it has not improved for
        ``early_stopping_patience`` epochs after the KL warm-up; ``"auto"`` (default):
        whenever there are held-out cells. A final pass then trains the encoders alone
        on every cell (``final_epochs``), so the held-out cells are embedded nearly as
        well as the rest (docs/design_notes.md).
    seed
        Training is reproducible for a fixed seed on a given device.
    progress_bar
        Show Lightning's progress bar.
    options, **kwargs
        Everything else (:class:`~scamort.TrainingOptions`: weight decay, ``max_steps``,
        the KL warm-up, early stopping's patience and held-out fraction, the final pass,
        semi-amortized training, strategy, precision, data placement, checkpoints), as
        one object or by name.

    Calling ``train`` again continues from the current weights (with a fresh
    optimizer) and appends to :attr:`history`, whose ``epoch`` counts on. Data opened
    backed (``read_h5ad(..., backed="r")``, ``read_h5mu(..., backed=True)``) are
    streamed from disk: every epoch visits the chunks of consecutive cells in a new
    random order, ``buffer_chunks`` chunks at a time with their cells shuffled together.
    """
    opts = TrainingOptions.build(options, kwargs)
    if self._query_hooks is not None:
        if not any(p.requires_grad for p in self.module.parameters()):
            raise ValueError(
                "this query adds no batch or covariate category the reference lacks, so "
                "there is nothing to train: its embedding is ready (get_latent_representation"
                "; refine_steps brings each cell closer to its best posterior)."
            )
        opts = replace(opts, weight_decay=0.0)  # decay would shrink the frozen weights too
    if early_stopping not in (True, False, "auto"):
        raise ValueError(f"early_stopping must be True, False or 'auto', got {early_stopping!r}.")
    epochs_by_size = default_epochs(self._cells.n_cells)
    max_epochs = max_epochs or epochs_by_size
    loaders = _loaders(self._cells, opts, batch_size, seed, accelerator, devices)
    if early_stopping == "auto":
        early_stopping = loaders.val is not None
    if early_stopping and loaders.val is None:
        raise ValueError(
            "early_stopping needs validation cells: set validation_fraction > 0 (backed "
            "data hold out whole chunks, so it needs at least one chunk's worth)."
        )
    warmup = opts.kl_warmup_epochs
    if warmup is None:
        warmup = default_warmup(max_epochs, epochs_by_size, opts.max_steps, len(loaders.train))
    if opts.compile:
        for net in (*self.module.encoders.values(), *self.module.decoders.values()):
            net.compile(dynamic=True)
    fit = Fit(accelerator, devices, opts.strategy, opts.precision, progress_bar, seed)
    history = History()
    callbacks = _callbacks(history, early_stopping, warmup, opts)
    plan = _plan(self.module, loaders, opts, warmup, lr)
    ckpt_path = _resume_path(opts.resume, opts.checkpoint_dir)
    if ckpt_path is not None:
        _check_resumable(ckpt_path, max_epochs)
    train_loader = _with_heldout_encoders(self.module, loaders, opts)
    try:
        trainer = _fit(
            plan, train_loader, loaders.val, callbacks, max_epochs, opts.max_steps, fit,
            checkpointing=opts.checkpoint_dir is not None, ckpt_path=ckpt_path,
        )  # fmt: skip
    except TrainingInterrupted:  # the epochs that ended stay in the history
        _append_history(self, _rows(history, False), continued=ckpt_path is None)
        raise
    rows = _rows(history, False)
    if early_stopping:
        final_history = History()
        try:
            final = _final_pass(self.module, loaders, opts, lr, fit, len(rows), final_history)
        finally:
            rows += _rows(final_history, True, after=int(rows[-1]["epoch"]) + 1 if rows else 0)
            _append_history(self, rows, continued=ckpt_path is None)
        trainer = trainer if final is None else final
    else:
        _append_history(self, rows, continued=ckpt_path is None)
    self.is_trained = True
    self.global_rank = trainer.global_rank
    self.module.to(trainer.strategy.root_device)
    main = [r for r in rows if not r["all_cells"]]
    report = _report(main, len(rows) - len(main), max_epochs, early_stopping, opts.max_steps)
    if progress_bar and trainer.global_rank == 0:
        print(f"scamort: {report.summary}", file=sys.stderr)
    if report.still_improving and trainer.global_rank == 0:
        warnings.warn(
            f"training ended at max_epochs={max_epochs} while the {report.watched} was still "
            f"improving ({report.gain:+.2f} over its last {report.window} epochs): the model is "
            f"likely under-trained. Train longer (max_epochs=None sizes it to the data: "
            f"{epochs_by_size} epochs here, early stopping ending it once the held-out ELBO "
            "stops improving), or call train() again to continue.",
            stacklevel=2,
        )
    return self


@dataclass(frozen=True)
class Report:
    """How a ``train()`` call went: its summary line and whether the ELBO it watched was
    still rising when it ran out of epochs."""

    summary: str
    still_improving: bool
    watched: str
    gain: float
    window: int


def _report(main: list[dict], final: int, max_epochs, early_stopping, max_steps) -> Report:
    """The :class:`Report` of a fit whose main epochs' history rows are ``main`` and
    whose final pass ran ``final`` epochs."""
    n = len(main)
    key = "elbo_validation" if any("elbo_validation" in r for r in main) else "elbo_train"
    watched = "held-out ELBO" if key == "elbo_validation" else "training ELBO"
    elbo = np.array([r.get(key, np.nan) for r in main], dtype=float)
    ran_out = n >= max_epochs and max_steps is None
    how = "ran all max_epochs" if ran_out else "stopped early" if early_stopping else "stopped"
    text = f"trained {n} epochs ({how})"
    finite = np.isfinite(elbo)
    if finite.any():
        best = int(np.nanargmax(elbo))
        text += f"; {watched} per cell {elbo[best]:.2f} at its best (epoch {best + 1})"
    if final:
        text += f"; then {final} final-pass epochs of the encoders on all cells"
    window = max(2, n // 5)
    gain, improving = 0.0, False
    if ran_out and finite.all() and n > window:
        gain = float(elbo[-1] - elbo[:-window].max())
        # rising by more than 0.2 % of the ELBO over the last fifth of the epochs
        improving = gain > 0.002 * abs(elbo[-1])
    if improving:
        text += f"; the {watched} was still improving"
    return Report(text + ".", improving, watched, gain, window)


@dataclass(frozen=True)
class Fit:
    """What every Lightning fit of one ``train()`` call shares."""

    accelerator: str
    devices: int | str
    strategy: str
    precision: str
    progress_bar: bool
    seed: int
    phase: str = "training"


@dataclass
class Loaders:
    """The loaders of one ``train()`` call: training and held-out minibatches, a function
    of a number of steps giving the held-out cells in about that many shuffled
    minibatches, one giving every cell, and the resident store (data on the device)."""

    train: Any
    val: Any
    heldout: Callable[[int], Any]
    all_cells: Callable[[], Any]
    resident_store: Any = None


def _loaders(cells, opts: TrainingOptions, batch_size, seed, accelerator, devices) -> Loaders:
    if isinstance(cells, BackedCells):
        return _chunk_loaders(cells, opts, batch_size, seed)
    n = cells.n_cells
    train_idx, val_idx = holdout(n, opts.validation_fraction, seed)
    store = cells.tensors
    target = _target_device(accelerator, devices)
    resident = resolve_placement(opts.data_placement, target, store.nbytes)
    pin = target.type == "cuda"

    def loader(idx, size, shuffle, loader_seed):
        return make_loader(store, idx, size, shuffle, loader_seed, resident, pin)

    def heldout(n_steps):
        return loader(val_idx, max(1, -(-len(val_idx) // n_steps)), True, seed + 2)

    return Loaders(
        train=loader(train_idx, batch_size, True, seed),
        val=loader(val_idx, batch_size, False, 0) if len(val_idx) else None,
        heldout=heldout,
        all_cells=lambda: loader(np.arange(n), batch_size, True, seed + 1),
        resident_store=store if resident else None,
    )


def _chunk_loaders(cells: BackedCells, opts: TrainingOptions, batch_size, seed) -> Loaders:
    """Loaders over the chunks of backed data (whole chunks held out)."""
    chunks = cells.chunks()
    train_ids, val_ids = holdout(len(chunks), opts.validation_fraction, seed)

    def batches(ids, size, shuffle, loader_seed):
        return ChunkBatches(cells, ids, size, shuffle, loader_seed, opts.buffer_chunks)

    def heldout(n_steps):
        n_val = sum(chunks[i][1] - chunks[i][0] for i in val_ids)
        return batches(val_ids, max(1, -(-n_val // n_steps)), True, seed + 2)

    return Loaders(
        train=batches(train_ids, batch_size, True, seed),
        val=batches(val_ids, batch_size, False, 0) if len(val_ids) else None,
        heldout=heldout,
        all_cells=lambda: batches(np.arange(len(chunks)), batch_size, True, seed + 1),
    )


def _plan(module, loaders: Loaders, opts: TrainingOptions, warmup, lr) -> TrainingPlan:
    return TrainingPlan(
        module, lr, opts.weight_decay, warmup, opts.refine_steps, opts.refine_lr,
        loaders.resident_store,
    )  # fmt: skip


def _callbacks(history, early_stopping, warmup, opts: TrainingOptions) -> list:
    callbacks = [history]
    if early_stopping:
        callbacks.append(EarlyStopping(warmup, opts.early_stopping_patience))
    if opts.checkpoint_dir is not None:
        callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=opts.checkpoint_dir,
                filename="last",
                every_n_epochs=opts.checkpoint_every,
                save_top_k=1,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            )
        )
    return callbacks


def _with_heldout_encoders(module, loaders: Loaders, opts: TrainingOptions):
    """The training loader, with ``heldout_encoders``: combined with as many held-out
    minibatches as training ones, each its share of the cells."""
    if not (opts.heldout_encoders and loaders.val is not None and encoders_learn(module)):
        return loaders.train
    encoders_loader = loaders.heldout(max(len(loaders.train), 1))
    with _quiet_lightning():
        return CombinedLoader({"fit": loaders.train, "encoders": encoders_loader}, "max_size_cycle")


def _final_pass(module, loaders: Loaders, opts: TrainingOptions, lr, fit: Fit, n_epochs: int,
                history: History):  # fmt: skip
    """After early stopping (which ran ``n_epochs``): the encoders alone on every cell
    (``final_epochs``, at a tenth of ``lr``, no warm-up), its epochs recorded in
    ``history``. Returns the trainer (None when no pass ran)."""
    final_epochs = opts.final_epochs
    if final_epochs is None:  # a third of the epochs early stopping let run
        final_epochs = -(-n_epochs // 3)
    if final_epochs == 0 or not encoders_learn(module):
        return None
    with only_encoders_learn(module):
        final = replace(fit, seed=fit.seed + 1, phase="final pass (encoders, all cells)")
        return _fit(_plan(module, loaders, opts, 0.0, lr / 10), loaders.all_cells(), None,
                    [history], final_epochs, None, final)  # fmt: skip


def _rows(history: History, all_cells: bool, after: int = 0) -> list[dict]:
    """A fit's history rows, marked as trained on all cells (the final pass) or not,
    their epochs counting on from ``after``."""
    return [{**r, "epoch": r["epoch"] + after, "all_cells": all_cells} for r in history.rows]


def _append_history(model, rows: list, continued: bool) -> None:
    """``model.history`` with ``rows`` appended; a further train() continues the epochs
    from the last one (a resumed checkpoint's history is whole already)."""
    new, old = pd.DataFrame(rows), model.history.table
    if continued and len(old) and len(new):
        new["epoch"] += int(old["epoch"].iloc[-1]) + 1
        new = pd.concat([old, new], ignore_index=True)
    model.history = TrainingHistory(new)


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by a signal (SIGINT: Ctrl+C; SIGTERM: a scheduler's or a
    pipeline's stop). The model keeps the weights it had reached and its history the
    epochs that ended; ``checkpoint`` is the last complete checkpoint (None without
    ``checkpoint_dir``), from which ``resume=True`` continues."""

    def __init__(self, signal_name: str, epoch: int, checkpoint: str | None):
        self.signal_name, self.epoch, self.checkpoint = signal_name, epoch, checkpoint
        where = (
            f"the checkpoint {checkpoint} is whole: resume=True (--resume) continues from it"
            if checkpoint is not None
            else "no checkpoint was kept (checkpoint_dir= / --checkpoint-dir DIR keeps one "
            "that a stopped run resumes from)"
        )
        super().__init__(f"training stopped by {signal_name} during epoch {epoch + 1}; {where}.")

    @property
    def exit_status(self) -> int:
        """A shell's status for a process ended by this signal (128 + its number)."""
        return 128 + int(getattr(signal, self.signal_name))


def _fit(
    plan, train_loader, val_loader, callbacks, max_epochs, max_steps, fit: Fit,
    checkpointing=False, ckpt_path=None,
) -> L.Trainer:  # fmt: skip
    """One Lightning fit of ``plan``; returns its trainer. A signal that stops it is a
    :class:`TrainingInterrupted` (Lightning ends SIGTERM with status 0 and Ctrl+C with
    ``sys.exit``, and leaves Ctrl+C ignored afterwards)."""
    with _quiet_lightning(), torch.random.fork_rng(devices=_cuda_devices()), _sigint_kept():
        trainer = L.Trainer(
            max_epochs=max_epochs,
            max_steps=-1 if max_steps is None else max_steps,
            accelerator=fit.accelerator,
            devices=fit.devices,
            strategy=fit.strategy,
            precision=fit.precision,
            logger=False,
            enable_checkpointing=checkpointing,
            plugins=[AtomicCheckpointIO()],
            use_distributed_sampler=False,
            enable_progress_bar=fit.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[*callbacks, TrainingBar(fit.phase)] if fit.progress_bar else callbacks,
            limit_val_batches=1.0 if val_loader is not None else 0,
        )
        torch.manual_seed(fit.seed)
        try:
            trainer.fit(plan, train_loader, val_loader, ckpt_path=ckpt_path)
        except SystemExit as stop:
            if not trainer.interrupted:
                raise
            name = "SIGTERM" if isinstance(stop, SIGTERMException) else "SIGINT"
            epoch, ckpt = trainer.current_epoch, _last_checkpoint(trainer)
            raise TrainingInterrupted(name, epoch, ckpt) from None
    return trainer


def _last_checkpoint(trainer) -> str | None:
    """The path of the checkpoint a stopped fit left, where it keeps one."""
    ckpt = trainer.checkpoint_callback
    path = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "")
    return path if path and Path(path).exists() else None


@contextlib.contextmanager
def _sigint_kept():
    """Ctrl+C's handler as it was before a fit, whatever the fit set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


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


def _check_resumable(path: str, max_epochs: int) -> None:
    """A checkpoint further on than ``max_epochs`` cannot be resumed: say so in the
    package's terms (Lightning's own error names its Trainer)."""
    from ..readers import ReadError

    done = int(read_checkpoint(path).get("epoch", 0))
    if done > max_epochs:
        raise ReadError(
            path,
            f"the checkpoint has trained {done} epochs, more than max_epochs={max_epochs} "
            f"(--epochs): resume with at least {done}, the total the run should reach.",
        )


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
