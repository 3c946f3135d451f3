"""A latent in (0, 1) per row: a probability p ~ Beta(2, 3), and 8 Bernoulli(p) draws."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

A, B = 2.0, 3.0


def model(x):
    with pyro.plate("data", x.shape[0]):
        p = pyro.sample("p", dist.Beta(A * x.new_ones(()), B))
        pyro.sample("x", dist.Bernoulli(p.unsqueeze(-1).expand(*p.shape, x.shape[-1])).to_event(1), obs=x)


def simulate(rng: np.random.Generator) -> np.ndarray:
    p = rng.beta(A, B, size=(500, 1))
    return (rng.random((500, 8)) < p).astype(float)


def log_px(x: torch.Tensor) -> torch.Tensor:
    """B(a + k, b + n - k) / B(a, b), k the row's ones."""
    x = x.double()
    ones, n = x.sum(-1), x.shape[-1]
    a, b = A + ones, B + n - ones
    return (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
            - (math.lgamma(A) + math.lgamma(B) - math.lgamma(A + B)))
