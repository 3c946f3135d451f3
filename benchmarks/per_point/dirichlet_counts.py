"""A simplex latent per row: proportions p ~ Dirichlet(2, 1, 0.7, 1.5) over 4 categories, and 20 draws among them."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

ALPHA = (2.0, 1.0, 0.7, 1.5)
COUNT = 20


def model(x):
    with pyro.plate("data", x.shape[0]):
        p = pyro.sample("p", dist.Dirichlet(x.new_tensor(ALPHA)))
        pyro.sample("x", dist.Multinomial(COUNT, p), obs=x)


def simulate(rng: np.random.Generator) -> np.ndarray:
    p = rng.dirichlet(ALPHA, size=500)
    return np.stack([rng.multinomial(COUNT, row) for row in p]).astype(float)


def log_px(x: torch.Tensor) -> torch.Tensor:
    """The Dirichlet-multinomial: N! / prod x_k! * B(alpha + x) / B(alpha), B the multivariate Beta function."""
    x, alpha = x.double(), torch.tensor(ALPHA, dtype=torch.float64)
    return (math.lgamma(COUNT + 1) - torch.lgamma(x + 1).sum(-1) + torch.lgamma(alpha.sum())
            - math.lgamma(COUNT + sum(ALPHA)) + (torch.lgamma(x + alpha) - torch.lgamma(alpha)).sum(-1))
