"""Category probabilities with a flat Dirichlet prior over 4 categories: a simplex latent (3 free numbers), 100 rows.

The evidence is exact (the Dirichlet-multinomial sequence probability). Column: ``x``, the category in 0..3.
"""

import numpy as np
import pyro
import pyro.distributions as dist
from scipy.special import gammaln

CATEGORIES = 4


def model(data):
    p = pyro.sample("p", dist.Dirichlet(data.new_ones(CATEGORIES)))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", dist.Categorical(p), obs=data[:, 0].long())


def simulate(rng: np.random.Generator) -> np.ndarray:
    return rng.choice(CATEGORIES, 100, p=[0.1, 0.2, 0.3, 0.4])[:, None]


def log_evidence(data: np.ndarray) -> float:
    counts = np.bincount(data[:, 0].astype(int), minlength=CATEGORIES)
    alpha = np.ones(CATEGORIES)
    return float(gammaln(alpha.sum()) - gammaln(alpha.sum() + counts.sum()) + (gammaln(alpha + counts)
                                                                                  - gammaln(alpha)).sum())
