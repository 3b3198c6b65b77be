"""Diagnostics: per-cell ELBO and the amortization / approximation gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.setup import Data
from ..module import elbo, iwae, refine
from .inference import nan_rows
from .training import _cuda_devices


@torch.inference_mode()
def get_elbo(
    self,
    data: Data | None = None,
    indices=None,
    batch_size: int = 1024,
    return_mean: bool = True,
    seed: int = 0,
    progress_bar: bool = True,
) -> float | np.ndarray:
    """The ELBO of the cells (joint posterior, one draw from ``seed``, over the
    modalities each cell has): its mean per cell, as scvi-tools' ``get_elbo``, or with
    ``return_mean=False`` each cell's. Higher is better (it is not the loss). The global
    random state is left as it was."""
    inf = self._inference
    cells = inf.cells_of(data)
    out = []
    with torch.random.fork_rng(devices=_cuda_devices()), inf.step("ELBO", progress_bar):
        torch.manual_seed(seed)
        for b in inf.batches(cells, indices, batch_size):
            out.append(self.module.loss(b, 1.0).elbo.cpu().numpy())
    per_cell = np.concatenate(out)
    return float(per_cell.mean()) if return_mean else per_cell


@torch.inference_mode()
def get_reconstruction_error(
    self,
    data: Data | None = None,
    indices=None,
    batch_size: int = 1024,
    return_mean: bool = True,
    seed: int = 0,
    progress_bar: bool = True,
) -> dict[str, float | np.ndarray]:
    """The reconstruction error, -log p(x | z) at one draw of each cell's joint posterior,
    as scvi-tools' ``get_reconstruction_error``: ``{"reconstruction_loss": ...}`` over
    the modalities each cell has, and ``"reconstruction_loss_<modality>"`` for each
    modality over the cells that have it. Means per cell, or with ``return_mean=False``
    each cell's (NaN where a cell lacks the modality). Lower is better."""
    inf = self._inference
    cells = inf.cells_of(data)
    mods = self.spec.modalities
    parts: dict[str, list] = {m: [] for m in ("joint", *mods)}
    gen = torch.Generator(device=inf.device).manual_seed(seed)
    with inf.step("reconstruction error", progress_bar):
        for b in inf.batches(cells, indices, batch_size):
            q = inf.posterior(b, "joint")
            eps = torch.randn(q.loc.shape, generator=gen, device=q.loc.device)
            z = (q.loc + q.scale * eps)[None]
            for m in parts:
                nll = -inf.log_lik(b, m)(z)[0]
                parts[m].append(nan_rows(nll, inf.has(b, m)))
    out = {}
    for m, values in parts.items():
        key = "reconstruction_loss" if m == "joint" else f"reconstruction_loss_{m}"
        per_cell = np.concatenate(values)
        out[key] = float(np.nanmean(per_cell)) if return_mean else per_cell
    return out


