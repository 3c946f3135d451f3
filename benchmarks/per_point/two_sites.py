"""Two latent sites per row: z1 ~ N(0, I_3), z2 | z1 ~ N(A z1, 0.6^2 I_2), x ~ N(B z2 + C z1, 0.5^2 I_6), fixed A, B, C.

The built-in guides draw (z1, z2) as one 5-D vector (``Guide.sample_sites``). The posterior is Gaussian, of one
precision at every row, so full rank's family holds it and diag's best KL is a closed form.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

A = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])
B = torch.tensor([[1.0, 0.5], [0.2, -1.0], [0.7, 0.7], [-0.5, 0.3], [0.0, 0.9], [1.1, -0.2]])
C = torch.tensor([[0.3, 0.0, 0.2], [0.0, 0.4, 0.0], [0.1, 0.1, 0.1], [0.0, 0.0, 0.5], [0.2, -0.2, 0.0],
                  [0.0, 0.3, 0.0]])
SCALE, NOISE = 0.6, 0.5


def model(x):
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(z1 @ A.to(x).T, SCALE).to_event(1))
        pyro.sample("x", dist.Normal(z2 @ B.to(x).T + z1 @ C.to(x).T, NOISE).to_event(1), obs=x)


def simulate(rng: np.random.Generator) -> np.ndarray:
    z1 = rng.normal(size=(600, 3))
    z2 = z1 @ A.numpy().T + SCALE * rng.normal(size=(600, 2))
    return z2 @ B.numpy().T + z1 @ C.numpy().T + NOISE * rng.normal(size=(600, 6))


def _prior_and_loading() -> tuple[torch.Tensor, torch.Tensor]:
    """The covariance of z = (z1, z2), and M with x = M z + noise."""
    root = torch.zeros(5, 5, dtype=torch.float64)
    root[:3, :3], root[3:, :3], root[3:, 3:] = torch.eye(3), A.double(), SCALE * torch.eye(2)
    return root @ root.T, torch.cat([C.double(), B.double()], 1)


def log_px(x: torch.Tensor) -> torch.Tensor:
    """N(x; 0, M S M^T + s^2 I) per row, S the prior covariance of (z1, z2)."""
    covariance, loading = _prior_and_loading()
    marginal = loading @ covariance @ loading.T + NOISE**2 * torch.eye(6, dtype=torch.float64)
    return dist.MultivariateNormal(torch.zeros(6, dtype=torch.float64), marginal).log_prob(x.double())


def best_diag_gap(x: torch.Tensor) -> torch.Tensor:
    """1/2 (sum log P_ii - log det P), P = S^-1 + M^T M / s^2 the posterior precision, the same at every row."""
    covariance, loading = _prior_and_loading()
    precision = torch.linalg.inv(covariance) + loading.T @ loading / NOISE**2
    gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    return torch.full((len(x),), float(gap), dtype=torch.float64)
