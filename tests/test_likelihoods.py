"""Each log-prob function against scipy.stats (float64) and its Distribution wrapper."""

import numpy as np
import pytest
import torch
from scipy import stats

from scamort.likelihoods import (
    NegativeBinomial,
    PeakBernoulli,
    Poisson,
    ZeroInflatedNegativeBinomial,
    log1mexp,
    log_bernoulli,
    log_nb,
    log_poisson,
    log_zinb,
)

rng = np.random.default_rng(0)
X = rng.integers(0, 30, size=200).astype(np.float64)
MU = rng.lognormal(0.0, 2.0, size=200)  # means from ~0.02 to ~50
THETA = rng.lognormal(0.0, 1.5, size=200)
T = torch.as_tensor


def nb_scipy(x, mu, theta):
    return stats.nbinom.logpmf(x, theta, theta / (theta + mu))


def test_nb_matches_scipy():
    got = log_nb(T(X), T(np.log(MU)), T(np.log(THETA))).numpy()
    np.testing.assert_allclose(got, nb_scipy(X, MU, THETA), rtol=1e-10, atol=1e-10)


def test_nb_matches_scvi_tools():
    scvi_nb = pytest.importorskip("scvi.distributions._negative_binomial").log_nb_positive
    got = log_nb(T(X), T(np.log(MU)), T(np.log(THETA))).numpy()
    ref = scvi_nb(T(X), T(MU), T(THETA), eps=0.0).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8)


def test_zinb_matches_scipy_mixture():
    logits = rng.normal(size=200)
    pi = 1.0 / (1.0 + np.exp(-logits))
    nb = nb_scipy(X, MU, THETA)
    expected = np.where(X == 0, np.log(pi + (1 - pi) * np.exp(nb)), np.log(1 - pi) + nb)
    got = log_zinb(T(X), T(np.log(MU)), T(np.log(THETA)), T(logits)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_poisson_matches_scipy():
    got = log_poisson(T(X), T(np.log(MU))).numpy()
    np.testing.assert_allclose(got, stats.poisson.logpmf(X, MU), rtol=1e-10, atol=1e-10)


def test_bernoulli_matches_scipy():
    p = rng.uniform(1e-6, 1 - 1e-5, size=200)
    y = rng.integers(0, 2, size=200).astype(np.float64)
    got = log_bernoulli(T(y), T(np.log(p))).numpy()
    np.testing.assert_allclose(got, stats.bernoulli.logpmf(y, p), rtol=1e-7, atol=1e-12)


def test_bernoulli_binarizes_counts_and_stays_finite_at_p_one():
    # A count of 3 scores as an open peak; log p = 0 (p = 1) is clamped, not -inf.
    lp = T(np.log([0.3, 0.3]))
    np.testing.assert_allclose(log_bernoulli(T([3.0, 1.0]), lp).numpy(), np.log([0.3, 0.3]))
    assert torch.isfinite(log_bernoulli(T([0.0]), T([0.0]))).all()


def test_log1mexp_accuracy():
    a = -np.logspace(-8, 2, 50)
    np.testing.assert_allclose(log1mexp(T(a)).numpy(), np.log(-np.expm1(a)), rtol=1e-9)


def test_distributions_wrap_the_functions():
    lm, lt, zl = T(np.log(MU)), T(np.log(THETA)), T(rng.normal(size=200))
    x = T(X)
    assert torch.equal(NegativeBinomial(lm, lt).log_prob(x), log_nb(x, lm, lt))
    assert torch.equal(
        ZeroInflatedNegativeBinomial(lm, lt, zl).log_prob(x), log_zinb(x, lm, lt, zl)
    )
    assert torch.equal(Poisson(lm).log_prob(x), log_poisson(x, lm))
    lp = -T(MU)
    assert torch.equal(PeakBernoulli(lp).log_prob(x), log_bernoulli(x, lp))
    np.testing.assert_allclose(NegativeBinomial(lm, lt).mean.numpy(), MU)
    zinb_mean = (1 / (1 + np.exp(zl.numpy()))) * MU
    np.testing.assert_allclose(ZeroInflatedNegativeBinomial(lm, lt, zl).mean.numpy(), zinb_mean)


def test_nb_stays_finite_for_extreme_parameters():
    out = log_nb(T([0.0, 5.0, 1e4]), T([-30.0, 20.0, 0.0]), T([15.0, -10.0, 12.0]))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("per_row_theta", [False, True])
def test_nb_from_nonzero_counts_matches_the_dense_sum_and_its_gradient(per_row_theta):
    """The NB decoder's sparse likelihood (log-gamma at the non-zero counts only) equals
    the dense sum of scipy-checked log_nb, value and gradient, with one inverse
    dispersion per gene or per gene and row (gene-batch)."""
    from scamort.likelihoods.negative_binomial import log_nb_rows
    from scamort.nn.sparse import SparseRows

    rng = np.random.default_rng(0)
    counts = rng.negative_binomial(2, 0.7, size=(40, 30)) * (rng.random((40, 30)) < 0.2)
    counts = counts.astype(np.float64)
    counts[3] = 0  # a row without counts
    x = SparseRows.from_dense(T(counts))
    log_mu = T(rng.normal(0, 1.5, (40, 30))).requires_grad_(True)
    shape = (40, 30) if per_row_theta else (30,)
    log_theta = T(rng.normal(0.5, 1.0, shape)).requires_grad_(True)
    sparse = log_nb_rows(log_mu, log_theta, x.row_ids(), x.col.long(), x.val)
    dense = log_nb(T(counts), log_mu, log_theta).sum(-1)
    np.testing.assert_allclose(sparse.detach(), dense.detach(), rtol=1e-5, atol=1e-4)
    g_sparse = torch.autograd.grad(sparse.sum(), [log_mu, log_theta])
    g_dense = torch.autograd.grad(dense.sum(), [log_mu, log_theta])
    for a, b in zip(g_sparse, g_dense):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
