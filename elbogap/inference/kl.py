"""Closed-form KL divergences between the Gaussian shapes guides, priors and posteriors take."""

import pyro.distributions as dist
import torch
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal
from torch.distributions.kl import kl_divergence


def as_multivariate_normal(d) -> MultivariateNormal | None:
    """``d`` as a :class:`MultivariateNormal` when it is one in disguise, else ``None``."""
    if isinstance(d, MultivariateNormal):
        return d
    if isinstance(d, LowRankMultivariateNormal):
        return dist.MultivariateNormal(d.loc, covariance_matrix=d.covariance_matrix)
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        return dist.MultivariateNormal(d.base_dist.loc, scale_tril=torch.diag_embed(d.base_dist.scale))
    return None


def analytic_kl(q, p) -> torch.Tensor | None:
    """:math:`\\mathrm{KL}(q \\| p)` in closed form where torch's KL registry has it, else ``None``.

    Diagonal and low-rank Gaussians are matched to full-covariance ones when the registry has no
    rule for the pair as given.
    """
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    q_mvn, p_mvn = as_multivariate_normal(q), as_multivariate_normal(p)
    if q_mvn is None or p_mvn is None:
        return None
    return kl_divergence(q_mvn, p_mvn)
