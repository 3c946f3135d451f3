"""Importance-weight estimates: error bars checked against repeats, k-hat at the extremes, float64 moments."""

import math

import pytest
import torch

from elbogap.inference.evaluation import _Moments
from elbogap.inference.weights import (
    group_spread_dof,
    interval_halfwidth,
    jackknife_stderr,
    khat_threshold,
    log_mean_exp,
    log_mean_exp_stderr,
    pareto_khat,
)


def delta_method_stderr(log_w):
    count = log_w.shape[0]
    ratio = (torch.logsumexp(2 * log_w, 0) - 2 * torch.logsumexp(log_w, 0) + math.log(count)).exp()
    return ((ratio - 1).clamp_min(0) / count).sqrt()


@pytest.mark.parametrize(("sigma", "chains"), [(0.5, 64), (3.0, 8), (3.0, 1000)])
def test_the_stderr_of_a_split_mean_matches_the_spread_over_repeats(sigma, chains):
    """log w ~ N(0, sigma^2) on 20 points: the reported error of the mean over points against 300 repeats."""
    torch.manual_seed(0)
    repeats, points = 300, 20
    log_w = torch.randn(repeats, chains, points, dtype=torch.float64) * sigma
    estimates = torch.stack([log_mean_exp(w).mean() for w in log_w])
    reported = torch.stack([log_mean_exp_stderr(w).pow(2).sum().sqrt() / points for w in log_w])
    ratio = float(estimates.std() / reported.mean())
    # 300 repeats know the spread to about 4%; the aim of issue 18 is 0.8-1.25
    assert 0.85 < ratio < 1.15
    if sigma == 3.0:  # the delta method, as elbogap reported before, is far off there
        delta = torch.stack([delta_method_stderr(w).pow(2).sum().sqrt() / points for w in log_w])
        assert float(estimates.std() / delta.mean()) > 1.4


def test_light_tailed_points_are_not_carried_at_the_rate_of_heavy_tailed_ones():
    """10 points with log w ~ N(0, 0.3^2) evaluated beside 10 with N(0, 3^2): pooled over the light ones only, their
    errors match the spread over repeats; pooled over all, the heavy points' slow rate inflates them."""
    torch.manual_seed(0)
    repeats, chains = 300, 1000
    scale = torch.cat([torch.full((10,), 0.3), torch.full((10,), 3.0)]).double()
    log_w = torch.randn(repeats, chains, 20, dtype=torch.float64) * scale
    light = scale < 1
    spread = torch.stack([log_mean_exp(w)[light] for w in log_w]).std(0)
    pooled_light = torch.stack([log_mean_exp_stderr(w, pool=light)[light] for w in log_w]).pow(2).mean(0).sqrt()
    pooled_all = torch.stack([log_mean_exp_stderr(w)[light] for w in log_w]).pow(2).mean(0).sqrt()
    assert 0.85 < float((spread / pooled_light).mean()) < 1.15
    assert float((spread / pooled_all).mean()) < 0.8


@pytest.mark.parametrize("chains", [8, 16])
def test_a_mean_over_points_with_stuck_chains_takes_the_jackknifes_error(chains):
    """AIS chains that got stuck: log w ~ N(0, 0.5^2), and 10 nats lower for one chain in five.

    They barely move the estimate, but groups of a few chains that are all stuck inflate the spread
    of group log-means (3-4x the spread over repeats, measured); the jackknife's error, which a mean
    over points combines, is right.
    """
    torch.manual_seed(0)
    repeats, points = 300, 20
    stuck = torch.rand(repeats, chains, points) < 0.2
    log_w = 0.5 * torch.randn(repeats, chains, points, dtype=torch.float64) - 10.0 * stuck
    estimates = torch.stack([log_mean_exp(w).mean() for w in log_w])
    jackknife = torch.stack([jackknife_stderr(w).pow(2).sum().sqrt() / points for w in log_w])
    grouped = torch.stack([log_mean_exp_stderr(w).pow(2).sum().sqrt() / points for w in log_w])
    assert 0.85 < float(estimates.std() / jackknife.mean()) < 1.15
    assert float(estimates.std() / grouped.mean()) < 0.5


def left_tailed_log_w(*shape):
    """log w = N(0, 0.3^2) - Exp(1): a left tail, as of AIS chains that fell behind."""
    return 0.3 * torch.randn(*shape, dtype=torch.float64) - torch.empty(*shape, dtype=torch.float64).exponential_()


