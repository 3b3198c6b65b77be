"""Reconstruction sampling of closed peaks: unbiased value and gradient, and a model
trained with it reaches the simulator's quality bars."""

import numpy as np
import pytest
import torch
from test_model import assert_history_finite, assert_meets_the_bars

import scamort
from scamort.kinds.atac import BernoulliDecoder
from scamort.likelihoods import peak_bernoulli_log_lik
from scamort.likelihoods.sampled import sampled_peak_bernoulli_log_lik
from scamort.nn import DecoderShape, SparseRows

N, P, D = 6, 300, 5


def _peaks(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(N, P, generator=g) < 0.05).float()
    y[:, 0] = 1.0
    x = SparseRows.from_dense(y)
    # a stored zero: an observed entry that is closed
    x = x.with_values(torch.where(torch.arange(x.val.shape[0]) == 3, 0.0, x.val))
    return x, g


def _decoder(k):
    torch.manual_seed(0)
    dec = BernoulliDecoder(DecoderShape(D, P, 0, 16, 1, 0.0), n_sampled=k)
    with torch.no_grad():
        dec.region_logit.normal_(0.0, 1.0)
        dec.out.bias.add_(-2.0)
    return dec


def _exact(dec, z, x):
    dec.eval()
    ll = dec.log_prob(z, None, dec.log_size(x), None, x)
    dec.train()
    return ll


def test_all_columns_give_the_exact_likelihood():
    x, g = _peaks()
    dec = _decoder(P - 1)
    z = torch.randn(N, D, generator=g)
    h = dec.body(z, None)
    log_cell = dec.log_size(x)
    open_w = (x.val > 0).float()
    got = sampled_peak_bernoulli_log_lik(
        h, dec.out.weight, dec.out.bias, dec.region_logit, log_cell, x.crow, x.col,
        open_w, P, columns=torch.arange(P),
    )  # fmt: skip
    want = peak_bernoulli_log_lik(
        dec.out(h), dec.region_logit, log_cell, x.row_ids(), x.col.long(), open_w
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def _importance(k):
    """Inclusion probabilities from skewed open fractions, some columns taken surely."""
    from scamort.likelihoods.sampled import inclusion_probabilities

    frequency = torch.rand(P, generator=torch.Generator().manual_seed(1)) ** 4
    frequency[:3] = 50.0
    return inclusion_probabilities(frequency, k)


@pytest.mark.parametrize("draw", ["uniform", "importance"])
def test_estimate_and_gradients_are_unbiased(draw):
    """Over 2,000 draws of 30 of the 300 columns (uniform: the model's draw; importance:
    systematic sampling with unequal probabilities), the mean estimate equals the exact
    log-likelihood within 4 standard errors per cell, and so does the mean gradient with
    respect to the latent and to the output weights (within 4 standard errors per
    entry, with a floor for entries whose spread is ~0)."""
    x, g = _peaks()
    dec = _decoder(30)
    z = torch.randn(N, D, generator=g).requires_grad_(True)
    exact = _exact(dec, z, x)
    gz_exact, gw_exact = torch.autograd.grad(exact.sum(), [z, dec.out.weight])
    inclusion = _importance(30) if draw == "importance" else None

    def estimate():
        if inclusion is None:
            return dec.log_prob(z, None, dec.log_size(x), None, x)
        return sampled_peak_bernoulli_log_lik(
            dec.body(z, None), dec.out.weight, dec.out.bias, dec.region_logit,
            dec.log_size(x), x.crow, x.col, (x.val > 0).float(), 30, inclusion=inclusion,
        )  # fmt: skip

    torch.manual_seed(1)
    values, gz, gw = [], [], []
    for _ in range(2000):
        est = estimate()
        a, b = torch.autograd.grad(est.sum(), [z, dec.out.weight])
        values.append(est.detach())
        gz.append(a)
        gw.append(b)
    for samples, want in ((values, exact.detach()), (gz, gz_exact), (gw, gw_exact)):
        s = torch.stack(samples)
        se = s.std(0) / np.sqrt(len(samples))
        err = (s.mean(0) - want).abs()
        assert (err <= 4 * se + 1e-4 * (1 + want.abs())).float().mean() > 0.99
        assert (s.std(0) > 0).any()  # really sampled


def test_importance_draws_include_each_column_with_its_probability():
    """The inclusion probabilities sum to k, stay in (0, 1], give no column less than half
    the uniform draw's k / P, and systematic sampling includes each column with exactly
    that probability (over 20,000 draws, within 4 standard errors), k distinct columns."""
    from scamort.likelihoods.sampled import systematic_columns

    pi = _importance(30)
    assert abs(float(pi.sum()) - 30) < 1e-4 and float(pi.max()) <= 1.0
    assert (pi[:3] == 1.0).all() and float(pi.min()) >= 0.5 * 30 / P - 1e-7
    cum = torch.cumsum(pi.double(), 0)
    torch.manual_seed(0)
    counts = torch.zeros(P)
    for _ in range(20_000):
        cols = systematic_columns(cum, 30)
        assert cols.unique().numel() == 30
        counts[cols] += 1
    freq = counts / 20_000
    se = (pi * (1 - pi) / 20_000).sqrt()
    assert ((freq - pi).abs() <= 4 * se + 1e-3).float().mean() > 0.99


def test_evaluation_mode_stays_exact():
    x, g = _peaks()
    dec = _decoder(30)
    z = torch.randn(N, D, generator=g)
    dec.eval()
    a = dec.log_prob(z, None, dec.log_size(x), None, x)
    b = dec.log_prob(z, None, dec.log_size(x), None, x)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="peak_sampling must be > 0"):
        scamort.Modality("atac", peak_sampling=0)