@torch.inference_mode()
def get_marginal_ll(
    self,
    data: Data | None = None,
    indices=None,
    n_mc_samples: int = 1000,
    batch_size: int = 256,
    return_mean: bool = True,
    seed: int = 0,
    progress_bar: bool = True,
) -> float | np.ndarray:
    """The marginal log-likelihood log p(x) of the cells, as scvi-tools'
    ``get_marginal_ll``: the importance-weighted estimate with ``n_mc_samples`` draws of
    each cell's amortized joint posterior (a lower bound that tightens as the draws
    grow; Burda et al. 2016). Its mean per cell, or each cell's with
    ``return_mean=False``. Higher is better. Cost: ``n_mc_samples`` decoder passes per
    cell. :meth:`get_gaps` gives the same bound from the refined posterior."""
    if n_mc_samples < 1:
        raise ValueError(f"n_mc_samples must be >= 1, got {n_mc_samples}.")
    inf = self._inference
    cells = inf.cells_of(data)
    gen = torch.Generator(device=inf.device).manual_seed(seed)
    out = []
    with inf.step("marginal log-likelihood", progress_bar):
        for b in inf.batches(cells, indices, batch_size):
            q = inf.posterior(b, "joint")
            ll = iwae(inf.log_lik(b, "joint"), q.loc, q.scale, n_mc_samples, generator=gen)
            out.append(ll.float().cpu().numpy())
    per_cell = np.concatenate(out)
    return float(per_cell.mean()) if return_mean else per_cell


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
    progress_bar: bool = True,
) -> pd.DataFrame:
    """Per-cell amortization and approximation gaps of the joint posterior.

    For each cell (Cremer et al. 2018):

    - ``elbo_amortized``: ELBO of the encoders' product-of-experts posterior;
    - ``elbo_refined_K``: after K refinement steps, for each K in ``steps``;
    - ``elbo_converged``: the best ELBO met in ``converge_steps`` steps (at the start,
      a checkpoint or the end: stochastic steps need not end at their best), standing
      in for the best Gaussian posterior q*;
    - ``log_px_iwae``: importance-weighted bound on log p(x) with ``iw_samples``
      samples from q* (a lower bound that tightens as samples grow);
    - ``amortization_gap`` = elbo_converged - elbo_amortized (never negative, and
      ``elbo_refined_K`` never exceeds ``elbo_converged``: the share of the gap closed
      after K steps is at most 1);
    - ``approximation_gap`` = log_px_iwae - elbo_converged (a lower estimate of the
      true approximation gap, since the IWAE bound is below log p(x)).

    All ELBOs are measured on the same ``n_eval`` draws per cell (common random
    numbers), so their differences are precise. Cost: about ``converge_steps +
    iw_samples`` decoder passes per cell, so run it on a sample of cells.
    """
    inf = self._inference
    cells = inf.cells_of(data)
    gen = torch.Generator(device=inf.device).manual_seed(seed)
    steps = tuple(sorted(k for k in steps if k <= converge_steps))
    with inf.step("amortization gaps", progress_bar):
        rows = [
            _gaps(inf, batch, steps, converge_steps, lr, n_eval, iw_samples, gen)
            for batch in inf.batches(cells, indices, batch_size)
        ]
    out = pd.concat(rows, ignore_index=True)
    out.index = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
    out["amortization_gap"] = out["elbo_converged"] - out["elbo_amortized"]
    out["approximation_gap"] = out["log_px_iwae"] - out["elbo_converged"]
    return out


def _gaps(inf, batch, steps, converge_steps, lr, n_eval, iw_samples, gen) -> pd.DataFrame:
    """The ELBOs and the IWAE bound of :func:`get_gaps` for one minibatch."""
    with torch.no_grad():
        q = inf.posterior(batch, "joint")
    log_lik = inf.log_lik(batch, "joint")
    with inf.frozen():
        with torch.enable_grad():
            tick = inf.ticker(q.loc.shape[0], converge_steps)
            r = refine(log_lik, q.loc, q.scale, converge_steps, lr=lr, generator=gen,
                       checkpoints=steps, on_step=tick)  # fmt: skip
        with torch.no_grad():
            eps = torch.randn((n_eval, *q.loc.shape), generator=gen, device=q.loc.device)
            path = [(q.loc, q.scale), *(r.checkpoints[k] for k in steps), (r.loc, r.scale)]
            elbos = torch.stack([elbo(log_lik, loc, scale, eps) for loc, scale in path])
            cols = {"elbo_amortized": elbos[0]}
            cols.update({f"elbo_refined_{k}": e for k, e in zip(steps, elbos[1:-1])})
            # q*: the best posterior met on the path (stochastic steps need not end there)
            at = (elbos.argmax(0), torch.arange(elbos.shape[1], device=elbos.device))
            loc = torch.stack([p[0] for p in path])[at]
            scale = torch.stack([p[1] for p in path])[at]
            cols["elbo_converged"] = elbos.max(0).values
            cols["log_px_iwae"] = iwae(log_lik, loc, scale, iw_samples, generator=gen)
    return pd.DataFrame({k: v.cpu().numpy() for k, v in cols.items()})
