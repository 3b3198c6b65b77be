"""What every result needs: the cells of a data object, minibatches on the model's device,
posteriors and log-likelihood closures."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.distributions import Normal

from ..data import (
    CellData,
    to_cell_data,
)
from ..data.backed import BackedCells
from ..data.setup import Data
from ..module import product_of_experts
from ..module.config import check_option
from ..module.refine import LogLik
from ..train.plan import grad_flags_kept

if TYPE_CHECKING:
    from ._model import SCAMORT


def device(self) -> torch.device:
    return next(self.module.parameters()).device


def to_device(self, device: str | torch.device) -> SCAMORT:
    """Move the module (for inference) to ``device``."""
    self.module.to(device)
    return self


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
    # Each minibatch is gathered on the host and only it is copied to the device: a call
    # on a few cells (get_gaps on 60) must not copy the whole data set to the GPU.
    store = cells.tensors
    for start in range(0, len(idx), batch_size):
        yield _to(store.batch(idx[start : start + batch_size]), self.device)


def _posterior(
    self, batch: dict, modality: str, paired: str = "product", prior: bool = True
) -> Normal:
    """q(z | the cell's modalities) for 'joint', or one expert with the prior.

    ``paired="average"`` (joint only): the equal mixture of the cell's single-modality
    posteriors, as its moment-matched Gaussian (mean: the average of their means);
    a cell with one modality gets that modality's posterior either way.
    ``prior=False``: the same of the experts alone, the prior left out of every product
    (a single-modality one is then that modality's expert itself)."""
    mask = batch["mask"]
    prior = prior and self.module.config.prior_expert  # a model trained without it has none
    experts = self.module.experts(batch["x"], mask, batch["cov"], batch["mask_host"])
    if modality != "joint" or paired == "product":
        return product_of_experts(experts, self._view_mask(mask, modality), prior=prior)
    singles = (
        [product_of_experts(experts, self._view_mask(mask, m)) for m in self.spec.modalities]
        if prior
        else experts  # rows of cells lacking m are placeholders, weighted 0 below
    )
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


def _log_lik(self, batch: dict, modality: str, rows: np.ndarray | None = None) -> LogLik:
    """log p(x_n | z) for z of shape (S, N, D), over the modalities the posterior uses.
    ``rows`` (host indices into the batch): z's N cells are those rows of the batch."""
    x, cov = batch["x"], batch["cov"]
    has = self._view_mask(batch["mask_host"], modality)
    with torch.no_grad():
        log_sizes = self.module.log_sizes(x, batch["mask"], batch["mask_host"])
    of = np.arange(len(has)) if rows is None else np.asarray(rows)

    def log_lik(z: torch.Tensor) -> torch.Tensor:
        s, n, d = z.shape
        cells = of[np.tile(np.arange(n), s)]  # row s * n + i is cell of[i]
        ll = self.module.log_likelihood(z.reshape(s * n, d), x, has[cells], cov, log_sizes, cells)
        return ll.reshape(s, n)

    return log_lik


def _has(self, batch: dict, modality: str) -> torch.Tensor:
    if modality == "joint":
        return torch.ones(batch["mask"].shape[0], dtype=torch.bool, device=self.device)
    return batch["mask"][:, self.spec.modalities.index(modality)].bool()


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


def _to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``; its host arrays (``mask_host``) stay."""

    def move(v):
        return v if isinstance(v, np.ndarray) else v.to(device)

    return {
        k: ({m: move(t) for m, t in v.items()} if isinstance(v, dict) else move(v))
        for k, v in batch.items()
    }


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """Evaluation mode and no parameter gradients inside; both restored on exit."""
    training = module.training
    with grad_flags_kept(module):
        module.eval()
        module.requires_grad_(False)
        try:
            yield
        finally:
            module.train(training)


def _nan_rows(v: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    keep = keep.reshape(-1, *([1] * (v.dim() - 1)))
    return torch.where(keep, v, torch.full_like(v, torch.nan)).detach().float().cpu().numpy()
