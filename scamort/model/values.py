"""Normalized values and imputation of the modality a cell lacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .._checks import check_option
from ..data.setup import Data
from ..nn.covariates import with_batch


@torch.inference_mode()
def get_normalized(
    self,
    modality: str,
    data: Data | None = None,
    indices: np.ndarray | None = None,
    library_size: float | None = None,
    transform_batch: str | None = None,
    n_samples: int = 1,
    batch_size: int = 1024,
    return_numpy: bool = False,
    seed: int = 0,
    progress_bar: bool = True,
) -> pd.DataFrame | np.ndarray:
    """Decoded mean of ``modality`` for every cell, from its joint posterior.

    Cells that lack the modality get it imputed from the modalities they have.
    RNA (NB and ZINB) and Poisson ATAC: ``library_size * softmax(f(z))``, which sums
    to ``library_size`` over the features (default 1; the ZINB dropout is not
    applied, as in scvi-tools). Bernoulli ATAC: the probability of accessibility
    without the cell factor (region factor kept), in [0, 1]; ``library_size`` does not
    apply to it. ``transform_batch`` decodes every cell as if from that batch
    (batch-corrected values); ``n_samples > 1`` averages over posterior samples,
    drawn reproducibly from ``seed``, instead of using the posterior mean.
    """
    inf = self._inference
    check_option("modality", modality, self.spec.modalities)
    decoder = self.module.decoders[modality]
    if not decoder.scales_with_library:
        if library_size not in (None, 1, 1.0):
            raise ValueError(
                f"library_size does not apply to {modality!r}: its values are "
                f"probabilities ({self.config.likelihoods[modality]}). Leave library_size "
                "unset."
            )
        library_size = 1.0
    library_size = 1.0 if library_size is None else library_size
    if not (np.isfinite(library_size) and library_size > 0):
        raise ValueError(f"library_size must be a positive number, got {library_size}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
    cells = inf.cells_of(data)
    code = inf.batch_code(transform_batch)
    log_size = float(np.log(library_size))
    gen = torch.Generator(device=inf.device).manual_seed(seed)
    out = []
    with inf.step(f"normalized {modality}", progress_bar):
        for batch in inf.batches(cells, indices, batch_size):
            q = inf.posterior(batch, "joint")
            cov = batch["cov"] if code is None else with_batch(batch["cov"], code)
            if n_samples == 1:
                z = q.loc[None]
            else:
                eps = torch.randn((n_samples, *q.loc.shape), generator=gen, device=q.loc.device)
                z = q.loc + q.scale * eps
            means = [
                decoder.normalized_mean(
                    self.module.generative(
                        zs, cov, modality, zs.new_full((zs.shape[0], 1), log_size)
                    )
                )
                for zs in z
            ]
            out.append(torch.stack(means).mean(0).float().cpu().numpy())
    values = np.concatenate(out)
    if return_numpy:
        return values
    j = self.spec.modalities.index(modality)
    obs = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
    return pd.DataFrame(values, index=obs, columns=list(self.spec.features[j]))


def get_normalized_expression(
    self,
    data: Data | None = None,
    indices: np.ndarray | None = None,
    library_size: float | None = None,
    transform_batch: str | None = None,
    n_samples: int = 1,
    batch_size: int = 1024,
    return_numpy: bool = False,
    seed: int = 0,
    progress_bar: bool = True,
) -> pd.DataFrame | np.ndarray:
    """:meth:`get_normalized` of the RNA modality (imputed for cells without RNA)."""
    return self.get_normalized(
        self._inference.modality_of("rna"), data, indices, library_size, transform_batch,
        n_samples, batch_size, return_numpy, seed, progress_bar,
    )  # fmt: skip


def get_accessibility_estimates(
    self,
    data: Data | None = None,
    indices: np.ndarray | None = None,
    library_size: float | None = None,
    transform_batch: str | None = None,
    n_samples: int = 1,
    batch_size: int = 1024,
    return_numpy: bool = False,
    seed: int = 0,
    progress_bar: bool = True,
) -> pd.DataFrame | np.ndarray:
    """:meth:`get_normalized` of the ATAC modality (imputed for cells without ATAC):
    probabilities of accessibility for a Bernoulli model (``library_size`` does not
    apply), values summing to ``library_size`` (default 1) per cell for a Poisson one."""
    return self.get_normalized(
        self._inference.modality_of("atac"), data, indices, library_size, transform_batch,
        n_samples, batch_size, return_numpy, seed, progress_bar,
    )  # fmt: skip
