"""The Gaussian reference's SVI fit against a Gaussian posterior: the full-rank fit finds it, the diagonal one finds
the best factorized Gaussian (both closed forms)."""

import torch

from elbogap.inference.gaussian_fit import fit_gaussian
from tests.global_latents.truth import best_factorized_gaussian_kl, gaussian_kl
from tests.inference.test_smc import exact_posterior, log_parts


def rough_start() -> tuple[torch.Tensor, torch.Tensor]:
    """Where the evidence starts the fit, near the posterior (SMC's particle moments): here half an sd off, 1.5 times
    too wide, and without the posterior's correlation."""
    mean, covariance, _ = exact_posterior()
    sd = covariance.diagonal().sqrt()
    return mean + 0.5 * sd, 1.5 * sd


def test_a_full_rank_fit_reaches_the_gaussian_posterior():
    """KL(fit || posterior) below 0.005 nats (measured 0.0002-0.0012 over seeds 0-4 at the default 2000 steps of 16
    draws); the fit's ELBO (the mean of its last tenth of 16-draw estimates) within 0.05 of log p(D) (measured within
    0.02)."""
    mean, covariance, log_evidence = exact_posterior()
    start, sd = rough_start()
    torch.manual_seed(0)
    fit = fit_gaussian(log_parts, start, torch.diag(sd))
    assert gaussian_kl(fit.mean, fit.scale_tril @ fit.scale_tril.T, mean, covariance) < 0.005
    assert abs(fit.elbo - log_evidence) < 0.05


def test_a_diagonal_fit_reaches_the_best_factorized_gaussian():
    """A vector of scales fits a mean-field Gaussian: its KL to the posterior exceeds the factorized optimum's
    0.5 (sum log Lambda_ii - log det Lambda) by less than 0.005 (measured 0.0001-0.0016 over seeds 0-4)."""
    mean, covariance, _ = exact_posterior()
    start, sd = rough_start()
    torch.manual_seed(0)
    fit = fit_gaussian(log_parts, start, sd)
    assert fit.scale_tril.shape == (2,)
    excess = gaussian_kl(fit.mean, torch.diag(fit.scale_tril**2), mean, covariance) - best_factorized_gaussian_kl(
        torch.linalg.inv(covariance))
    assert -1e-6 < excess < 0.005
