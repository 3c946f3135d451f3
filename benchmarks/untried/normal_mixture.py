"""A mixture of three unit-variance Normals with Dirichlet weights, 300 rows of one column.

The weights (2 free dimensions) and the three means: 5 latents. The components are exchangeable, so the posterior has
3! = 6 mirror modes.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    weights = pyro.sample("weights", dist.Dirichlet(data.new_ones(3)))
    locs = pyro.sample("locs", dist.Normal(data.new_zeros(3), 5.0).to_event(1))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(locs, 1.0)), obs=data[:, 0])


def simulate(rng: np.random.Generator) -> np.ndarray:
    component = rng.choice(3, size=300, p=[0.3, 0.3, 0.4])
    return rng.normal(np.array([-3.0, 0.0, 3.0])[component], 1.0)[:, None]