def test_one_points_error_under_a_left_tail_is_not_carried_with_the_small_groups_curvature(monkeypatch):
    """8 left-tailed weights per point, 20 points evaluated together. Carried at 1/k, the groups of one and two keep
    their 1/k^2 term and one point's error comes out 30% too large (ratio 0.77, measured); with the term fitted and
    taken out, it matches the spread over 300 repeats (1.00) and its t interval covers 93%."""

    def errors():
        torch.manual_seed(0)
        log_w = left_tailed_log_w(300, 8, 20)
        estimates = torch.stack([log_mean_exp(w) for w in log_w])
        stderrs = torch.stack([log_mean_exp_stderr(w) for w in log_w])
        return estimates, stderrs, float((estimates.std(0) / stderrs.mean(0)).mean())

    estimates, stderrs, ratio = errors()
    # 300 repeats know each point's spread to about 4%, the mean over 20 points to about 1%
    assert 0.9 < ratio < 1.1
    torch.manual_seed(1)
    misses = (estimates - float(log_mean_exp(left_tailed_log_w(8, 200000)).mean())).abs()
    # 92.7-93.7% over eight seeds: the t at nu = 5.8 assumes chi-square noise, and this tail leaves a little less
    assert 0.915 < float((misses <= interval_halfwidth(stderrs, group_spread_dof(8))).double().mean()) < 0.965
    monkeypatch.setattr("elbogap.inference.weights.CURVATURE_COLUMNS", 10**9)  # carried at 1/k, as before
    assert errors()[2] < 0.85


def uncorrected(monkeypatch, log_w):
    """The error carried at 1/k, without the curvature factor."""
    with monkeypatch.context() as patch:
        patch.setattr("elbogap.inference.weights.CURVATURE_COLUMNS", 10**9)
        return log_mean_exp_stderr(log_w)


def test_the_curvature_is_fitted_only_on_four_points_or_more_that_have_every_level_and_on_three_levels(monkeypatch):
    """On one or two points the fit fires where a heavy right tail's slope reads -1 by chance (coverage 2% lower,
    BENCHMARKS); NaN points do not count; with two levels a line through them fits anything."""
    torch.manual_seed(0)
    three = left_tailed_log_w(16, 3)
    assert torch.equal(log_mean_exp_stderr(three), uncorrected(monkeypatch, three))
    mostly_nan = torch.cat([three, torch.full((16, 17), math.nan, dtype=torch.float64)], 1)
    assert torch.equal(log_mean_exp_stderr(mostly_nan)[:3], uncorrected(monkeypatch, three))
    two_levels = left_tailed_log_w(6, 20)
    assert torch.equal(log_mean_exp_stderr(two_levels), uncorrected(monkeypatch, two_levels))


def test_light_tailed_points_beside_left_tailed_ones_keep_their_error(monkeypatch):
    """16 points of log w ~ N(0, 0.3^2) evaluated with 4 of 0.6 N(0, 1) - 2 Exp(1). Fitted on every point, the
    curvature of the 4 large-variance ones would shrink the light points' errors (ratio 1.00 to 1.13, measured);
    with those left out of the fit, 1.03."""

    def light_ratio():
        torch.manual_seed(0)
        log_w = torch.cat([0.3 * torch.randn(300, 16, 16, dtype=torch.float64), 2 * left_tailed_log_w(300, 16, 4)], 2)
        spread = torch.stack([log_mean_exp(w)[:16] for w in log_w]).std(0)
        return float((spread / torch.stack([log_mean_exp_stderr(w)[:16] for w in log_w]).mean(0)).mean())

    # 300 repeats know the mean over 16 points' ratios to about 1.5%
    assert 0.95 < light_ratio() < 1.08
    monkeypatch.setattr("elbogap.inference.weights.OUTLYING_SCALE", math.inf)
    assert light_ratio() > 1.1


