"""A sparse linear regression under a horseshoe prior: 8 features, 200 rows, two of the true slopes non-zero.

A HalfCauchy global scale, one HalfCauchy local scale per feature, the 8 slopes and the noise scale: 18 latents.
Columns: ``x1, ..., x8, y``.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    features = x.shape[1]
    global_scale = pyro.sample("global_scale", dist.HalfCauchy(data.new_tensor(1.0)))
    local_scales = pyro.sample("local_scales", dist.HalfCauchy(data.new_ones(features)).to_event(1))
    slopes = pyro.sample("slopes", dist.Normal(data.new_zeros(features), global_scale * local_scales).to_event(1))
    noise = pyro.sample("noise", dist.HalfNormal(data.new_tensor(2.0)))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal(x @ slopes, noise), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(200, 8))
    slopes = np.array([2.0, -1.5, 0, 0, 0, 0, 0, 0])
    y = x @ slopes + rng.normal(size=200)
    return np.column_stack([x, y])
