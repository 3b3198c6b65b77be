"""Lightning training plan: the module's loss, a KL warm-up and AdamW."""

from __future__ import annotations

import lightning as L
import torch

from ..data.loaders import CellTensors
from ..module import MultiVAE


def kl_weight(epoch: int, step_in_epoch: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Linear KL warm-up from 0 to 1 over ``warmup_epochs`` (fractional epochs count)."""
    if warmup_epochs <= 0:
        return 1.0
    progress = epoch + step_in_epoch / max(steps_per_epoch, 1)
    return min(1.0, progress / warmup_epochs)


class TrainingPlan(L.LightningModule):
    """Trains a :class:`MultiVAE`; logs per-epoch means only (no per-step host syncs)."""

    def __init__(
        self,
        module: MultiVAE,
        lr: float,
        weight_decay: float,
        warmup_epochs: float,
        steps_per_epoch: int,
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
        self.warmup_epochs, self.steps_per_epoch = warmup_epochs, steps_per_epoch

    def on_fit_start(self):
        if self.store is not None:
            self.store = self.store.to(self.device)

    def _gather(self, batch):
        return self.store.batch(batch) if isinstance(batch, torch.Tensor) else batch

    def training_step(self, batch, batch_idx):
        batch = self._gather(batch)
        w = kl_weight(self.current_epoch, batch_idx, self.steps_per_epoch, self.warmup_epochs)
        out = self.module.loss(batch, w, self.refine_steps, self.refine_lr)
        n = batch["mask"].shape[0]
        self.log("train_loss", out.loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("elbo_train", out.elbo.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("kl_weight", w, on_step=False, on_epoch=True, batch_size=n)
        return out.loss

    def validation_step(self, batch, batch_idx):
        batch = self._gather(batch)
        out = self.module.loss(batch, 1.0)
        n = batch["mask"].shape[0]
        self.log("validation_loss", out.loss, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("elbo_validation", out.elbo.mean(), on_epoch=True, batch_size=n)

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
        self.rows.append(row)
