"""A robust linear regression: each row's noise precision is scaled by its own Gamma(2, 2) draw (a Student-t with 4
degrees of freedom written as a scale mixture), 150 rows, two features.

An intercept, two slopes, the noise scale and 150 precisions: 154 latents. Columns: ``x1, x2, y``.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    intercept = pyro.sample("intercept", dist.Normal(data.new_tensor(0.0), 5.0))
    slopes = pyro.sample("slopes", dist.Normal(data.new_zeros(x.shape[1]), 5.0).to_event(1))
    noise = pyro.sample("noise", dist.HalfNormal(data.new_tensor(2.0)))
    with pyro.plate("data", data.shape[0]):
        precision = pyro.sample("precision", dist.Gamma(data.new_tensor(2.0), 2.0))
        pyro.sample("y", dist.Normal(intercept + x @ slopes, noise / precision.sqrt()), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(150, 2))
    y = 1.0 + x @ np.array([2.0, -1.0]) + 0.5 * rng.standard_t(4, size=150)
    return np.column_stack([x, y])
