"""A hierarchical logistic regression with varying intercepts and slopes: 10 groups, 2 features, 300 rows.

Each group's intercept and two slopes are drawn (centred) around population means with one spread per coefficient:
3 means, 3 spreads and 30 group coefficients, 36 latents. Columns: ``group, x1, x2, y`` with ``group`` in 0..9 and
``y`` in {0, 1}.
"""

import numpy as np
import pyro
import pyro.distributions as dist


def model(data):
    group, x, y = data[:, 0].long(), data[:, 1:-1], data[:, -1]
    groups, coefficients = 10, x.shape[1] + 1
    means = pyro.sample("means", dist.Normal(data.new_zeros(coefficients), 2.0).to_event(1))
    spreads = pyro.sample("spreads", dist.HalfNormal(data.new_ones(coefficients)).to_event(1))
    with pyro.plate("groups", groups):
        effects = pyro.sample("effects", dist.Normal(means, spreads).to_event(1))
    logits = effects[group, 0] + (effects[group, 1:] * x).sum(-1)
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    group = np.repeat(np.arange(10), 30)
    effects = np.array([0.0, 1.0, -0.5]) + np.array([0.5, 0.5, 0.3]) * rng.normal(size=(10, 3))
    x = rng.normal(size=(300, 2))
    logits = effects[group, 0] + (effects[group, 1:] * x).sum(-1)
    y = rng.binomial(1, 1 / (1 + np.exp(-logits)))
    return np.column_stack([group, x, y])
