"""Twenty group means around a common mean, known scales: mu ~ N(0, 10²), theta_j ~ N(mu, 2²), y_j ~ N(theta_j, 1).
21 latents, a Gaussian posterior; the best factorized Gaussian's KL is 0.111 nats (whatever the data: it depends
on the posterior precision alone).

The evidence is exact: y ~ N(0, 100 11ᵀ + 5 I). Column: ``y``, one row per group.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist

GROUPS = 20


def model(data):
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 10.0))
    with pyro.plate("groups", data.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, 2.0))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=data[:, 0])


def simulate(rng: np.random.Generator) -> np.ndarray:
    theta = rng.normal(3.0, 2.0, GROUPS)
    return rng.normal(theta, 1.0)[:, None]


def log_evidence(data: np.ndarray) -> float:
    y = data[:, 0]
    cov = 100.0 * np.ones((len(y), len(y))) + 5.0 * np.eye(len(y))
    _, log_det = np.linalg.slogdet(cov)
    return float(-0.5 * (y @ np.linalg.solve(cov, y) + log_det + len(y) * math.log(2 * math.pi)))
