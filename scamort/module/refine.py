"""Semi-amortized inference: per-cell refinement of a Gaussian posterior, and gap estimates.

Everything here works on a *log-likelihood closure* ``log_lik(z) -> log p(x_n | z)``
with z of shape (S, N, D) and output (S, N), and the N(0, I) prior. The closure hides
the decoders (frozen by the caller), so the same code refines the product-of-experts
posterior of a multimodal cell and the posterior of a linear-Gaussian test model.

Per-cell parameters live only inside :func:`refine` and are returned as tensors; the
module never grows with the number of cells.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

LogLik = Callable[[torch.Tensor], torch.Tensor]


def kl_to_prior(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, I)) per cell: (N, D) -> (N,)."""
    return 0.5 * (loc**2 + scale**2 - 1.0 - 2.0 * torch.log(scale)).sum(-1)


# Rows (draws x cells) handed to ``log_lik`` at once when averaging over many draws: the
# decoders' (rows x features) outputs stay bounded (2,048 x 25,000 peaks: 0.2 GB).
ROWS_PER_CALL = 2048


def draws_per_call(n_cells: int) -> int:
    return max(1, ROWS_PER_CALL // max(n_cells, 1))


def elbo(
    log_lik: LogLik, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Reparameterised ELBO per cell with standard-normal draws ``eps`` (S, N, D) -> (N,).
    Many draws are evaluated a few at a time (``ROWS_PER_CALL``)."""
    k = draws_per_call(loc.shape[0])
    z = loc + scale * eps
    ll = torch.cat([log_lik(z[i : i + k]) for i in range(0, len(z), k)])
    return ll.mean(0) - kl_to_prior(loc, scale)


def iwae(
    log_lik: LogLik,
    loc: torch.Tensor,
    scale: torch.Tensor,
    n_samples: int,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per cell, proposal N(loc, scale^2).

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k)] - log K. A lower
    bound that tightens to log p(x) as K grows (Burda et al. 2016). Samples are drawn in
    chunks of ``chunk`` (default: ``ROWS_PER_CALL`` rows of draws x cells) to bound memory.
    """
    chunk = chunk or draws_per_call(loc.shape[0])
    log_w = []
    for start in range(0, n_samples, chunk):
        s = min(chunk, n_samples - start)
        eps = _randn((s, *loc.shape), loc, generator)
        z = loc + scale * eps
        log_prior = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        log_q = (-0.5 * eps**2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_w.append(log_lik(z) + log_prior - log_q)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(n_samples)


@dataclass
class Refined:
    """The refined posterior per cell and its ELBO before and after refinement."""

    loc: torch.Tensor  # (N, D)
    scale: torch.Tensor  # (N, D)
    elbo_before: torch.Tensor  # (N,)
    elbo_after: torch.Tensor  # (N,)
    steps: int  # steps actually taken
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]]  # step -> (loc, scale)


def refine(
    log_lik: LogLik,
    loc: torch.Tensor,
    scale: torch.Tensor,
    steps: int,
    lr: float = 0.05,
    n_samples: int = 1,
    tol: float | None = None,
    fixed_noise: bool = False,
    n_eval: int = 16,
    generator: torch.Generator | None = None,
    checkpoints: tuple[int, ...] = (),
    fallback: bool = True,
    draws: Callable[[int], torch.Tensor] | None = None,
    on_step: Callable[[], None] | None = None,
) -> Refined:
    """K Adam steps on every cell's own ELBO, vectorised over the cells of a block.

    The sum of the cells' ELBOs is optimised; each cell's (loc, log scale) receives only
    its own gradient and Adam is elementwise, so these are N independent optimisations.

    - ``fixed_noise=False`` (default): fresh draws each step, an unbiased stochastic
      gradient. The ELBO before and after is measured on ``n_eval`` common draws; a cell
      whose measured ELBO went down keeps its starting posterior, so refinement never
      lowers a cell's ELBO beyond the noise of that measurement.
    - ``fixed_noise=True``: one fixed set of ``n_samples`` draws (common random numbers)
      makes the objective deterministic; each cell keeps its best iterate, so
      ``elbo_after >= elbo_before`` holds exactly for that objective. With few draws
      the fixed objective can be over-fitted (the true ELBO may drop), so use it with
      ``n_samples`` in the tens.

    A cell whose refinement diverged (a non-finite ELBO) falls back to its start too.
    ``fallback=False`` returns the last iterate of every cell as it is, with its measured
    ELBO (what refinement itself achieved, for diagnostics and tests).

    ``tol`` stops once no cell's loc or log scale moved by more than ``tol`` in a step.
    ``checkpoints`` also returns the posterior after each of these step counts.
    ``draws(k)`` supplies the standard-normal draws, shape (k, N, D) on ``loc``'s device
    (default: from ``generator``); per-cell streams make each cell's refinement
    independent of the other cells of its block. ``on_step()`` is called after each step
    (progress).
    """
    if draws is None:

        def draws(k: int) -> torch.Tensor:
            return _randn((k, *loc.shape), loc, generator)

    fixed = draws(n_samples) if fixed_noise else None
    measure = fixed if fixed_noise else draws(n_eval)
    mu = loc.detach().clone().requires_grad_(True)
    log_sigma = torch.log(scale.detach()).clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    with torch.no_grad():
        start = elbo(log_lik, loc, scale, measure)
    best, best_mu, best_ls = start.clone(), mu.detach().clone(), log_sigma.detach().clone()
    taken, saved = 0, {}

    def report():  # (loc, scale, elbo) of the current state, as returned
        return _final(
            log_lik,
            fixed_noise,
            fallback,
            measure,
            start,
            best,
            best_mu,
            best_ls,
            mu,
            log_sigma,
            loc,
            scale,
        )

    while taken < steps:
        eps = fixed if fixed_noise else draws(n_samples)
        value = elbo(log_lik, mu, log_sigma.exp(), eps)
        if fixed_noise and fallback:  # the value at the current iterate is the objective
            with torch.no_grad():
                _keep_better(value, best, best_mu, best_ls, mu, log_sigma)
        before = (mu.detach().clone(), log_sigma.detach().clone()) if tol is not None else None
        # autograd.grad, not backward(): gradients reach (mu, log_sigma) only, never the
        # .grad of model parameters (refinement also runs inside a training step).
        mu.grad, log_sigma.grad = torch.autograd.grad(-value.sum(), [mu, log_sigma])
        opt.step()
        taken += 1
        if on_step is not None:
            on_step()
        if not (fixed_noise and fallback):
            best_mu, best_ls = mu.detach(), log_sigma.detach()
        if taken in checkpoints:
            saved[taken] = report()[:2]
        if tol is not None:  # reads a number back from the device: only when asked
            moved = torch.maximum((mu - before[0]).abs().max(), (log_sigma - before[1]).abs().max())
            if moved.item() < tol:
                break
    out_loc, out_scale, after = report()
    for c in checkpoints:  # stopped early: later checkpoints hold the final posterior
        saved.setdefault(c, (out_loc, out_scale))
    return Refined(out_loc, out_scale, start, after, taken, saved)


def _keep_better(value, best, best_mu, best_ls, mu, log_sigma) -> None:
    better = value > best
    best.copy_(torch.where(better, value, best))
    best_mu.copy_(torch.where(better[:, None], mu, best_mu))
    best_ls.copy_(torch.where(better[:, None], log_sigma, best_ls))


@torch.no_grad()
def _final(
    log_lik,
    fixed_noise,
    fallback,
    measure,
    start,
    best,
    best_mu,
    best_ls,
    mu,
    log_sigma,
    loc,
    scale,
):
    """(loc, scale, elbo) to report. With ``fallback``: the best iterate (fixed noise, after
    scoring the last one) or the last iterate, falling back per cell to the start where it
    measured worse or not finite. Without: the last iterate and its measured ELBO."""
    if not fallback:
        return mu.detach(), log_sigma.exp().detach(), elbo(log_lik, mu, log_sigma.exp(), measure)
    if fixed_noise:
        best, best_mu, best_ls = best.clone(), best_mu.clone(), best_ls.clone()
        _keep_better(
            elbo(log_lik, mu, log_sigma.exp(), measure), best, best_mu, best_ls, mu, log_sigma
        )
        return best_mu, best_ls.exp(), best
    after = elbo(log_lik, mu, log_sigma.exp(), measure)
    worse = ~(after >= start)  # NaN compares False: a diverged cell falls back as well
    return (
        torch.where(worse[:, None], loc, mu.detach()),
        torch.where(worse[:, None], scale, log_sigma.exp()),
        torch.where(worse, start, after),
    )


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)
