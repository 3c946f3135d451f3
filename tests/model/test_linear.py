import pyro.distributions as dist
import torch

from elbogap.inference import log_joint


def test_log_px_is_the_gaussian_marginal(linear_model, linear_data):
    w, b, s = linear_model.weight, linear_model.bias, linear_model.sigma
    covariance = w @ w.T + s**2 * torch.eye(5, dtype=w.dtype)
    expected = dist.MultivariateNormal(b, covariance_matrix=covariance).log_prob(linear_data)
    torch.testing.assert_close(linear_model.log_px(linear_data), expected)


def test_bayes_rule_holds_at_every_z(linear_model, linear_data):
    """log p(x, z) - log p(z | x) = log p(x) for any z: the posterior and evidence agree with the joint."""
    x = linear_data[:20]
    z = torch.randn(7, 20, 2, dtype=x.dtype) * 3
    log_prior, log_lik = log_joint(linear_model, x, z)
    implied = log_prior + log_lik - linear_model.posterior(x).log_prob(z)
    torch.testing.assert_close(implied, linear_model.log_px(x).expand(7, 20))


def test_posterior_is_tilted_so_mean_field_has_a_gap(linear_model, linear_data):
    covariance = linear_model.posterior(linear_data[:1]).covariance_matrix[0]
    assert abs(float(covariance[0, 1])) > 0.1 * float(covariance.diagonal().min())
