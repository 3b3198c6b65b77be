"""Product of Gaussian experts with the N(0, I) prior as one expert."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Normal


def product_of_experts(
    experts: Sequence[Normal], masks: torch.Tensor, prior: bool = True
) -> Normal:
    """Precision-weighted product of diagonal Gaussian experts and the standard normal prior.

    tau = 1 + sum_m a_m / sigma_m^2,  mu = (sum_m a_m mu_m / sigma_m^2) / tau.

    Parameters
    ----------
    experts
        M Normals, each with loc and scale of shape (N, D).
    masks
        (N, M), 1 where cell n has modality m. A masked expert contributes exactly
        nothing, even if its parameters are NaN (they are selected away, not multiplied by 0).
    prior
        Include the prior as an expert (default). ``False``: the product of the present
        experts alone (every cell must have one).

    Returns
    -------
    Normal with loc and scale of shape (N, D).
    """
    loc = torch.stack([e.loc for e in experts])  # (M, N, D)
    log_prec = -2.0 * torch.log(torch.stack([e.scale for e in experts]))  # (M, N, D)
    present = masks.T.bool().unsqueeze(-1)  # (M, N, 1)
    log_prec = torch.where(present, log_prec, torch.full_like(log_prec, -torch.inf))
    if prior:  # the prior's precision is 1
        log_prec_all = torch.cat([torch.zeros_like(log_prec[:1]), log_prec])
    else:
        log_prec_all = log_prec
    log_tau = torch.logsumexp(log_prec_all, dim=0)  # (N, D)
    weights = torch.exp(log_prec - log_tau)  # a_m sigma_m^-2 / tau, exactly 0 when masked
    mean = (weights * torch.where(present, loc, torch.zeros_like(loc))).sum(0)
    return Normal(mean, torch.exp(-0.5 * log_tau), validate_args=False)
