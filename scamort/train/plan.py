"""Lightning training plan: the module's loss, a KL warm-up and AdamW; checkpoints."""

from __future__ import annotations

import contextlib

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .._io import atomic_write
from ..data.loaders import CellTensors
from ..module import MultiVAE


def kl_weight(epoch: int, step_in_epoch: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Linear KL warm-up from 0 to 1 over ``warmup_epochs`` (fractional epochs count)."""
    if warmup_epochs <= 0:
        return 1.0
    progress = epoch + step_in_epoch / max(steps_per_epoch, 1)
    return min(1.0, progress / warmup_epochs)


def encoders_learn(module: MultiVAE) -> bool:
    """Whether any encoder weight trains (not so in a query with frozen encoders)."""
    return any(p.requires_grad for p in module.encoders.parameters())


@contextlib.contextmanager
def grad_flags_kept(module: torch.nn.Module):
    """Every parameter's ``requires_grad`` restored on exit, whatever was set inside."""
    flags = [p.requires_grad for p in module.parameters()]
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


@contextlib.contextmanager
def only_encoders_learn(module: MultiVAE):
    """Inside, every weight outside the encoders is held fixed (the encoders' own flags
    are kept); every flag is restored on exit."""
    encoders = {id(p) for p in module.encoders.parameters()}
    with grad_flags_kept(module):
        for p in module.parameters():
            if id(p) not in encoders:
                p.requires_grad_(False)
        yield


class TrainingPlan(L.LightningModule):
    """Trains a :class:`MultiVAE`; logs per-epoch means only (no per-step host syncs)."""

    def __init__(
        self,
        module: MultiVAE,
        lr: float,
        weight_decay: float,
        warmup_epochs: float,
        refine_steps: int = 0,
        refine_lr: float = 0.05,
        store: CellTensors | None = None,
    ):
        super().__init__()
        self.module = module
        # Resident data: moved to the training device once; the loaders yield indices.
        self.store = store
        self.refine_steps, self.refine_lr = refine_steps, refine_lr
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_epochs = warmup_epochs

    def on_fit_start(self):
        if self.store is not None:
            self.store = self.store.to(self.device)

    def _gather(self, batch):
        return self.store.batch(batch) if isinstance(batch, np.ndarray) else batch

    def on_train_epoch_start(self):
        self.kl_weights: list[float] = []

    def training_step(self, batch, batch_idx):
        # {"fit": cells, "encoders": held-out cells}: the held-out cells' ELBO trains the
        # encoders alone (the decoders, which early stopping judges on those cells, never
        # learn from them)
        held = None
        if isinstance(batch, dict) and "fit" in batch:
            batch, held = batch["fit"], batch["encoders"]
        batch = self._gather(batch)
        steps = self.trainer.num_training_batches
        w = kl_weight(self.current_epoch, batch_idx, steps, self.warmup_epochs)
        loss, out = self.step_loss(batch, None if held is None else self._gather(held), w)
        n = batch["mask"].shape[0]
        # Epoch means only; under DDP they are averaged over the ranks once per epoch.
        # Only tensors already on the device are logged: logging a Python number would
        # copy it to the device (a synchronisation) every step. The KL weight, a host
        # number, is kept on the host and read by History at the epoch's end.
        log = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
        self.log("train_loss", out.loss, **log)
        self.log("elbo_train", out.elbo.mean(), prog_bar=True, **log)
        self.kl_weights.append(w)
        return loss

    def step_loss(self, batch: dict, held: dict | None, w: float):
        """The loss a step minimises, and the module's output on ``batch``. With ``held``
        (a minibatch of the cells held out for early stopping) the mean runs over both
        minibatches' cells, the held-out ones' ELBO reaching the encoders alone."""
        out = self.module.loss(batch, w, self.refine_steps, self.refine_lr)
        if held is None:
            return out.loss, out
        n, m = batch["mask"].shape[0], held["mask"].shape[0]
        with only_encoders_learn(self.module):
            held_loss = self.module.loss(held, w, self.refine_steps, self.refine_lr).loss
        return (n * out.loss + m * held_loss) / (n + m), out

    def validation_step(self, batch, batch_idx):
        batch = self._gather(batch)
        out = self.module.loss(batch, 1.0)
        n = batch["mask"].shape[0]
        log = {"on_epoch": True, "batch_size": n, "sync_dist": True}
        self.log("validation_loss", out.loss, **log)
        self.log("elbo_validation", out.elbo.mean(), prog_bar=True, **log)

    # ---- checkpoints: the module's shape and the random state travel with the weights ----
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["scamort"] = {
            "module_config": self.module.config.to_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("scamort")
        if saved is None:
            raise ValueError("this checkpoint was not written by scamort's training.")
        if saved["module_config"] != self.module.config.to_dict():
            diff = sorted(
                k
                for k, v in self.module.config.to_dict().items()
                if saved["module_config"].get(k) != v
            )
            raise ValueError(
                f"the checkpoint is of a different model (settings that differ: {diff}); "
                "resume with the model and data it was trained with."
            )
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])

    def configure_optimizers(self):
        # The fused implementation (one kernel over all parameters) where torch has it.
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.AdamW(
            self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=fused
        )


class History(L.Callback):
    """Collects the epoch-level metrics into a list of dicts."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, plan):
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        weights = getattr(plan, "kl_weights", [])
        if weights:  # the epoch's mean KL weight, kept on the host by the plan
            row["kl_weight"] = float(np.mean(weights))
        self.rows.append(row)

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


class TrainingBar(L.pytorch.callbacks.TQDMProgressBar):
    """Lightning's bar, saying which phase of training runs and which epoch of how many;
    it shows the mean ELBO per cell of the epoch (training and held-out cells)."""

    def __init__(self, phase: str):
        super().__init__()
        self.phase = phase

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"{self.phase}, epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )

    def init_validation_tqdm(self):
        bar = super().init_validation_tqdm()
        bar.set_description("held-out ELBO")
        return bar

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self.val_progress_bar.set_description("held-out ELBO")


class EarlyStopping(L.pytorch.callbacks.EarlyStopping):
    """Lightning's early stopping on the held-out ELBO, counting from the end of the KL
    warm-up: while the KL weight still rises the model is not yet fitting the ELBO it is
    scored on, and a noisy held-out ELBO of a small data set must not end training
    there."""

    def __init__(self, warmup_epochs: float, patience: int):
        # strict=False: a run that max_steps ends within its first epoch has no held-out
        # ELBO yet, and nothing to stop
        super().__init__("elbo_validation", patience=patience, mode="max", strict=False)
        self.warmup_epochs = warmup_epochs

    def _warming_up(self, trainer) -> bool:
        return trainer.current_epoch + 1 < self.warmup_epochs

    def on_train_epoch_end(self, trainer, plan):
        if not self._warming_up(trainer):
            super().on_train_epoch_end(trainer, plan)

    def on_validation_end(self, trainer, plan):
        if not self._warming_up(trainer):
            super().on_validation_end(trainer, plan)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place:
    a run killed mid-write leaves the previous checkpoint whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(path, map_location)


def read_checkpoint(path, map_location=None) -> dict:
    """A training checkpoint, read as tensors, numbers and strings only
    (``weights_only=True``: a tampered file cannot run code); a file that is not one
    is a :class:`~scamort.ReadError` naming it."""
    from ..readers import ReadError

    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise ReadError(
            str(path),
            f"is not a training checkpoint scamort can read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); remove it to start afresh.",
        ) from None
