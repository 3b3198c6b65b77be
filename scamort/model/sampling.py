"""Draws from the generative model and its likelihood parameters, in scvi-tools' shapes
(``posterior_predictive_sample``, ``get_likelihood_parameters``).

Cells that lack the modality get it from their joint posterior like every other
result; their size term (library size, or ATAC cell factor), which they did not
measure, is the median of the training cells that have the modality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .._checks import check_option
from ..data.setup import Data
from .inference import Inference
from .training import _cuda_devices

if TYPE_CHECKING:
    from ._model import SCAMORT

_SIZE_CELLS = 2000  # training cells whose median size term stands in for absent cells'


def _checked(model: SCAMORT, modality: str | None, n_samples: int) -> str:
    """The modality to draw (a one-modality model's by default), checked with
    ``n_samples``."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
    if modality is None:
        if len(model.spec.modalities) > 1:
            raise ValueError(
                f"this model has modalities {list(model.spec.modalities)}: say which with "
                "modality=."
            )
        return model.spec.modalities[0]
    check_option("modality", modality, model.spec.modalities)
    return modality


def _median_log_size(inf: Inference, modality: str) -> torch.Tensor:
    """(1, 1) median size term of up to 2,000 training cells that have ``modality``."""
    j = inf.spec.modalities.index(modality)
    have = np.flatnonzero(inf.cells.mask[:, j])
    pick = np.random.default_rng(0).choice(have, min(len(have), _SIZE_CELLS), replace=False)
    sizes = [
        inf.module.log_sizes(b["x"], b["mask"], b["mask_host"])[modality]
        for b in inf.batches(inf.cells, np.sort(pick), 1024)
    ]
    return torch.cat(sizes).median().reshape(1, 1)


def _decoded(model: SCAMORT, data, modality, indices, n_samples, give_mean, batch_size):
    """Per minibatch and posterior draw: the decoder's distribution of ``modality`` at
    each cell's size term (``n_samples`` draws of z, or its mean with ``give_mean``)."""
    inf = model._inference
    cells = inf.cells_of(data)
    j = model.spec.modalities.index(modality)
    fill = None
    for batch in inf.batches(cells, indices, batch_size):
        q = inf.posterior(batch, "joint")
        size = model.module.log_sizes(batch["x"], batch["mask"], batch["mask_host"])[modality]
        absent = ~torch.as_tensor(batch["mask_host"][:, j], device=size.device)
        if absent.any():
            if fill is None:
                fill = _median_log_size(inf, modality).to(size.device)
            size = torch.where(absent[:, None], fill, size)
        zs = [q.loc] if give_mean else [q.sample() for _ in range(n_samples)]
        yield [model.module.generative(z, batch["cov"], modality, size) for z in zs]


@torch.inference_mode()
def posterior_predictive_sample(
    self: SCAMORT,
    data: Data | None = None,
    modality: str | None = None,
    indices: np.ndarray | None = None,
    n_samples: int = 1,
    batch_size: int = 1024,
    seed: int = 0,
    progress_bar: bool = True,
):
    """Counts drawn from the model for each cell, as scvi-tools'
    ``posterior_predictive_sample``: z from the cell's joint posterior, then counts of
    ``modality`` from its likelihood at the cell's size term (one modality: it is the
    default). Returns a ``sparse.GCXS`` array, (cells, features) with ``n_samples=1``
    and (cells, features, samples) otherwise, drawn reproducibly from ``seed``.
    Posterior predictive checks compare these with the observed counts."""
    import sparse

    modality = _checked(self, modality, n_samples)
    inf = self._inference
    out = []
    with torch.random.fork_rng(devices=_cuda_devices()), inf.step("sampling", progress_bar):
        torch.manual_seed(seed)
        for dists in _decoded(self, data, modality, indices, n_samples, False, batch_size):
            draws = torch.stack([d.sample() for d in dists], -1).cpu().numpy()
            out.append(sparse.GCXS.from_numpy(draws if n_samples > 1 else draws[..., 0]))
    return sparse.concatenate(out, axis=0)


@torch.inference_mode()
def get_likelihood_parameters(
    self: SCAMORT,
    data: Data | None = None,
    modality: str | None = None,
    indices: np.ndarray | None = None,
    n_samples: int = 1,
    give_mean: bool = False,
    batch_size: int = 1024,
    seed: int = 0,
    progress_bar: bool = True,
) -> dict[str, np.ndarray]:
    """The parameters of the likelihood of ``modality`` for each cell, as scvi-tools'
    ``get_likelihood_parameters``: ``{"mean": ..., "dispersions": ..., "dropout": ...}``
    as the likelihood has them (NB: mean and dispersions; ZINB: also dropout; Poisson
    and Bernoulli: mean), at the cell's size term, from ``n_samples`` posterior draws
    (cells x features, or cells x features x samples; ``give_mean=True``: at the
    posterior mean, or averaged over the draws when ``n_samples > 1``)."""
    modality = _checked(self, modality, n_samples)
    inf = self._inference
    parts: dict[str, list] = {}
    one = n_samples == 1 or give_mean
    at_mean = give_mean and n_samples == 1
    with torch.random.fork_rng(devices=_cuda_devices()), inf.step("likelihood", progress_bar):
        torch.manual_seed(seed)
        for dists in _decoded(self, data, modality, indices, n_samples, at_mean, batch_size):
            params = [d.parameters() for d in dists]
            for name in params[0]:
                v = torch.stack([p[name] for p in params], -1).float().cpu().numpy()
                parts.setdefault(name, []).append(v.mean(-1) if one else v)
    return {name: np.concatenate(v) for name, v in parts.items()}