def test_model_trained_with_sampled_peaks_meets_the_bars(sim_mdata):
    sampled = scamort.Modality("atac", peak_sampling=0.1)
    scamort.SCAMORT.setup_mudata(sim_mdata, {"rna": "rna", "atac": sampled}, batch_key="batch")
    model = scamort.SCAMORT(sim_mdata, seed=0)
    assert model.module.decoders["atac"].n_sampled == 300
    model.train(max_epochs=40, seed=0, progress_bar=False)
    assert_meets_the_bars(model, sim_mdata)
    assert_history_finite(model.history.table)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5])
def test_sampled_logits_equal_the_dense_products_and_their_gradients(density):
    """The sampled columns' and the open entries' logits (a sampled matmul forward, sparse
    matmuls backward) are the dense product's entries, and their gradients the dense
    gradients; rows without entries (and a block without any) included."""
    from scamort.likelihoods.sampled import _SampledLogits

    g = torch.Generator().manual_seed(0)
    mask = torch.rand(7, 40, generator=g) < density
    mask[2] = False
    x = SparseRows.from_dense(mask.double())
    rid, cid = x.row_ids(), x.col.long()
    h = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(40, 5, generator=g, dtype=torch.float64, requires_grad=True)
    columns = torch.tensor([3, 17, 0, 39])
    w = torch.randn(rid.shape[0], generator=g, dtype=torch.float64)
    ws = torch.randn(7, 4, generator=g, dtype=torch.float64)
    a_s, a_o = _SampledLogits.apply(h, W, columns, x.crow.long(), cid, rid.long())
    dense = h @ W.T
    torch.testing.assert_close(a_s, dense[:, columns])
    torch.testing.assert_close(a_o, dense[rid, cid])
    got = (ws * a_s).sum() + (w * a_o).sum()
    want = (ws * dense[:, columns]).sum() + (w * dense[rid, cid]).sum()
    torch.testing.assert_close(torch.autograd.grad(got, [h, W]), torch.autograd.grad(want, [h, W]))
