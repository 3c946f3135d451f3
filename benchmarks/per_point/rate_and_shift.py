"""Two latent sites per row, one positive and one real: rate ~ Gamma(2, 1) behind 5 Poisson counts, and shift ~
N(0, I_2) seen as y ~ N(shift, 0.5^2 I_2). The two parts are independent, so log p(x) is a negative binomial's times
a Gaussian's, and diag's best KL is the best log-normal's to the rate's Gamma posterior (the shift's posterior is a
diagonal Gaussian)."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

COUNTS, NOISE = 5, 0.5


def model(x):
    with pyro.plate("data", x.shape[0]):
        rate = pyro.sample("rate", dist.Gamma(x.new_tensor(2.0), 1.0))
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("counts", dist.Poisson(rate[:, None].expand(-1, COUNTS)).to_event(1), obs=x[:, :COUNTS])
        pyro.sample("y", dist.Normal(shift, NOISE).to_event(1), obs=x[:, COUNTS:])


def simulate(rng: np.random.Generator) -> np.ndarray:
    rate, shift = rng.gamma(2.0, size=600), rng.normal(size=(600, 2))
    return np.concatenate([rng.poisson(rate[:, None].repeat(COUNTS, 1)), shift + NOISE * rng.normal(size=(600, 2))], 1)


def log_px(x: torch.Tensor) -> torch.Tensor:
    """The counts' negative binomial (a Gamma(2, 1) rate integrated out) plus N(y; 0, (1 + 0.5^2) I) per row."""
    x = x.double()
    counts, total = x[:, :COUNTS], x[:, :COUNTS].sum(1)
    negative_binomial = (torch.lgamma(2.0 + total) - math.lgamma(2.0) - (2.0 + total) * math.log(1.0 + COUNTS)
                         - torch.lgamma(counts + 1).sum(1))
    gaussian = dist.Normal(0.0, math.sqrt(1.0 + NOISE**2)).log_prob(x[:, COUNTS:]).sum(1)
    return negative_binomial + gaussian


def best_diag_gap(x: torch.Tensor) -> torch.Tensor:
    """log Γ(A) + A - (A - 1/2) log A - log(2π)/2 at A = 2 + the row's counts: the best log-normal's KL to its
    Gamma(A, 6) posterior."""
    shape = 2.0 + x[:, :COUNTS].double().sum(1)
    return torch.lgamma(shape) + shape - (shape - 0.5) * shape.log() - 0.5 * math.log(2 * math.pi)
