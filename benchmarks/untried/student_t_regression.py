"""A linear regression with Student-t noise whose degrees of freedom are unknown, 200 rows, three features.

An intercept, three slopes, the noise scale and the degrees of freedom ν: 6 latents. Columns: ``x1, x2, x3, y``.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    intercept = pyro.sample("intercept", dist.Normal(data.new_tensor(0.0), 5.0))
    slopes = pyro.sample("slopes", dist.Normal(data.new_zeros(x.shape[1]), 5.0).to_event(1))
    scale = pyro.sample("scale", dist.HalfNormal(data.new_tensor(2.0)))
    nu = pyro.sample("nu", dist.Gamma(data.new_tensor(2.0), 0.1))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.StudentT(nu, intercept + x @ slopes, scale), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(200, 3))
    y = 0.5 + x @ np.array([1.0, -0.5, 0.25]) + 0.8 * rng.standard_t(3, size=200)
    return np.column_stack([x, y])
