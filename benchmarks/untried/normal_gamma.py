"""A Normal-Gamma model per group: each of 12 groups has its own mean and precision, 41 rows in all.

precision_j ~ Gamma(2, 2), mean_j ~ Normal(0, 1 / sqrt(precision_j)), y ~ Normal(mean_j, 1 / sqrt(precision_j)):
24 latents. The evidence is exact (the conjugate Normal-Gamma update per group). Columns: ``group, y``.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
from scipy.special import gammaln

#: the Normal-Gamma prior: mean, pseudo-count of the mean, Gamma shape and rate of the precision
MEAN, KAPPA, SHAPE, RATE = 0.0, 1.0, 2.0, 2.0
GROUPS = 12


def model(data):
    group, y = data[:, 0].long(), data[:, 1]
    with pyro.plate("groups", GROUPS):
        precision = pyro.sample("precision", dist.Gamma(data.new_tensor(SHAPE), RATE))
        mean = pyro.sample("mean", dist.Normal(MEAN, (KAPPA * precision).rsqrt()))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal(mean[group], precision[group].rsqrt()), obs=y)


def simulate(rng: np.random.Generator) -> np.ndarray:
    sizes = 1 + rng.multinomial(41 - GROUPS, np.full(GROUPS, 1 / GROUPS))
    group = np.repeat(np.arange(GROUPS), sizes)
    precision = rng.gamma(SHAPE, 1 / RATE, size=GROUPS)
    mean = rng.normal(MEAN, 1 / np.sqrt(KAPPA * precision))
    y = rng.normal(mean[group], 1 / np.sqrt(precision[group]))
    return np.column_stack([group, y])


def log_evidence(data: np.ndarray) -> float:
    """log p(D), group by group: the Normal-Gamma posterior's normalizer over the prior's, times (2 pi)^(-n / 2)."""
    total = 0.0
    for j in range(GROUPS):
        y = data[data[:, 0] == j, 1]
        n = len(y)
        kappa = KAPPA + n
        shape = SHAPE + n / 2
        rate = RATE + 0.5 * ((y - y.mean()) ** 2).sum() + KAPPA * n * (y.mean() - MEAN) ** 2 / (2 * kappa)
        total += (gammaln(shape) - gammaln(SHAPE) + SHAPE * math.log(RATE) - shape * math.log(rate)
                  + 0.5 * math.log(KAPPA / kappa) - n / 2 * math.log(2 * math.pi))
    return total
