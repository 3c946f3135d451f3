import math

import pytest
import torch

from elbogap.inference import choose_method, evaluate, quadrature_log_px
from elbogap.model import VAE
from tests.conftest import draw_linear_data, optimal_diag_guide


def test_quadrature_matches_the_exact_linear_evidence(linear_model, linear_data):
    estimate, error = quadrature_log_px(linear_model, linear_data[:50])
    exact = linear_model.log_px(linear_data[:50])
    torch.testing.assert_close(estimate, exact, atol=1e-6, rtol=0)
    assert (error < 1e-4).all()


def test_quadrature_finds_a_narrow_posterior_far_from_the_origin(linear_model):
    """A sharp likelihood (sigma = 0.01) centres the posterior in a tiny box; the second grid resolves it."""
    sharp = type(linear_model).from_params(linear_model.weight, linear_model.bias, 0.01).to(torch.float64)
    x = torch.tensor([[2.0, 1.5, -0.2, 2.1, -0.1]], dtype=torch.float64) * 2.5
    estimate, _ = quadrature_log_px(sharp, x, num_points=64)
    torch.testing.assert_close(estimate, sharp.log_px(x), atol=1e-4, rtol=0)


def iwae_per_point(model, guide, x, num_samples):
    torch.manual_seed(num_samples)
    return evaluate(model, guide, x, iw_samples=num_samples, elbo_samples=1,
                    log_px_method="iwae").per_point


def test_importance_weighted_estimate_rises_with_k_and_stays_below_exact(linear_model):
    """A mean-field guide twice too wide (gap about 1 nat) as the proposal, on 2000 points."""
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)
    data = draw_linear_data(linear_model, 2000)
    exact = linear_model.log_px(data)
    previous = None
    for k in (1, 4, 16, 64):
        estimate = iwae_per_point(linear_model, guide, data, k)["log_px"]
        shortfall = exact - estimate
        # Below the exact value: the mean shortfall is positive beyond 3 standard errors over points.
        assert shortfall.mean() > -3 * shortfall.std() / math.sqrt(len(shortfall))
        if previous is not None:
            rise = estimate - previous
            assert rise.mean() > 3 * rise.std() / math.sqrt(len(rise))
        previous = estimate
    final = iwae_per_point(linear_model, guide, data[:200], 20000)
    gap_left = (exact[:200] - final["log_px"]).mean()
    assert 0 <= gap_left + 3 * final["log_px_stderr"].pow(2).mean().sqrt()


def test_importance_standard_error_matches_the_spread_over_repeats(linear_model, linear_data):
    """The stderr of one estimate predicts the spread of repeated estimates (a guide wider than the posterior, so the
    weights have finite variance and IWAE an error bar)."""
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)
    x = linear_data[:1]
    runs = [iwae_per_point(linear_model, guide, x, 500 + i) for i in range(60)]
    spread = torch.stack([r["log_px"] for r in runs]).std()
    predicted = torch.stack([r["log_px_stderr"] for r in runs]).mean()
    assert 0.6 < float(spread / predicted) < 1.6  # 60 repeats: the spread itself is known to ~10%


@pytest.mark.parametrize(("latent_dim", "expected"), [(2, "quadrature"), (3, "iwae")])
def test_method_is_the_most_exact_the_model_allows(latent_dim, expected, linear_model):
    assert choose_method(linear_model) == "exact"
    assert choose_method(VAE(4, latent_dim)) == expected


@pytest.mark.parametrize("name", ["exact", "quadrature", "iwae", "ais"])
def test_every_registered_method_estimates_the_linear_evidence_per_point(name, linear_model, linear_data):
    """Each method runs from the registry alone: per-point values and errors, and how many samples it used."""
    from elbogap.inference.ais import AISSettings
    from elbogap.inference.log_px import METHODS, LogPxEstimate, LogPxSettings

    x = linear_data[:6]
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)  # weights of finite variance: IWAE has an error bar
    from_q = evaluate(linear_model, guide, x, elbo_samples=1, iw_samples=500, log_px_method="iwae").per_point
    settings = LogPxSettings(quadrature_points=32, ais=AISSettings(steps=50, chains=8, leapfrog_steps=2),
                             q_samples=500)
    estimate = METHODS[name].estimate(linear_model, guide, x, torch.arange(6), settings, from_q)
    assert isinstance(estimate, LogPxEstimate) and estimate.values.shape == estimate.stderr.shape == (6,)
    assert estimate.info["samples"] == {"exact": 0, "quadrature": 2 * 32**2, "iwae": 500, "ais": 8}[name]
    assert (estimate.values - linear_model.log_px(x)).abs().max() < 0.05 + 4 * estimate.stderr.max()
