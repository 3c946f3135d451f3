"""Gaussian-process classification on 30 inputs: a latent function under a squared-exponential kernel (length scale
1, variance 1, jitter 1e-4) and a Bernoulli likelihood on its logit; the function's 30 values are the latents.

Columns: ``x, y`` with ``y`` in {0, 1}.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch


def model(data):
    x, y = data[:, 0], data[:, 1]
    kernel = torch.exp(-0.5 * (x[:, None] - x[None, :]) ** 2) + 1e-4 * torch.eye(len(x), dtype=data.dtype)
    f = pyro.sample("f", dist.MultivariateNormal(data.new_zeros(len(x)), covariance_matrix=kernel))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=f), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    x = np.sort(rng.uniform(-3, 3, size=30))
    y = rng.binomial(1, 1 / (1 + np.exp(-2 * np.sin(1.5 * x))))
    return np.column_stack([x, y])
