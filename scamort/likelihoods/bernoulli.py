"""Bernoulli likelihood on binarized peaks with a cell factor and a region factor.

PeakVI's model: P(peak p open in cell n) = sigmoid(a_np) * sigmoid(c_n) * sigmoid(r_p),
with a_np from the decoder, c_n a cell factor (capture efficiency) and r_p a region
factor. The product of probabilities is formed as a sum of log-sigmoids, and
log(1 - p) from log p with a stable log1mexp, so no probability is ever rounded to 0 or 1.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

# log p is kept strictly below 0 so that log(1 - p) stays finite.
_MAX_LOG_P = -1e-6


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0.

    ``log(-expm1(a))`` is exact in relative terms near 0 (open peaks, p -> 1) and off by
    at most one rounding of 1 - p far from it (absolute error ~1e-7 in float32 per entry).
    That is one branch, about half the cost of Maechler's two-branch form on the
    (cells x peaks) tensor, which dominates the training time.
    """
    return torch.log(-torch.expm1(a))


def log_bernoulli(x: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Elementwise log Bernoulli(x; p = exp(log_p)); x is binarized (> 0 counts as 1)."""
    log_p = log_p.clamp(max=_MAX_LOG_P)
    return torch.where(x > 0, log_p, log1mexp(log_p))


class PeakBernoulli(Distribution):
    """Thin distribution around :func:`log_bernoulli`, parameterised by log p."""

    arg_constraints = {"log_p": constraints.less_than(0.0)}
    support = constraints.boolean

    def __init__(self, log_p: torch.Tensor):
        self.log_p = log_p
        super().__init__(batch_shape=log_p.shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.log_p.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return log_bernoulli(value, self.log_p)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        return torch.bernoulli(self.log_p.exp().expand(sample_shape + self.batch_shape))

    def parameters(self) -> dict[str, torch.Tensor]:
        """``mean``: the probability that the region is open in the cell."""
        return {"mean": self.mean}


# Rows per chunk of the fused likelihood: about 2^20 entries, so the temporaries of a
# chunk stay in cache and no (cells x peaks) temporary is ever formed whole.
_CHUNK_ENTRIES = 1 << 20


def _log_p_log_q(a, ls_r, log_cell):
    """Clamped log p, log(1 - p) and the mask of entries the clamp left alone."""
    log_p = F.logsigmoid(a).add_(ls_r).add_(log_cell)
    inside = log_p < _MAX_LOG_P
    log_p.clamp_(max=_MAX_LOG_P)
    return log_p, log1mexp(log_p), inside


class _PeakBernoulliSparse(torch.autograd.Function):
    """Sum over peaks of log Bernoulli(y_np; p_np), p_np = sig(a_np) sig(r_p) exp(lc_n),
    with y given by its open entries only.

    sum_p log(1 - p_np) is summed over all peaks in row chunks, then each open entry adds
    log p - log(1 - p). Only the logits are kept for the backward pass, which recomputes
    the chunk's terms (two sigmoids per entry, no logarithm) and writes the gradient with
    respect to the logits straight into its output, chunk by chunk. The one (cells x
    peaks) tensor alive besides the logits is that gradient, which autograd needs anyway.
    """

    @staticmethod
    def forward(ctx, a, region_logit, log_cell, rid, cid, open_w):
        n, p = a.shape
        ls_r = F.logsigmoid(region_logit)
        ll = a.new_empty(n)
        step = max(1, _CHUNK_ENTRIES // max(p, 1))
        for s in range(0, n, step):
            e = min(n, s + step)
            ll[s:e] = _log_p_log_q(a[s:e], ls_r, log_cell[s:e])[1].sum(1)
        # Open entries: + log p - log(1 - p).
        log_p, log_q, _ = _log_p_log_q(a[rid, cid], ls_r[cid], log_cell[rid, 0])
        ll.index_add_(0, rid, open_w * (log_p - log_q))
        ctx.save_for_backward(a, region_logit, log_cell, rid, cid, open_w)
        return ll

    @staticmethod
    def backward(ctx, grad_ll):
        # d/dlog p: -p / (1 - p) for every entry, + 1 / (1 - p) more for an open one,
        # 0 where the clamp held log p; d log p / da = sig(-a), d log p / dr = sig(-r).
        # Here p = sig(a) sig(r) sig(c) and 1 - p = sig(-a) + sig(a) (sig(-r) +
        # sig(r) (1 - sig(c))), a sum of positive terms: accurate without logarithms.
        a, region_logit, log_cell, rid, cid, open_w = ctx.saved_tensors
        need_a, need_r, need_c = ctx.needs_input_grad[:3]
        n, p = a.shape
        sig_r, sig_not_r = torch.sigmoid(region_logit), torch.sigmoid(-region_logit)
        sig_c, not_c = log_cell.exp(), -torch.expm1(log_cell)  # (N, 1)
        floor = -math.expm1(_MAX_LOG_P)  # 1 - p where the clamp starts

        def terms(a_, sig_r_, sig_not_r_, sig_c_, not_c_):
            s, not_s = torch.sigmoid(a_), torch.sigmoid(-a_)
            prob = s * sig_r_ * sig_c_
            q = torch.addcmul(not_s, s, torch.addcmul(sig_not_r_, sig_r_, not_c_))  # 1 - p
            return prob, q, not_s

        grad_a = torch.empty_like(a) if need_a else None
        sum_r = a.new_zeros(p)  # sum_n grad_ll_n dll_n/dlog p_np
        sum_c = a.new_empty(n)  # sum_p dll_n/dlog p_np
        step = max(1, _CHUNK_ENTRIES // max(p, 1))
        for s in range(0, n, step):
            e = min(n, s + step)
            prob, q, not_s = terms(a[s:e], sig_r, sig_not_r, sig_c[s:e], not_c[s:e])
            g = prob.div_(q).neg_().mul_(q > floor)
            sum_c[s:e] = g.sum(1)
            g.mul_(grad_ll[s:e, None])
            if need_r:
                sum_r += g.sum(0)
            if need_a:
                torch.mul(g, not_s, out=grad_a[s:e])
        _, q, not_s = terms(a[rid, cid], sig_r[cid], sig_not_r[cid], sig_c[rid, 0], not_c[rid, 0])
        g = open_w * (q > floor) / q
        sum_c.index_add_(0, rid, g)
        g = g * grad_ll[rid]
        if need_r:
            sum_r.index_add_(0, cid, g)
        if need_a:
            grad_a.index_put_((rid, cid), g * not_s, accumulate=True)
        grad_r = sum_r * sig_not_r if need_r else None
        grad_c = (sum_c * grad_ll)[:, None] if need_c else None
        return grad_a, grad_r, grad_c, None, None, None


def peak_bernoulli_log_lik(
    logits: torch.Tensor,
    region_logit: torch.Tensor,
    log_cell: torch.Tensor,
    rid: torch.Tensor,
    cid: torch.Tensor,
    open_w: torch.Tensor,
) -> torch.Tensor:
    """Per-cell log-likelihood of binarized peaks under PeakVI's model, from logits.

    ``logits`` (N, P) decoder output a_np, ``region_logit`` (P,) r_p, ``log_cell`` (N, 1)
    log sig(c_n); the observed peaks are the entries (rid, cid) with weight ``open_w``
    (1 for an open peak, 0 for an explicitly stored zero). Equals
    ``log_bernoulli(y, logsigmoid(a) + logsigmoid(r) + log_cell).sum(-1)`` without ever
    forming y densely, in about a third of the time and memory (only the logits are
    kept for the backward pass). Always evaluated in
    float32, also under bf16 autocast (the decoder's matmul may run in bf16).
    """
    device = logits.device.type
    no_autocast = (
        torch.autocast(device, enabled=False)
        if torch.amp.is_autocast_available(device)
        else contextlib.nullcontext()
    )
    with no_autocast:
        return _PeakBernoulliSparse.apply(
            logits.float(), region_logit.float(), log_cell.float(), rid, cid, open_w.float()
        )
