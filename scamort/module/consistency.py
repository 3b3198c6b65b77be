"""Swap consistency: the encoders learn to read through what the decoders model as batch
(and, across modalities, missing-modality) effects, by reading back profiles decoded
under another cell's batch as the same posterior. Functions of a :class:`.vae.MultiVAE`."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

from ..nn.covariates import batch_codes, with_batch
from ..nn.sparse import host_index_on
from .poe import product_of_experts

# batch-swap consistency reads at most this many cells of each modality per minibatch
CYCLE_CELLS = 128


def _subsample(rows: np.ndarray) -> tuple[np.ndarray, float]:
    """At most ``CYCLE_CELLS`` of ``rows``, drawn at random (sorted), and the weight that
    keeps a sum over them an unbiased estimate of the sum over all ``rows``."""
    if rows.size <= CYCLE_CELLS:
        return rows, 1.0
    keep = rows[torch.randperm(rows.size)[:CYCLE_CELLS].numpy()]
    return np.sort(keep), rows.size / CYCLE_CELLS


def cycle_loss(module, experts, mask, has, cov, log_sizes) -> torch.Tensor:
    """Batch-swap consistency of every expert: each cell's expected profile of a
    modality is decoded from its expert's mean under the batch of another cell of the
    minibatch that has the modality (a permutation of their batches), and the expert
    must read that profile back as the same posterior: KL(q_m(z | x') || q_m(z | x))
    with q_m(z | x) and x' held fixed, summed over the modalities, averaged over the
    cells. It trains the encoders alone to read through what the decoders model as
    batch effects; unlike the adversary it asks nothing of the batches' compositions.
    At most ``CYCLE_CELLS`` cells per modality (drawn at random, on the host) are read,
    weighted to keep the estimate of the sum unbiased: the dense decoding and
    re-encoding of every peak is the term's cost.

    With ``cross_cycle_weight > 0``, also the cross-modal swap: a cell lacking
    modality m has m decoded from the mean of its experts' product (its one expert,
    for two modalities) under the batch (and size) of a cell of the minibatch that
    has m, and expert m must read it back as that product."""
    c = module.config
    total = mask.new_zeros(())
    for j, m in enumerate(module.modalities):
        present = np.flatnonzero(has[:, j])
        if c.cycle_weight > 0 and present.size >= 2:
            rows, weight = _subsample(present)
            idx = host_index_on(rows, mask.device)
            source = Normal(experts[j].loc[idx], experts[j].scale[idx], validate_args=False)
            donors = idx[torch.randperm(len(rows), device=mask.device)]
            total = total + c.cycle_weight * weight * swap_kl(
                module, m, source, cov[idx], batch_codes(cov[donors]), log_sizes[m][idx]
            )
        absent = np.flatnonzero(~has[:, j])
        if c.cross_cycle_weight > 0 and present.size and absent.size:
            rows, weight = _subsample(absent)
            idx = host_index_on(rows, mask.device)
            source = product_of_experts(  # its experts' product, without the prior
                [Normal(e.loc[idx], e.scale[idx], validate_args=False) for e in experts],
                mask[idx],
                prior=False,
            )
            pick = torch.randint(present.size, (rows.size,)).numpy()
            donors = host_index_on(present[pick], mask.device)
            total = total + c.cross_cycle_weight * weight * swap_kl(
                module, m, source, cov[idx], batch_codes(cov[donors]), log_sizes[m][donors]
            )
    return total / mask.shape[0]


def swap_kl(module, m: str, source: Normal, cov, batch, log_size) -> torch.Tensor:
    """Summed KL(q_m(z | x') || source), x' modality m's expected profile decoded from
    the source's mean under ``batch`` (the cells' other covariates kept), with x' and
    the source held fixed: only expert m learns from it."""
    other = with_batch(cov, batch)
    other_1hot = module.covariates(other)
    loc = source.loc.detach()
    with torch.no_grad():
        x_swap = module.decoders[m].expected_input(loc, other_1hot, log_size, batch)
    cov_in = other_1hot if module.config.encode_covariates else None
    q_swap = module.encoders[m](x_swap, cov_in)
    target = Normal(loc, source.scale.detach(), validate_args=False)
    return kl_divergence(q_swap, target).sum()
