"""A positive latent per row: a rate z ~ Gamma(2, 1), and 4 Poisson(z) counts."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

SHAPE, RATE, COUNTS = 2.0, 1.0, 4


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Gamma(SHAPE * x.new_ones(()), RATE))
        pyro.sample("x", dist.Poisson(z.unsqueeze(-1).expand(*z.shape, x.shape[-1])).to_event(1), obs=x)


def simulate(rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(rng.gamma(SHAPE, 1 / RATE, size=(600, 1)), size=(600, COUNTS)).astype(float)


def log_px(x: torch.Tensor) -> torch.Tensor:
    """b^a / G(a) * G(a + S) / (b + n)^(a + S) / prod x!, S the row's total."""
    x = x.double()
    total = x.sum(-1)
    return (SHAPE * math.log(RATE) - math.lgamma(SHAPE) + torch.lgamma(SHAPE + total)
            - (SHAPE + total) * math.log(RATE + x.shape[-1]) - torch.lgamma(x + 1).sum(-1))


def best_diag_gap(x: torch.Tensor) -> torch.Tensor:
    """The best log-normal's KL to the Gamma(A, B) posterior: log G(A) + A - (A - 1/2) log A - log(2 pi) / 2."""
    shape = SHAPE + x.double().sum(-1)
    return torch.lgamma(shape) + shape - (shape - 0.5) * shape.log() - 0.5 * math.log(2 * math.pi)
