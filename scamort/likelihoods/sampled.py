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
(cell, peak) pairs that are open (:class:`_SampledLogits`: sparse matmuls, no gathered
copies).

Importance draws (``inclusion``: systematic sampling with unequal probabilities, half
uniform and half in proportion to each peak's open fraction; weights 1 / pi) are also
unbiased; measured on SNARE-seq they integrated worse than uniform draws (see
docs/speed.md), so the model draws uniformly.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .bernoulli import _MAX_LOG_P, log1mexp


def _csr(crow, col, values, size):
    with warnings.catch_warnings():  # "CSR support is in beta": the ops used here are not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


class _SampledLogits(torch.autograd.Function):
    """The output layer's logits without its bias where they are needed: ``h @ W[S]^T``
    on the sampled columns S (N, k) and the entries of ``h @ W^T`` at a CSR pattern
    (crow, col; ``row`` the row of each entry), as a vector in CSR order.

    Forward: one dense matmul on k columns and a sampled dense-dense matmul
    (``torch.sparse.sampled_addmm``) for the pattern. Backward: dense and sparse-dense
    matmuls (G^T built by a stable sort of the columns) into one gradient buffer for W:
    no (pairs x hidden) gathered copy and no second (peaks x hidden) temporary, either of
    which would cost as much as the dense output layer being replaced."""

    @staticmethod
    def forward(ctx, h, W, columns, crow, col, row):
        a_s = h @ W[columns].T
        pattern = _csr(crow, col, h.new_zeros(col.shape[0]), (h.shape[0], W.shape[0]))
        a_o = torch.sparse.sampled_addmm(pattern, h, W.T, beta=0.0).values()
        ctx.save_for_backward(h, W, columns, crow, col, row)
        return a_s, a_o

    @staticmethod
    def backward(ctx, g_s, g_o):
        h, W, columns, crow, col, row = ctx.saved_tensors
        n, p = h.shape[0], W.shape[0]
        g_o = g_o.contiguous()
        gh = gW = None
        if ctx.needs_input_grad[0]:
            gh = torch.addmm(g_s @ W[columns], _csr(crow, col, g_o, (n, p)), W)
        if ctx.needs_input_grad[1]:
            order = torch.argsort(col, stable=True)
            crow_t = torch.searchsorted(col[order], torch.arange(p + 1, device=h.device))
            gW = _csr(crow_t, row[order], g_o[order], (p, n)) @ h
            gW.index_add_(0, columns, g_s.T @ h)
        return gh, gW, None, None, None, None


def _log_p(a, ls_r, log_cell):
    return (F.logsigmoid(a) + ls_r + log_cell).clamp(max=_MAX_LOG_P)


def inclusion_probabilities(frequency: torch.Tensor, n_sampled: int) -> torch.Tensor:
    """Per-column inclusion probabilities pi (P,) that sum to ``n_sampled``, each at most
    1: half uniform, half proportional to ``frequency`` (each peak's fraction of open
    cells), capped at 1 with the excess given to the others. The uniform half bounds
    every weight 1 / pi by twice the uniform draw's P / k (defensive importance
    sampling), which keeps the estimate safe early in training, when the model's
    accessibilities do not yet follow the data's."""
    n = frequency.shape[0]
    q = frequency.double().clamp(min=0)
    q = 0.5 / n + (0.5 * q / q.sum() if q.sum() > 0 else 0.5 / n)
    pi = torch.zeros_like(q)
    free = torch.ones(n, dtype=torch.bool)
    budget = float(n_sampled)
    while True:  # water-filling: columns that would exceed 1 are taken with certainty
        pi[free] = budget * q[free] / q[free].sum()
        over = free & (pi >= 1)
        if not over.any():
            return pi.float()
        pi[over] = 1.0
        free &= ~over
        budget = n_sampled - float(pi[~free].sum())


def systematic_columns(cum_inclusion: torch.Tensor, n_sampled: int) -> torch.Tensor:
    """``n_sampled`` distinct columns, column p included with probability pi_p, where
    ``cum_inclusion`` is the cumulative sum of pi (float64, ending at ``n_sampled``):
    systematic sampling, one uniform offset and points one apart. No host
    synchronisation (a fixed number of columns)."""
    u = torch.rand((), dtype=torch.float64, device=cum_inclusion.device)
    points = u + torch.arange(n_sampled, dtype=torch.float64, device=cum_inclusion.device)
    columns = torch.searchsorted(cum_inclusion, points, right=True)
    return columns.clamp_(max=cum_inclusion.shape[0] - 1)


def sampled_peak_bernoulli_log_lik(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    region_logit: torch.Tensor,
    log_cell: torch.Tensor,
    crow: torch.Tensor,
    cid: torch.Tensor,
    open_w: torch.Tensor,
    n_sampled: int,
    columns: torch.Tensor | None = None,
    inclusion: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unbiased per-cell estimate of PeakVI's log-likelihood (see the module docstring).

    ``h`` (N, H) the decoder's last hidden layer, ``weight`` (P, H) and ``bias`` (P,) its
    output layer, ``region_logit`` (P,), ``log_cell`` (N, 1); the observed entries are
    the CSR pattern (crow, cid) with ``open_w`` 1 where open (0 for a stored zero).
    Closed peaks are scored on ``n_sampled`` columns: drawn uniformly without
    replacement (weight P / k each), or, with ``inclusion`` (P,) probabilities summing
    to ``n_sampled`` (:func:`inclusion_probabilities`), by systematic sampling (weight
    1 / pi). ``columns`` fixes the draw (with ``inclusion``, the probabilities it was
    drawn with). Draws use the global generator.
    """
    n_peaks = weight.shape[0]
    if inclusion is None:
        if columns is None:
            columns = torch.randperm(n_peaks, device=h.device)[:n_sampled]
        col_w = torch.full(columns.shape, n_peaks / columns.shape[0], device=h.device)
    else:
        if columns is None:
            columns = systematic_columns(torch.cumsum(inclusion.double(), 0), n_sampled)
        col_w = 1.0 / inclusion[columns].float()
    h, weight, bias = h.float(), weight.float(), bias.float()
    ls_r = F.logsigmoid(region_logit.float())
    log_cell = log_cell.float()
    # the sampled columns, all cells: sum of w log(1 - p)
    crow, cid = crow.long(), cid.long()
    rid = torch.repeat_interleave(
        torch.arange(h.shape[0], device=h.device), crow.diff(), output_size=cid.shape[0]
    )
    a_s, a_o = _SampledLogits.apply(h, weight, columns, crow, cid, rid)
    a_s, a_o = a_s + bias[columns], a_o + bias.index_select(0, cid)
    closed = (log1mexp(_log_p(a_s, ls_r[columns], log_cell)) * col_w).sum(1)
    # the open entries: + log p, and - w log(1 - p) where the column was sampled
    # index_select, not [cid]: its backward is an index_add, not a sorting index_put
    lp_o = _log_p(a_o, ls_r.index_select(0, cid), log_cell[:, 0].index_select(0, rid))
    w_of_col = torch.zeros(n_peaks, device=h.device).index_copy_(0, columns, col_w)
    w_o = w_of_col.index_select(0, cid)
    ll = h.new_zeros(h.shape[0]).index_add_(0, rid, open_w * lp_o)
    own = h.new_zeros(h.shape[0]).index_add_(0, rid, open_w * w_o * log1mexp(lp_o))
    return ll + closed - own
