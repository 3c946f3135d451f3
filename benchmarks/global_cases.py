"""The models with global latents the benchmarks run, with their exact evidence and, where known, each family's best
KL gap.

Evidences: closed form (conjugate regressions), quadrature over one scale (eight schools, the pooled regression) or
more (the mixture's two means, seconds; its three means, the varying-intercept regression, the random-effects
example: a minute or more each, so their values are kept here, and ``python benchmarks/global_cases.py``
recomputes and prints them; all in ``tests/global_latents/truth.py``). The logistic
regression has none. Family optima: closed forms on the conjugate regressions (a Gaussian posterior: the best
factorized Gaussian's KL, 0 for the full-rank, rank-2 and autoregressive families; on 10 correlated features
low rank's by BFGS); elsewhere unknown.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from tests.global_latents import truth  # noqa: E402

#: the autoguides the examples and these benchmarks compare
GUIDES = ["auto:AutoNormal", "auto:AutoMultivariateNormal", "auto:AutoLowRankMultivariateNormal",
          "auto:AutoIAFNormal"]
#: evidences by two-dimensional quadrature (tests/global_latents/truth.py), kept: each takes 1-5 minutes
VARYING_EVIDENCE = -1124.5837652930047
RANDOM_EFFECTS_EVIDENCE = -815.0597262805148
SPARSE_GROUPS_EVIDENCE = -291.37504254634257
MIRROR_THREE_EVIDENCE = -278.50414962043214


@dataclass
class Case:
    """A model program, its data, the exact log p(D) (None where unknown) and the best KL gap per family."""

    name: str
    program: object
    data: torch.Tensor
    log_evidence: float | None
    best_gaps: dict = field(default_factory=dict)


def conjugate(rows: int, seed: int) -> Case:
    data = truth.regression_data(rows, 3, seed=seed, correlation=0.9)
    features, targets = data[:, :-1].double(), data[:, -1].double()
    _, _, precision = truth.regression_posterior(features, targets, 1.0, 1.0)
    mean_field = truth.best_factorized_gaussian_kl(precision)
    return Case(f"conjugate regression, {rows} rows", truth.regression_model(1.0, 1.0), data,
                truth.regression_log_evidence(features, targets, 1.0, 1.0),
                {"auto:AutoNormal": mean_field, "auto:AutoDiagonalNormal": mean_field,
                 "auto:AutoMultivariateNormal": 0.0, "auto:AutoLowRankMultivariateNormal": 0.0,
                 "auto:AutoIAFNormal": 0.0})


def correlated_conjugate(rows: int, features: int, seed: int) -> Case:
    """A conjugate regression whose ``features`` features correlate at 0.9: low rank (Pyro's default rank, round(√d))
    cannot hold its posterior, and its best gap is known (:func:`tests.global_latents.truth.best_low_rank_kl`)."""
    data = truth.regression_data(rows, features, seed=seed, correlation=0.9)
    x, y = data[:, :-1].double(), data[:, -1].double()
    _, _, precision = truth.regression_posterior(x, y, 1.0, 1.0)
    mean_field = truth.best_factorized_gaussian_kl(precision)
    return Case(f"conjugate regression, {rows} rows, {features} correlated features",
                truth.regression_model(1.0, 1.0), data, truth.regression_log_evidence(x, y, 1.0, 1.0),
                {"auto:AutoNormal": mean_field, "auto:AutoDiagonalNormal": mean_field,
                 "auto:AutoMultivariateNormal": 0.0,
                 "auto:AutoLowRankMultivariateNormal": truth.best_low_rank_kl(precision, round(features ** 0.5)),
                 "auto:AutoIAFNormal": 0.0})


def centred_eight_schools(data):
    """Eight schools written centred, theta ~ N(mu, tau): the funnel whose neck a Gaussian reference misses (the
    evidence is the non-centred example's, :func:`tests.global_latents.truth.eight_schools_log_evidence`)."""
    y, sigma = data[:, 0], data[:, 1]
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(data.new_tensor(5.0)))
    with pyro.plate("schools", data.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def sparse_groups_data() -> torch.Tensor:
    """80 groups of 3 rows each on average (240 rows, radon-like): each group's intercept is barely informed, so the
    centred posterior is a funnel in sigma_a."""
    return truth.radon_like_data(groups=80, rows=240, seed=1)


def mirror_means(components: int):
    """The program of ``truth.mirror_means(components)``, as a user's file defines it."""
    namespace: dict = {}
    exec(truth.mirror_means(components), namespace)  # the tests' user file, run as the file would be
    return namespace["model"]


def cases(names: list[str] | None = None) -> list[Case]:
    """The cases, all or those whose short names (``conjugate100``, ``eight-schools``, ...) are given."""
    import eight_schools
    import logistic_regression
    import random_effects

    makers = {
        "conjugate100": lambda: conjugate(100, 1),
        "conjugate1000": lambda: conjugate(1000, 0),
        "conjugate10d": lambda: correlated_conjugate(1000, 10, 0),
        "eight-schools": lambda: Case("eight schools", eight_schools.model, eight_schools.eight_schools(),
                                      truth.eight_schools_log_evidence(eight_schools.eight_schools()[:, 0],
                                                                       eight_schools.eight_schools()[:, 1])),
        "centred-eight-schools": lambda: Case("eight schools, centred (a funnel)", centred_eight_schools,
                                              eight_schools.eight_schools(),
                                              truth.eight_schools_log_evidence(eight_schools.eight_schools()[:, 0],
                                                                               eight_schools.eight_schools()[:, 1])),
        "centred-varying": lambda: Case("varying intercepts written centred, 85 groups, 919 rows",
                                        truth.varying_intercept_model(centred=True),
                                        truth.radon_like_data(), VARYING_EVIDENCE),
        "sparse-groups": lambda: Case("varying intercepts written centred, 80 groups, 240 rows (a funnel)",
                                      truth.varying_intercept_model(80, centred=True), sparse_groups_data(),
                                      SPARSE_GROUPS_EVIDENCE),
        "logistic": lambda: Case("logistic regression (breast cancer)", logistic_regression.model,
                                 logistic_regression.breast_cancer(), None),
        "pooled": lambda: Case("pooled regression, 919 rows", truth.pooled_model(), truth.radon_like_data(),
                               truth.pooled_log_evidence(truth.radon_like_data())),
        "varying": lambda: Case("varying intercepts, 85 groups, 919 rows", truth.varying_intercept_model(),
                                truth.radon_like_data(), VARYING_EVIDENCE),
        "random-effects": lambda: Case("random effects (204 latents)", random_effects.model,
                                       random_effects.random_effects_data(), RANDOM_EFFECTS_EVIDENCE),
        "mirror-means": lambda: Case("two mirror modes (a mixture's means swap labels), 200 rows", mirror_means(2),
                                     truth.mirror_means_data(200),
                                     truth.mirror_means_log_evidence(truth.mirror_means_data(200))),
        "mirror-three": lambda: Case("six mirror modes (three means swap labels), 120 rows", mirror_means(3),
                                     truth.mirror_means_data(120, 3), MIRROR_THREE_EVIDENCE),
    }
    return [maker() for name, maker in makers.items() if names is None or name in names]


if __name__ == "__main__":
    import random_effects

    print("varying:", truth.varying_intercept_log_evidence(truth.radon_like_data()))
    print("random effects:", truth.random_effects_log_evidence(random_effects.random_effects_data()))
    print("sparse groups:", truth.varying_intercept_log_evidence(sparse_groups_data(), groups=80))
    print("six mirror modes:", truth.mirror_means_log_evidence(truth.mirror_means_data(120, 3), 3))
