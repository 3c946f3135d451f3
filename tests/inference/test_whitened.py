"""Paths in whitened coordinates: at the exact posterior as reference every weight is p(D); the two views of a
diagonal factor agree; moments match."""

import math

import pytest
import torch

from elbogap.inference.whitened import FULL_RANK_LIMIT, WhitenedPath, moment_match
from tests.inference.test_smc import exact_posterior, log_parts


def test_from_the_exact_posterior_one_jump_weighs_every_draw_at_the_evidence():
    """With r the posterior itself, log p(z, D) - log r(z) = log p(D) for every z: the path's two parts at beta = 1
    minus beta = 0 give it exactly."""
    mean, covariance, log_evidence = exact_posterior()
    path = WhitenedPath(log_parts, mean, torch.linalg.cholesky(covariance))
    torch.manual_seed(0)
    u = path.start(64)
    values, gradients = path.parts(u)
    log_w = values[1] - values[0]  # log f_1 - log f_0 at the draws of f_0 = r
    assert torch.allclose(log_w, torch.full_like(log_w, log_evidence), atol=1e-9)
    assert torch.allclose(gradients[1], gradients[0], atol=1e-9)  # f_1 is f_0 times a constant
    z = path.to_z(u[:, 0])
    exact = torch.distributions.MultivariateNormal(mean, covariance).log_prob(z)
    assert torch.allclose(path.log_density(z), exact, atol=1e-9)
    assert torch.allclose(path.to_u(path.to_z(u)), u)


def test_a_vector_of_scales_is_a_diagonal_factor():
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scales = torch.tensor([0.1, 3.0, 1.0], dtype=torch.float64)
    vector, matrix = (WhitenedPath(log_parts_3, mean, factor) for factor in (scales, torch.diag(scales)))
    u = torch.randn(5, 1, 3, dtype=torch.float64)
    assert torch.allclose(vector.to_z(u), matrix.to_z(u)) and torch.allclose(vector.to_u(vector.to_z(u)), u)
    z = vector.to_z(u)[:, 0]
    assert torch.allclose(vector.log_density(z), matrix.log_density(z))
    assert torch.allclose(vector.log_density(z), torch.distributions.Normal(mean, scales).log_prob(z).sum(-1))


def log_parts_3(z):
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1), torch.zeros(z.shape[:-1], dtype=z.dtype)


def test_moment_matching_recovers_a_gaussian_and_turns_diagonal_beyond_the_limit():
    """20000 draws: mean within 4 standard errors, Cholesky factor within 2%; (d/n) shrinkage toward the diagonal
    leaves a well-sampled covariance nearly as it is."""
    mean, covariance, _ = exact_posterior()
    factor = torch.linalg.cholesky(covariance)
    torch.manual_seed(0)
    z = mean + torch.randn(20000, 2, dtype=torch.float64) @ factor.T
    fitted_mean, fitted_factor = moment_match(z)
    sd = covariance.diagonal().sqrt()
    assert ((fitted_mean - mean).abs() < 4 * sd / math.sqrt(20000)).all()
    assert fitted_factor == pytest.approx(factor, rel=0.02, abs=0.02 * float(sd.min()))
    wide = torch.randn(50, FULL_RANK_LIMIT + 1, dtype=torch.float64)
    _, scales = moment_match(wide)
    assert scales.shape == (FULL_RANK_LIMIT + 1,) and torch.allclose(scales, wide.std(0, unbiased=False), rtol=1e-6)
