"""A full-rank Gaussian's start from the mean-field fit: the covariance of q's expected curvature (checked on a
conjugate regression, whose posterior it is exactly, and on a posterior whose curvature at the mean field misleads)."""

import pyro
import pyro.distributions as dist
import torch

from elbogap.global_latents import curvature
from elbogap.global_latents.model import GlobalLatentModel
from tests.global_latents import truth
from tests.inference.test_convergence import conjugate_study


def test_on_a_gaussian_posterior_the_start_is_the_posterior_and_gains_the_best_mean_field_kl():
    """At the closed-form mean-field optimum (the posterior mean, variances 1 / Λ_ii) the start's covariance is the
    posterior's (central differences of a quadratic's gradient are exact up to rounding), and what it gains over the
    mean field on common draws is the closed-form best mean-field KL, within 4 of its standard errors."""
    data, mean, cov, precision = conjugate_study()
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    loc, scale = mean.float(), precision.diagonal().rsqrt().float()
    start = curvature.curvature_start(model, data, loc, scale, torch.Generator().manual_seed(0))
    assert start is not None
    factor = start["scale_tril"].double()
    assert torch.allclose(factor @ factor.T, cov, rtol=2e-3, atol=1e-6)
    assert truth.gaussian_kl(mean, factor @ factor.T, mean, cov) < 1e-3
    best = truth.best_factorized_gaussian_kl(precision)
    assert best > 0.5  # correlated features: a gain worth having
    assert abs(start["elbo_gain"] - best) < 4 * start["elbo_gain_stderr"] + 1e-3, (start, best)


def two_modes(data):
    """z_1's posterior has modes near ±1 (x ~ N(z_1², 0.3²) at x = 1) and a valley at 0; z_2 is its prior's."""
    z = pyro.sample("z", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("x", dist.Normal(z[..., 0] ** 2, 0.3), obs=data[:, 0])


def test_a_start_whose_curvature_misleads_is_declined():
    """Between the two modes the log joint curves up (a negative precision, floored to 100 times the mean field's
    variance): that covariance lowers the ELBO, so the mean field's stays; so does a model of one latent."""
    data = torch.ones(1, 1)
    model = GlobalLatentModel(two_modes, data, "two_modes")
    precision = curvature.expected_precision(model, data, torch.zeros(2), torch.tensor([0.3, 1.0]),
                                             torch.Generator().manual_seed(0))
    assert precision[0, 0] < 0 < precision[1, 1]
    assert curvature.curvature_start(model, data, torch.zeros(2), torch.tensor([0.3, 1.0]),
                                     torch.Generator().manual_seed(0)) is None
    assert curvature.curvature_start(model, data, torch.zeros(1), torch.ones(1), torch.Generator()) is None
