"""Success rates of 20 groups, each with a Beta(2, 2) prior and Bernoulli rows: 20 latents, 469 rows.

The evidence is exact: a Beta-Binomial sequence probability per group. Columns: ``group, y`` with ``group`` in 0..19
and ``y`` in {0, 1}.
"""

import numpy as np
import pyro
import pyro.distributions as dist
from scipy.special import betaln

PRIOR = (2.0, 2.0)
GROUPS = 20


def model(data):
    group, y = data[:, 0].long(), data[:, 1]
    with pyro.plate("groups", GROUPS):
        rate = pyro.sample("rate", dist.Beta(data.new_tensor(PRIOR[0]), PRIOR[1]))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Bernoulli(rate[group]), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    sizes = 1 + rng.multinomial(469 - GROUPS, np.full(GROUPS, 1 / GROUPS))
    group = np.repeat(np.arange(GROUPS), sizes)
    y = rng.binomial(1, rng.beta(*PRIOR, size=GROUPS)[group])
    return np.column_stack([group, y])


def log_evidence(data: np.ndarray) -> float:
    """log p(D): per group, B(a + successes, b + failures) / B(a, b)."""
    group, y = data[:, 0].astype(int), data[:, 1]
    successes = np.bincount(group, weights=y, minlength=GROUPS)
    failures = np.bincount(group, weights=1 - y, minlength=GROUPS)
    a, b = PRIOR
    return float((betaln(a + successes, b + failures) - betaln(a, b)).sum())
