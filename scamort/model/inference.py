"""What every result reads: :class:`Inference`, the registered cells, the module on its
device, minibatches, posteriors and log-likelihood closures.

The model owns one (``model._inference``) and passes it to the concern functions
(``latent.py``, ``values.py``, ...), so every call from a public method to the module can
be followed by reading.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch.distributions import Normal

from .._checks import check_option
from ..data import CellData, DataSpec, to_cell_data
from ..data.backed import BackedCells
from ..data.cells import batches_without_paired
from ..data.setup import Data
from ..module import MultiVAE, product_of_experts
from ..module.refine import LogLik
from ..nn.covariates import BATCH, batch_codes
from ..train.plan import grad_flags_kept

Cells = CellData | BackedCells


class Inference:
    """The module, the data it was set up on, and what results compute from them."""

    def __init__(self, module: MultiVAE, data: Data, spec: DataSpec, cells: Cells, chunk_size: int):
        self.module, self.data, self.spec, self.cells = module, data, spec, cells
        # backed data are read in chunks of this many cells: new data passed to a result
        # method are read the same way as the training data
        self.chunk_size = chunk_size
        # the long step running (its label; "" when its bar is off): see step(); its open
        # bar, and how far the bar moved within the current minibatch (refinement ticks)
        self._step: str | None = None
        self._bar = None
        self._ticked = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    # ---- cells and minibatches -----------------------------------------------------------
    def cells_of(self, data: Data | None) -> Cells:
        """The aligned cells of ``data`` (None, or the registered object: the training
        cells)."""
        if data is None or data is self.data:
            return self.cells
        return to_cell_data(data, self.spec, self.chunk_size)

    @contextlib.contextmanager
    def step(self, label: str, show: bool = True):
        """Inside, the minibatches of ``batches`` show a progress bar labelled ``label``,
        counting cells, once the loop has run 2 seconds (quick calls stay silent);
        ``show=False``: none. A step inside another is part of it (no bar of its own)."""
        if self._step is not None:
            yield
            return
        self._step = label if show else ""
        try:
            yield
        finally:
            self._step = None

    def batches(self, cells: Cells, indices, batch_size: int) -> Iterator[dict]:
        """Minibatches on the module's device, by the same paths as training (backed data:
        read from disk one chunk of cells at a time); the module is put in eval mode.
        Within a :meth:`step`, the outermost loop shows its progress."""
        idx = np.arange(cells.n_cells) if indices is None else np.asarray(indices)
        self.module.eval()
        if not self._step or self._bar is not None:
            yield from self._batches(cells, idx, batch_size)
            return
        from .._progress import bar as progress_bar

        self._bar = bar = progress_bar(
            total=len(idx),
            desc=self._step,
            unit="cells",
            delay=2,
            dynamic_ncols=True,
            # whole cells shown, though refinement moves the bar by fractions of a batch
            bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {rate_fmt}]",
        )
        try:
            for batch in self._batches(cells, idx, batch_size):
                self._ticked = 0.0
                yield batch
                bar.update(batch["mask_host"].shape[0] - self._ticked)
        finally:
            bar.close()
            self._bar, self._ticked = None, 0.0

    def ticker(self, n_cells: int, n_steps: int):
        """For a minibatch of ``n_cells`` that takes ``n_steps`` steps (refinement): a
        function that moves the open bar by its share after each step (None: no bar)."""
        if self._bar is None or n_steps < 1:
            return None
        share = 0.95 * n_cells / n_steps

        def tick():
            self._ticked += share
            self._bar.update(share)

        return tick

    def _batches(self, cells: Cells, idx: np.ndarray, batch_size: int) -> Iterator[dict]:
        if isinstance(cells, BackedCells):
            for start in range(0, len(idx), cells.chunk_size):
                part = cells.take(idx[start : start + cells.chunk_size])
                yield from self._batches(part, np.arange(part.n_cells), batch_size)
            return
        # Each minibatch is gathered on the host and only it is copied to the device: a
        # call on a few cells (get_gaps on 60) must not copy the whole data set to the GPU.
        store = cells.tensors
        for start in range(0, len(idx), batch_size):
            yield _to(store.batch(idx[start : start + batch_size]), self.device)

    # ---- modalities and batches -------------------------------------------------------------
    def check_modality(self, modality: str) -> None:
        check_option("modality", modality, {"joint", *self.spec.modalities})

    def modality_of(self, kind: str) -> str:
        """The (first) registered modality of ``kind``."""
        if kind not in self.spec.kinds:
            raise ValueError(f"this model has no {kind} modality (it has {self.spec.modalities}).")
        return self.spec.modalities[self.spec.kinds.index(kind)]

    def view_mask(self, mask, modality: str):
        """The modality mask (a tensor, or the host bool array) restricted to ``modality``
        ('joint': unchanged)."""
        if modality == "joint":
            return mask
        keep = np.arange(mask.shape[1]) == self.spec.modalities.index(modality)
        if isinstance(mask, torch.Tensor):
            keep = torch.as_tensor(keep, device=mask.device)
        return mask * keep

    def has(self, batch: dict, modality: str) -> torch.Tensor:
        """(N,) whether each cell of the minibatch has ``modality`` ('joint': all)."""
        if modality == "joint":
            return torch.ones(batch["mask"].shape[0], dtype=torch.bool, device=self.device)
        return batch["mask"][:, self.spec.modalities.index(modality)].bool()

    def batch_code(self, name: str | None) -> int | None:
        """The code of batch ``name`` (None: None); a ValueError names the batches."""
        if name is None:
            return None
        cats = self.spec.categories[BATCH]
        if self.spec.batch_key is None or name not in cats:
            raise ValueError(
                f"transform_batch={name!r} is not a batch of the "
                f"model (batches: {list(cats) if self.spec.batch_key else []})."
            )
        return cats.index(name)

    def unbridged_batches(self) -> np.ndarray:
        """Codes of the batches in which the model was trained on no paired cell while
        other batches had some: separate one-modality experiments (empty when every batch
        has paired cells, or no training cell is paired)."""
        codes = np.asarray(batch_codes(self.cells.cov))
        without = batches_without_paired(self.cells.mask, codes)
        return without if len(without) < len(np.unique(codes)) else without[:0]

    # ---- posteriors and likelihoods -------------------------------------------------------
    def posterior(
        self, batch: dict, modality: str, paired: str = "product", prior: bool = True
    ) -> Normal:
        """q(z | the cell's modalities) for 'joint', or one expert with the prior.

        ``paired="average"`` (joint only): the equal mixture of the cell's single-modality
        posteriors, as its moment-matched Gaussian (mean: the average of their means);
        a cell with one modality gets that modality's posterior either way.
        ``prior=False``: the same of the experts alone, the prior left out of every
        product (a single-modality one is then that modality's expert itself)."""
        mask = batch["mask"]
        prior = prior and self.module.config.prior_expert  # a model trained without it
        experts = self.module.experts(batch["x"], mask, batch["cov"], batch["mask_host"])
        if modality != "joint" or paired == "product":
            return product_of_experts(experts, self.view_mask(mask, modality), prior=prior)
        singles = (
            [product_of_experts(experts, self.view_mask(mask, m)) for m in self.spec.modalities]
            if prior
            else experts  # rows of cells lacking m are placeholders, weighted 0 below
        )
        w = (mask / mask.sum(1, keepdim=True)).T[..., None]  # (M, N, 1)
        loc = torch.stack([q.loc for q in singles])
        mean = (w * loc).sum(0)
        second = (w * (torch.stack([q.scale for q in singles]) ** 2 + loc**2)).sum(0)
        var = (second - mean**2).clamp_min(torch.finfo(mean.dtype).tiny)
        return Normal(mean, var.sqrt(), validate_args=False)

    def log_lik(self, batch: dict, modality: str, rows: np.ndarray | None = None) -> LogLik:
        """log p(x_n | z) for z of shape (S, N, D), over the modalities the posterior uses.
        ``rows`` (host indices into the batch): z's N cells are those rows of the batch."""
        x, cov = batch["x"], batch["cov"]
        has = self.view_mask(batch["mask_host"], modality)
        with torch.no_grad():
            log_sizes = self.module.log_sizes(x, batch["mask"], batch["mask_host"])
        of = np.arange(len(has)) if rows is None else np.asarray(rows)

        def log_lik(z: torch.Tensor) -> torch.Tensor:
            s, n, d = z.shape
            cells = of[np.tile(np.arange(n), s)]  # row s * n + i is cell of[i]
            ll = self.module.log_likelihood(
                z.reshape(s * n, d), x, has[cells], cov, log_sizes, cells
            )
            return ll.reshape(s, n)

        return log_lik

    @contextlib.contextmanager
    def frozen(self):
        """The module in evaluation mode without parameter gradients inside; restored on
        exit."""
        module = self.module
        training = module.training
        with grad_flags_kept(module):
            module.eval()
            module.requires_grad_(False)
            try:
                yield
            finally:
                module.train(training)


def _to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``; its host arrays (``mask_host``) stay."""

    def move(v):
        return v if isinstance(v, np.ndarray) else v.to(device)

    return {
        k: ({m: move(t) for m, t in v.items()} if isinstance(v, dict) else move(v))
        for k, v in batch.items()
    }


def nan_rows(v: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """``v`` on the host with the rows where ``keep`` is False set to NaN."""
    keep = keep.reshape(-1, *([1] * (v.dim() - 1)))
    return torch.where(keep, v, torch.full_like(v, torch.nan)).detach().float().cpu().numpy()
