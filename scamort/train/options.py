"""``train()``'s options below the handful it shows: :class:`TrainingOptions`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._checks import with_fields
from ..data.loaders import Placement


@dataclass(frozen=True)
class TrainingOptions:
    """What ``SCAMORT.train`` does beyond its main arguments, one level down.

    Pass them to ``train`` by name (``model.train(max_steps=100)``) or as one object
    (``model.train(options=TrainingOptions(max_steps=100))``); a name that is not a
    field here is a TypeError that lists the fields.

    **Optimiser and schedule**

    weight_decay
        Adam's weight decay (0 for a query model: it would shrink the frozen weights).
    max_steps
        Also stop after this many optimizer steps.
    kl_warmup_epochs
        Epochs of the KL warm-up; ``None``: a quarter of the default epochs, or of the
        training when that is shorter (fewer ``max_epochs``, or ``max_steps`` ending it
        sooner); more epochs than the default do not stretch it.

    **Early stopping and held-out cells**

    early_stopping_patience
        Epochs without improvement of the held-out ELBO (after the warm-up) before
        training stops.
    validation_fraction
        Fraction of the cells held out for the held-out ELBO (backed data hold out whole
        chunks).
    final_epochs
        After early stopping, this many epochs train the encoders alone on every cell,
        the held-out ones included, at a tenth of ``lr`` (a fresh optimizer, KL weight
        1); the decoders stay as the held-out ELBO chose them. ``None``: a third of the
        epochs trained, rounded up; 0 leaves the held-out cells unseen, as does
        ``early_stopping=False``. Those epochs are marked ``all_cells`` in the history
        and are not checkpointed.
    heldout_encoders
        Let the held-out cells train the encoders (never the decoders) at every step:
        closer paired views on separate experiments, somewhat less modality mixing
        (docs/design_notes.md).

    **Semi-amortized training**

    refine_steps, refine_lr
        ``refine_steps=K > 0``: each step refines every cell's joint posterior K steps at
        ``refine_lr``; the decoders also learn from it and the encoders are pulled toward
        it, at roughly K + 1 times the cost of a step.

    **Devices and data**

    strategy
        Lightning's strategy, e.g. ``"ddp"`` with ``devices > 1``.
    precision
        Lightning's precision, e.g. ``"bf16-mixed"`` on a GPU.
    compile
        ``torch.compile`` the encoders and decoders.
    data_placement
        ``"device"``: the whole count matrices on the training device, minibatches sliced
        there; ``"host"``: minibatches gathered on the host and copied; ``"auto"``: on the
        device when they fit in half of its free memory.
    buffer_chunks
        Backed data: chunks of cells read and shuffled together.

    **Checkpoints**

    checkpoint_dir
        Write ``last.ckpt`` (weights, optimizer state, epoch, history, random state)
        there, atomically.
    checkpoint_every
        Every this many epochs.
    resume
        ``True``: continue from ``checkpoint_dir/last.ckpt`` when it exists (a fresh
        start when it does not); a path: continue from that checkpoint. A resumed run
        makes the same steps as one never stopped.
    """

    weight_decay: float = 1e-6
    max_steps: int | None = None
    kl_warmup_epochs: float | None = None
    early_stopping_patience: int = 10
    validation_fraction: float = 0.1
    final_epochs: int | None = None
    heldout_encoders: bool = False
    refine_steps: int = 0
    refine_lr: float = 0.05
    strategy: str = "auto"
    precision: str = "32-true"
    compile: bool = False
    data_placement: Placement = "auto"
    buffer_chunks: int = 4
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 1
    resume: bool | str | os.PathLike = False

    def __post_init__(self):
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in [0, 1).")
        final = self.final_epochs
        if final is not None and not (isinstance(final, (int, np.integer)) and final >= 0):
            raise ValueError(f"final_epochs must be an integer >= 0, got {final!r}.")
        if not isinstance(self.heldout_encoders, (bool, np.bool_)):
            raise ValueError(
                f"heldout_encoders must be True or False, got {self.heldout_encoders!r}."
            )
        if self.checkpoint_dir is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}.")

    @classmethod
    def build(cls, options: TrainingOptions | None, given: dict) -> TrainingOptions:
        """``options`` (or the defaults) with the fields in ``given`` set."""
        return with_fields(cls, options, given, "train")
