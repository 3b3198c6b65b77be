"""Negative binomial and zero-inflated negative binomial likelihoods for counts.

Both are parameterised by the log mean and the log inverse dispersion, so that the
decoder's ``log_softmax + log(library)`` never leaves log space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints


def log_nb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Elementwise log NB(x; mean=exp(log_mu), inverse dispersion=exp(log_theta)).

    ``log(theta + mu)`` is a ``logaddexp`` so a tiny mean or a huge theta stays finite.
    """
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    return (
        theta * (log_theta - log_theta_mu)
        + x * (log_mu - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


def log_nb_rows(
    log_mu: torch.Tensor, log_theta: torch.Tensor, rid: torch.Tensor, cid: torch.Tensor,
    val: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """(N,) sum over the features of :func:`log_nb`, for counts given by their non-zero
    entries (rows ``rid``, columns ``cid``, values ``val``) of an (N, F) block.

    The same value as the dense sum: at a zero count the NB log-probability is
    ``theta * (log theta - log(theta + mu))``, so the log-gamma terms (and their
    gradients) are needed at the non-zero counts only, a few per cent of the entries.
    """
    log_theta = log_theta.expand_as(log_mu)
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    at_zero = (log_theta.exp() * (log_theta - log_theta_mu)).sum(-1)
    lt, ltm, lm = log_theta[rid, cid], log_theta_mu[rid, cid], log_mu[rid, cid]
    theta = lt.exp()
    terms = (
        val * (lm - ltm) + torch.lgamma(val + theta) - torch.lgamma(theta) - torch.lgamma(val + 1.0)
    )
    return at_zero.index_add(0, rid, terms)


def log_zinb(
    x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor, zi_logits: torch.Tensor
) -> torch.Tensor:
    """Elementwise log ZINB: with probability sigmoid(zi_logits) a structural zero, else NB."""
    log_pi = -F.softplus(-zi_logits)  # log sigmoid(logits): a structural zero
    log_1m_pi = -F.softplus(zi_logits)  # log(1 - sigmoid(logits)): the NB branch
    nb = log_nb(x, log_mu, log_theta)
    at_zero = torch.logaddexp(log_pi, log_1m_pi + nb)
    return torch.where(x < 0.5, at_zero, log_1m_pi + nb)


class NegativeBinomial(Distribution):
    """Thin distribution around :func:`log_nb`."""

    arg_constraints = {"log_mu": constraints.real, "log_theta": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, log_mu: torch.Tensor, log_theta: torch.Tensor):
        self.log_mu, self.log_theta = torch.broadcast_tensors(log_mu, log_theta)
        super().__init__(batch_shape=self.log_mu.shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.log_mu.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return log_nb(value, self.log_mu, self.log_theta)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        """Counts drawn as a gamma-Poisson mixture (mean mu, inverse dispersion theta)."""
        sample_shape = torch.Size(sample_shape)
        theta = self.log_theta.exp().expand(sample_shape + self.batch_shape)
        rate = torch.distributions.Gamma(theta, theta / self.log_mu.exp()).sample()
        return torch.poisson(rate)

    def parameters(self) -> dict[str, torch.Tensor]:
        """scvi-tools' names: ``mean`` and ``dispersions`` (theta)."""
        return {"mean": self.mean, "dispersions": self.log_theta.exp()}


class ZeroInflatedNegativeBinomial(NegativeBinomial):
    """Thin distribution around :func:`log_zinb`."""

    arg_constraints = {**NegativeBinomial.arg_constraints, "zi_logits": constraints.real}

    def __init__(self, log_mu: torch.Tensor, log_theta: torch.Tensor, zi_logits: torch.Tensor):
        super().__init__(log_mu, log_theta)
        self.zi_logits = zi_logits

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(-self.zi_logits) * self.log_mu.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return log_zinb(value, self.log_mu, self.log_theta, self.zi_logits)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        counts = super().sample(sample_shape)
        dropped = torch.bernoulli(torch.sigmoid(self.zi_logits).expand_as(counts))
        return counts * (1 - dropped)

    def parameters(self) -> dict[str, torch.Tensor]:
        """scvi-tools' names: ``mean`` (of the NB, before dropout), ``dispersions``,
        ``dropout`` (the zero-inflation probability)."""
        return {
            "mean": self.log_mu.exp(),
            "dispersions": self.log_theta.exp(),
            "dropout": torch.sigmoid(self.zi_logits),
        }
