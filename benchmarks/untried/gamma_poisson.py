"""A Poisson rate with a Gamma(2, 1) prior: 1 positive latent, 50 counts.

The evidence is exact (the Gamma-Poisson marginal). Column: ``x``, the counts.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
from scipy.special import gammaln

PRIOR = (2.0, 1.0)  # shape, rate


def model(data):
    rate = pyro.sample("rate", dist.Gamma(data.new_tensor(PRIOR[0]), PRIOR[1]))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", dist.Poisson(rate), obs=data[:, 0])


def simulate(rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(3.2, 50)[:, None]


def log_evidence(data: np.ndarray) -> float:
    """log p(D) = a log b - log Γ(a) + log Γ(a + S) - (a + S) log(b + n) - Σ log x_i!, S = Σ x_i."""
    x = data[:, 0]
    a, b = PRIOR
    total = x.sum()
    return float(a * math.log(b) - gammaln(a) + gammaln(a + total) - (a + total) * math.log(b + len(x))
                 - gammaln(x + 1).sum())