def quadratic_form_dof(num):
    """tr(A)^2 / tr(A^2) of the group spread's quadratic form, written out as a K x K matrix."""
    sizes = sorted({num // 2**j for j in (1, 2, 3) if num // 2**j >= 1}, reverse=True)
    dofs = [num // size - 1 for size in sizes]
    form = torch.zeros(num, num, dtype=torch.float64)
    for size, dof in zip(sizes, dofs, strict=True):
        means = torch.zeros(num // size, num, dtype=torch.float64)
        for group in range(num // size):
            means[group, group * size:(group + 1) * size] = 1.0 / size
        centred = means - means.mean(0)
        form += dof / sum(dofs) * (size / num) * centred.T @ centred / dof
    return float(torch.trace(form) ** 2 / torch.trace(form @ form))


@pytest.mark.parametrize("num", [2, 3, 5, 8, 12, 16, 20, 33])
def test_the_group_spreads_degrees_of_freedom_are_its_quadratic_forms(num):
    assert group_spread_dof(num) == pytest.approx(quadratic_form_dof(num), rel=1e-9)


def test_the_group_spreads_degrees_of_freedom_match_the_spread_of_its_variance():
    """nu = 2 E[V]^2 / Var V over 20000 columns of light-tailed weights, where the formula is exact."""
    torch.manual_seed(0)
    log_w = 0.01 * torch.randn(16, 20000, dtype=torch.float64)
    variance = log_mean_exp_stderr(log_w).pow(2)
    measured = float(2 * variance.mean() ** 2 / variance.var())
    # Var V is known to about 3% from 20000 columns (its kurtosis is modest at nu ~ 6)
    assert measured == pytest.approx(group_spread_dof(16), rel=0.1)
    assert group_spread_dof(16) == pytest.approx(5.76, abs=0.01) and group_spread_dof(1) == math.inf


@pytest.mark.parametrize(("sigma", "chains"), [(0.1, 16), (0.5, 8), (1.0, 1000)])
def test_one_points_95_percent_interval_covers_95_percent_where_1_96_standard_errors_do_not(sigma, chains):
    """4000 points of log w ~ N(0, sigma^2): their intervals at t_nu cover the long-run mean 95% of the time,
    +- 1.96 standard errors about 90% (the error has ~6 degrees of freedom)."""
    torch.manual_seed(0)
    log_w = sigma * torch.randn(chains, 4000, dtype=torch.float64)
    estimates, stderrs = log_mean_exp(log_w), log_mean_exp_stderr(log_w)
    # the long-run mean from up to 5e6 more weights: known to 1.4% of one estimate's sd or better, which moves a 95%
    # coverage by under 0.01%
    columns = min(200000, 5_000_000 // chains)
    exact_mean = float(log_mean_exp(sigma * torch.randn(chains, columns, dtype=torch.float64)).mean())
    misses = (estimates - exact_mean).abs()
    # 4000 points know a 95% coverage to +-0.7% (two binomial sds)
    assert 0.94 < float((misses <= interval_halfwidth(stderrs, group_spread_dof(chains))).double().mean()) < 0.965
    assert float((misses <= 1.96 * stderrs).double().mean()) < 0.925
    assert interval_halfwidth(1.0, None) == pytest.approx(1.96, abs=0.001)


@pytest.mark.parametrize("chains", [16, 64, 256])
def test_one_columns_error_alone_matches_its_spread_with_the_degrees_of_freedom_it_claims(chains):
    """One column at a time (one data set's evidence, one point, one BDMC data set), log w ~ N(0, 0.5^2): the error's
    root mean square matches the spread of 600 estimates, and its variance spreads as nu = 5.8 says. With the power
    fitted on the column itself, as before, sd / rms was 0.75-0.79 and nu 1.2-1.3."""
    torch.manual_seed(0)
    log_w = 0.5 * torch.randn(chains, 600, dtype=torch.float64)
    estimates = log_mean_exp(log_w)
    stderrs = torch.stack([log_mean_exp_stderr(log_w[:, i:i + 1])[0] for i in range(600)])
    kept = stderrs.isfinite()  # a light tail is declined as infinite (k-hat above 0.5) in well under 1% of columns
    assert float(kept.double().mean()) > 0.99
    # 600 repeats know the sd to about 3%, and nu to about 15%
    assert float(estimates.std() / stderrs[kept].pow(2).mean().sqrt()) == pytest.approx(1.0, abs=0.1)
    variance = stderrs[kept].pow(2)
    assert float(2 * variance.mean() ** 2 / variance.var()) > 0.7 * group_spread_dof(chains)


def test_one_column_with_an_infinite_variance_has_no_standard_error():
    """Pareto weights of shape 0.8 (k-hat above 0.5, so their variance is infinite): no error bar is honest, so none
    is given; where the tail fit sees them lighter by chance, one is."""
    torch.manual_seed(0)
    log_w = -0.8 * torch.rand(256, 200, dtype=torch.float64).log()
    stderrs = torch.stack([log_mean_exp_stderr(log_w[:, i:i + 1])[0] for i in range(200)])
    assert float(stderrs.isnan().double().mean()) > 0.6
    assert bool(log_mean_exp_stderr(log_w[:64, :1]).isfinite().all())  # too few weights to tell the tail: kept


def test_the_jackknife_leaves_out_a_dominant_weight_without_cancelling():
    """Two weights: the jackknife's error is half their log-distance, even 1600 nats apart."""
    log_w = torch.tensor([[0.0, 800.0], [1.0, -800.0]], dtype=torch.float64)
    torch.testing.assert_close(jackknife_stderr(log_w), torch.tensor([0.5, 800.0], dtype=torch.float64))


def test_one_weight_has_no_standard_error_and_equal_weights_have_zero():
    assert bool(log_mean_exp_stderr(torch.randn(1, 5)).isnan().all())
    assert float(log_mean_exp_stderr(torch.full((64, 3), -2.0)).abs().max()) == 0.0


def test_khat_is_infinite_not_nan_for_weights_spread_over_hundreds_of_nats():
    torch.manual_seed(0)
    khat = pareto_khat(torch.randn(1000, 50, dtype=torch.float64) * 500)
    assert bool((khat == math.inf).any()) and not bool(khat.isnan().any())
    assert bool((khat > khat_threshold(1000)).all())
    assert float(pareto_khat(torch.zeros(1000, 2)).abs().max()) == 0.0  # a perfect proposal: no tail


def test_khat_threshold_follows_the_sample_size_as_loo_does():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(10**6) == 0.7


def test_moments_keep_the_spread_of_large_values_in_chunks():
    """Values near -2000 that differ by 0.1: float32 E[v^2] - mean^2 returned 0 for most points."""
    torch.manual_seed(0)
    values = (-2000 + 0.1 * torch.randn(256, 40, dtype=torch.float64)).float()
    moments = _Moments()
    for chunk in values.split(64):
        moments.add(chunk)
    expected = values.double().std(0) / 16
    torch.testing.assert_close(moments.stderr(), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(moments.mean(), values.double().mean(0), rtol=1e-12, atol=0)
