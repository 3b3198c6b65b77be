"""Diagnostics: per-cell ELBO and the amortization / approximation gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.setup import Data
from ..module import elbo, iwae, refine
from .training import _cuda_devices


@torch.inference_mode()
def get_elbo(
    self, data: Data | None = None, indices=None, batch_size: int = 1024, seed: int = 0
) -> np.ndarray:
    """Per-cell joint ELBO (one posterior sample drawn from ``seed``), over the
    modalities each cell has. The global random state is left as it was."""
    inf = self._inference
    cells = inf.cells_of(data)
    out = []
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        for b in inf.batches(cells, indices, batch_size):
            out.append(self.module.loss(b, 1.0).elbo.cpu().numpy())
    return np.concatenate(out)


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
    inf = self._inference
    cells = inf.cells_of(data)
    gen = torch.Generator(device=inf.device).manual_seed(seed)
    steps = tuple(sorted(k for k in steps if k <= converge_steps))
    rows = []
    for batch in inf.batches(cells, indices, batch_size):
        with torch.no_grad():
            q = inf.posterior(batch, "joint")
        log_lik = inf.log_lik(batch, "joint")
        with inf.frozen():
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
