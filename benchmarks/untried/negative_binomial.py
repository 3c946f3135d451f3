"""Overdispersed counts from a negative-binomial regression (Gamma-Poisson, mean and concentration), 300 rows.

An intercept, three slopes and the concentration: 5 latents. Columns: ``x1, x2, x3, y`` with ``y`` the count.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    intercept = pyro.sample("intercept", dist.Normal(data.new_tensor(0.0), 2.0))
    slopes = pyro.sample("slopes", dist.Normal(data.new_zeros(x.shape[1]), 1.0).to_event(1))
    concentration = pyro.sample("concentration", dist.Gamma(data.new_tensor(2.0), 0.5))
    mean = (intercept + x @ slopes).exp()
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.GammaPoisson(concentration, concentration / mean), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(300, 3))
    mean = np.exp(1.0 + x @ np.array([0.5, -0.3, 0.2]))
    y = rng.poisson(rng.gamma(3.0, mean / 3.0))
    return np.column_stack([x, y])
