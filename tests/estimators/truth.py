"""Exact log p(x) per point of per-point models no closed form covers, by brute-force numerics, for the tests of the
estimators and ``benchmarks/quadrature.py``."""

import math

import pyro
import pyro.distributions as dist
import torch


def squared_location(x):
    """A location seen through its square: each row's posterior has two modes, at 0.3 +- sqrt(x), narrow where x is
    large (sd about 0.045 / sqrt(x) on 5 columns)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
        pyro.sample("x", dist.Normal(((z - 0.3) ** 2).unsqueeze(-1).expand(x.shape), 0.2).to_event(1), obs=x)


def squared_location_evidence(x: torch.Tensor) -> torch.Tensor:
    """log p(x) per row by the midpoint rule on 200,000 points of [-9, 9] (cells of 9e-5, far below any mode's sd)."""
    z = torch.linspace(-9, 9, 200_000, dtype=torch.float64)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).expand(len(x), -1).clone()
    for column in x.double().T:  # (rows, points), one column's likelihood at a time
        log_p += torch.distributions.Normal((z - 0.3) ** 2, 0.2).log_prob(column[:, None])
    return torch.logsumexp(log_p, -1) + math.log(z[1] - z[0])


#: the Dirichlet concentrations of :func:`float32_proportions`
PROPORTIONS_ALPHA = torch.tensor([0.2, 0.3, 0.5])


def float32_proportions(x):
    """20 Multinomial draws a row from Dirichlet(0.2, 0.3, 0.5) proportions cast with ``.float()``: a program that
    computes in float32, so quadrature's grid does not settle on many rows (exact:
    :func:`dirichlet_multinomial_evidence`)."""
    with pyro.plate("data", x.shape[0]):
        weights = pyro.sample("weights", dist.Dirichlet(PROPORTIONS_ALPHA))
        pyro.sample("x", dist.Multinomial(20, weights.float()), obs=x)


def flat_proportions_guide(x):
    """A guide for :func:`float32_proportions`: flat Dirichlet proportions, no parameters."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("weights", dist.Dirichlet(torch.ones(x.shape[0], 3)))


def proportions_rows(rows: int) -> torch.Tensor:
    """``rows`` rows of :func:`float32_proportions`'s counts, from torch's seed 1."""
    torch.manual_seed(1)
    draws = torch.distributions.Dirichlet(PROPORTIONS_ALPHA).sample((rows,))
    return torch.stack([torch.multinomial(w, 20, replacement=True).bincount(minlength=3) for w in draws]).float()


def dirichlet_multinomial_evidence(x: torch.Tensor, alpha: torch.Tensor, count: int) -> torch.Tensor:
    r"""log p(x) per row of ``count`` Multinomial draws under Dirichlet(``alpha``) proportions:
    :math:`\log [N! / \prod_k x_k!] + \log \Gamma(A) - \log \Gamma(N + A) + \sum_k \log \Gamma(x_k + a_k)
    - \log \Gamma(a_k)`, :math:`A = \sum_k a_k`."""
    a = alpha.to(x)
    return (math.lgamma(count + 1) - torch.lgamma(x + 1).sum(-1) + torch.lgamma(a.sum())
            - torch.lgamma(count + a.sum()) + (torch.lgamma(x + a) - torch.lgamma(a)).sum(-1))
