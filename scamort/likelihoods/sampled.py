"""The Bernoulli peak likelihood with closed peaks scored on a sample of columns.

A cell opens 1-5 % of the peaks, so the exact likelihood (``bernoulli.py``) spends nearly
all its work on closed peaks. Reconstruction sampling (Dauphin, Glorot & Bengio, ICML
2011; the negative sampling of word2vec) scores every open peak of a cell exactly, and
the closed ones on a random subset S of ``k`` of the P peak columns, drawn uniformly
without replacement per minibatch and shared by its cells (so it stays one dense
matmul on k columns), weighted by the inverse inclusion probability P / k:

    log p(y_n) ~= sum_{p open} log p_np + (P / k) sum_{p in S, closed} log(1 - p_np)

Each closed peak is in S with probability k / P, so the estimate and its gradient are
unbiased for the exact log-likelihood. The open peaks' logits are computed as dot
products of the cell's hidden state with the peak's output weights, only for the
(cell, peak) pairs that are open (:class:`_PairDots`, which keeps no gathered copies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bernoulli import _MAX_LOG_P, log1mexp

# (cell, peak) pairs per chunk of the pair dot products: bounds the gathered temporaries.
_PAIRS_PER_CHUNK = 1 << 16


class _PairDots(torch.autograd.Function):
    """out_i = h[rid_i] . W[cid_i] for a list of pairs, in chunks; the backward pass
    recomputes the gathers chunk by chunk instead of keeping them."""

    @staticmethod
    def forward(ctx, h, W, rid, cid):
        out = h.new_empty(rid.shape[0])
        for s in range(0, rid.shape[0], _PAIRS_PER_CHUNK):
            e = s + _PAIRS_PER_CHUNK
            out[s:e] = (h[rid[s:e]] * W[cid[s:e]]).sum(-1)
        ctx.save_for_backward(h, W, rid, cid)
        return out

    @staticmethod
    def backward(ctx, g):
        h, W, rid, cid = ctx.saved_tensors
        gh = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        gW = torch.zeros_like(W) if ctx.needs_input_grad[1] else None
        for s in range(0, rid.shape[0], _PAIRS_PER_CHUNK):
            e = s + _PAIRS_PER_CHUNK
            gs = g[s:e, None]
            if gh is not None:
                gh.index_add_(0, rid[s:e], gs * W[cid[s:e]])
            if gW is not None:
                gW.index_add_(0, cid[s:e], gs * h[rid[s:e]])
        return gh, gW, None, None


def _log_p(a, ls_r, log_cell):
    return (F.logsigmoid(a) + ls_r + log_cell).clamp(max=_MAX_LOG_P)


def sampled_peak_bernoulli_log_lik(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    region_logit: torch.Tensor,
    log_cell: torch.Tensor,
    rid: torch.Tensor,
    cid: torch.Tensor,
    open_w: torch.Tensor,
    n_sampled: int,
    columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unbiased per-cell estimate of PeakVI's log-likelihood (see the module docstring).

    ``h`` (N, H) the decoder's last hidden layer, ``weight`` (P, H) and ``bias`` (P,) its
    output layer, ``region_logit`` (P,), ``log_cell`` (N, 1); the observed entries are
    (rid, cid) with ``open_w`` 1 where open (0 for a stored zero). ``n_sampled`` closed
    columns are drawn with the global generator unless ``columns`` gives them.
    """
    n_peaks = weight.shape[0]
    if columns is None:
        columns = torch.randperm(n_peaks, device=h.device)[:n_sampled]
    scale = n_peaks / columns.shape[0]
    h, weight, bias = h.float(), weight.float(), bias.float()
    ls_r = F.logsigmoid(region_logit.float())
    log_cell = log_cell.float()
    # the sampled columns, all cells: sum of log(1 - p)
    a_s = torch.addmm(bias[columns], h, weight[columns].T)
    closed = log1mexp(_log_p(a_s, ls_r[columns], log_cell)).sum(1)
    # the open entries: + log p, and - log(1 - p) where the column was sampled
    a_o = _PairDots.apply(h, weight, rid, cid) + bias[cid]
    lp_o = _log_p(a_o, ls_r[cid], log_cell[rid, 0])
    sampled = torch.zeros(n_peaks, dtype=torch.bool, device=h.device)
    sampled[columns] = True
    in_s = sampled[cid].to(lp_o.dtype)
    ll = h.new_zeros(h.shape[0]).index_add_(0, rid, open_w * lp_o)
    own = h.new_zeros(h.shape[0]).index_add_(0, rid, open_w * in_s * log1mexp(lp_o))
    return ll + scale * (closed - own)
