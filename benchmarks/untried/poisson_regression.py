"""Counts from a Poisson regression with a log link: an intercept and three slopes (4 latents), 300 rows.

Columns: ``x1, x2, x3, y`` with ``y`` the count.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    intercept = pyro.sample("intercept", dist.Normal(data.new_tensor(0.0), 2.0))
    slopes = pyro.sample("slopes", dist.Normal(data.new_zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Poisson((intercept + x @ slopes).exp()), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(300, 3))
    y = rng.poisson(np.exp(0.5 + x @ np.array([0.4, -0.3, 0.2])))
    return np.column_stack([x, y])
