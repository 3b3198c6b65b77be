"""Closed-form checks of the product of experts."""

import torch
from torch.distributions import Normal

from scamort.module import product_of_experts


def _expert(n=5, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Normal(torch.randn(n, d, generator=g), torch.rand(n, d, generator=g) + 0.1)


def test_masked_expert_equals_that_expert_left_out():
    e1, e2, e3 = _expert(seed=1), _expert(seed=2), _expert(seed=3)
    masks = torch.tensor([[1.0, 0.0, 1.0]] * 5)
    with_masked = product_of_experts([e1, e2, e3], masks)
    left_out = product_of_experts([e1, e3], torch.ones(5, 2))
    torch.testing.assert_close(with_masked.loc, left_out.loc)
    torch.testing.assert_close(with_masked.scale, left_out.scale)


def test_masked_expert_with_nan_parameters_contributes_nothing():
    good = _expert(seed=1)
    bad = Normal(torch.full((5, 3), torch.nan), torch.full((5, 3), torch.nan), validate_args=False)
    masks = torch.tensor([[1.0, 0.0]] * 5)
    out = product_of_experts([good, bad], masks)
    ref = product_of_experts([good], torch.ones(5, 1))
    torch.testing.assert_close(out.loc, ref.loc)
    torch.testing.assert_close(out.scale, ref.scale)


def test_no_expert_gives_the_prior_and_one_expert_the_closed_form():
    e = _expert()
    prior_only = product_of_experts([e], torch.zeros(5, 1))
    torch.testing.assert_close(prior_only.loc, torch.zeros(5, 3))
    torch.testing.assert_close(prior_only.scale, torch.ones(5, 3))
    one = product_of_experts([e], torch.ones(5, 1))
    prec = 1 + e.scale**-2
    torch.testing.assert_close(one.scale, prec**-0.5)
    torch.testing.assert_close(one.loc, e.loc * e.scale**-2 / prec)


def test_two_linear_gaussian_views_give_the_exact_posterior():
    """z ~ N(0, I), x_v = A_v z + eps_v with eps_v ~ N(0, s_v^2 I), A_v diagonal.

    Each view's exact likelihood term, as a Gaussian in z, is the expert
    N(x_v / a_v, (s_v / a_v)^2) per dimension; the exact posterior precision is
    1 + sum_v a_v^2 / s_v^2 and its mean sum_v (a_v x_v / s_v^2) / precision.
    """
    g = torch.Generator().manual_seed(0)
    n, d = 64, 4
    z = torch.randn(n, d, generator=g)
    a1, a2 = torch.tensor([2.0, 0.5, 1.0, 3.0]), torch.tensor([1.0, 1.5, 0.2, 0.7])
    s1, s2 = 0.5, 0.8
    x1 = a1 * z + s1 * torch.randn(n, d, generator=g)
    x2 = a2 * z + s2 * torch.randn(n, d, generator=g)
    experts = [Normal(x1 / a1, (s1 / a1).expand(n, d)), Normal(x2 / a2, (s2 / a2).expand(n, d))]
    q = product_of_experts(experts, torch.ones(n, 2))
    prec = 1 + a1**2 / s1**2 + a2**2 / s2**2
    mean = (a1 * x1 / s1**2 + a2 * x2 / s2**2) / prec
    torch.testing.assert_close(q.loc, mean)
    torch.testing.assert_close(q.scale, prec.expand(n, d) ** -0.5)


def test_extreme_precisions_stay_finite():
    tight = Normal(torch.ones(2, 2), torch.full((2, 2), 1e-4))
    loose = Normal(torch.ones(2, 2), torch.full((2, 2), 1e4))
    q = product_of_experts([tight, loose], torch.ones(2, 2))
    assert torch.isfinite(q.loc).all() and torch.isfinite(q.scale).all()
    torch.testing.assert_close(q.loc, torch.ones(2, 2), rtol=1e-6, atol=1e-6)


def test_without_the_prior_one_expert_is_itself_and_two_their_closed_form_product():
    e1, e2 = _expert(seed=1), _expert(seed=2)
    masks = torch.tensor([[1.0, 0.0]] * 2 + [[1.0, 1.0]] * 3)
    out = product_of_experts([e1, e2], masks, prior=False)
    torch.testing.assert_close(out.loc[:2], e1.loc[:2])
    torch.testing.assert_close(out.scale[:2], e1.scale[:2])
    p1, p2 = e1.scale[2:] ** -2, e2.scale[2:] ** -2
    torch.testing.assert_close(out.scale[2:], (p1 + p2) ** -0.5)
    torch.testing.assert_close(out.loc[2:], (p1 * e1.loc[2:] + p2 * e2.loc[2:]) / (p1 + p2))
