"""A fixed factor-analysis model: z ~ N(0, I_3) per row, x ~ N(W z, 0.5^2 I_6) with a known W (no parameters)."""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

W = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8], [0.7, 0.7, 0.0], [-0.5, 0.3, 1.2], [0.0, 0.9, -0.6],
                  [1.1, -0.2, 0.4]])
NOISE = 0.5


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.to(x).T, NOISE).to_event(1), obs=x)


def simulate(rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(size=(600, 3))
    return z @ W.numpy().T + NOISE * rng.normal(size=(600, 6))


def log_px(x: torch.Tensor) -> torch.Tensor:
    """N(x; 0, W W^T + s^2 I) per row."""
    weight = W.double()
    covariance = weight @ weight.T + NOISE**2 * torch.eye(6, dtype=torch.float64)
    return dist.MultivariateNormal(torch.zeros(6, dtype=torch.float64), covariance).log_prob(x.double())


def best_diag_gap(x: torch.Tensor) -> torch.Tensor:
    """The best mean-field Gaussian's KL, the same at every row: 1/2 (sum log M_ii - log det M), M = W^T W / s^2 + I."""
    weight = W.double()
    precision = weight.T @ weight / NOISE**2 + torch.eye(3, dtype=torch.float64)
    gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    return torch.full((len(x),), float(gap), dtype=torch.float64)
