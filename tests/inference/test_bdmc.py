"""BDMC on the linear-Gaussian model: the sandwich holds the exact evidence and narrows with more temperatures."""

import pytest
import torch

from elbogap.inference.ais import AISSettings
from elbogap.inference.bdmc import bdmc, exact_draws, sandwich, simulate, summarize_sandwich
from elbogap.inference.weights import group_spread_dof
from tests.inference.test_ais import correlated_linear_model


def test_simulated_pairs_follow_the_model():
    model = correlated_linear_model()
    x, z = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 4000)
    assert x.shape == (4000, 12) and z.shape == (4000, 8)
    empirical = torch.cov(x.T)
    expected = model.marginal().covariance_matrix
    assert float((empirical - expected).abs().max()) < 0.15 * float(expected.abs().max())


def test_the_sandwich_holds_the_exact_evidence_and_narrows_with_more_temperatures():
    model = correlated_linear_model()
    torch.manual_seed(0)
    x, z = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 32)
    exact = model.log_px(x)
    widths = []
    for steps in (20, 80, 320):
        torch.manual_seed(steps)
        # each reverse chain from its own exact draw: independent chains, a per-point error for the upper bound
        result = bdmc(model, x, exact_draws(model, x, z, 16), AISSettings(steps=steps, chains=16, leapfrog_steps=5))
        # per point, within 4 standard errors over chains: lower <= exact <= upper
        assert bool((result.lower <= exact + 4 * result.lower_stderr + 1e-9).all())
        assert bool((result.upper >= exact - 4 * result.upper_stderr - 1e-9).all())
        assert result.dof == group_spread_dof(16)  # one point's interval: +- t_nu standard errors
        widths.append(result.width)
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[2] < 0.25


def test_sandwich_summary_and_arrays():
    model = correlated_linear_model(latent_dim=3, data_dim=5)
    summary, arrays = sandwich(model, torch.zeros(1, 5, dtype=torch.float64), 6,
                               AISSettings(steps=20, chains=4, leapfrog_steps=2, init="q"))
    assert summary["points"] == 6 and summary["settings"]["init"] == "prior"  # the sandwich anneals from the prior
    assert summary["width"] == summary["upper"] - summary["lower"] or abs(
        summary["width"] - (summary["upper"] - summary["lower"])) < 1e-9
    assert arrays["x"].shape == (6, 5) and arrays["lower"].shape == arrays["upper"].shape == (6,)
    assert summary["width_stderr"] > 0 and summary["reading"]


def test_the_sandwich_is_read_for_the_user():
    from elbogap.inference.bdmc import read_sandwich

    assert read_sandwich(-0.04, 0.05).startswith("the bounds meet within their standard errors")
    assert "up to 1.500 nats below" in read_sandwich(1.5, 0.05)
    assert "normalized density" in read_sandwich(-1.0, 0.05)


def test_reverse_chains_sharing_one_start_give_no_per_point_error_and_the_summary_reads_the_spread_over_points():
    model = correlated_linear_model(latent_dim=3, data_dim=5)
    torch.manual_seed(1)
    x, z = simulate(model, torch.zeros(1, 5, dtype=torch.float64), 8)
    result = bdmc(model, x, z, AISSettings(steps=10, chains=4, leapfrog_steps=2))
    assert bool(result.upper_stderr.isnan().all()) and bool(result.lower_stderr.isfinite().all())
    summary = summarize_sandwich(result.lower, result.lower_stderr, result.upper, result.upper_stderr)
    widths = (result.upper - result.lower).double()
    assert abs(summary["width_stderr"] - float(widths.std() / 8**0.5)) < 1e-12
    assert 0 <= summary["upper_stderr"] <= summary["width_stderr"]


def test_one_simulated_point_has_no_width_error_and_says_so():
    one = torch.tensor([-1.0], dtype=torch.float64)
    summary = summarize_sandwich(one, torch.tensor([0.1]), one + 0.5, torch.tensor([float("nan")]))
    assert summary["width"] == 0.5 and summary["width_stderr"] != summary["width_stderr"]  # NaN, never 0
    assert "--bdmc 2" in summary["note"] and "no standard error" in summary["reading"]


def test_a_sandwich_of_one_point_reports_that_points_own_errors_not_its_jackknifes():
    """One point's own ± is the group spread's; its jackknife interval covers too little under a right tail."""
    model = correlated_linear_model()
    settings = AISSettings(steps=10, chains=8, leapfrog_steps=2)
    example = torch.zeros(1, 12, dtype=torch.float64)
    torch.manual_seed(3)
    summary, _ = sandwich(model, example, 1, settings)
    torch.manual_seed(3)  # the same draws again, through the parts sandwich is made of
    x, z = simulate(model, example, 1)
    result = bdmc(model, x, exact_draws(model, x, z, settings.chains), settings)
    assert summary["lower_stderr"] == pytest.approx(float(result.lower_stderr[0]))
    assert summary["upper_stderr"] == pytest.approx(float(result.upper_stderr[0]))
    assert float(result.lower_stderr[0]) != pytest.approx(float(result.lower_jackknife[0]))
