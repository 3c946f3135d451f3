"""The tests of a calibration study: ranks, SBC's uniformity, VSBC's symmetry, and their false-alarm rate."""

from functools import partial

import numpy as np
import pytest

from elbogap.calibration.stats import below_shares, interval_coverage, sbc_pvalue, site_summary, vsbc_pvalue


def test_the_share_below_counts_ties_as_half():
    draws = np.arange(10.0).reshape(10, 1)
    assert below_shares(draws, np.array([4.5])).tolist() == [0.5]
    assert below_shares(draws, np.array([4.0])).tolist() == [0.45]


def test_uniform_ranks_pass_and_ranks_at_the_ends_or_off_centre_fail():
    rng = np.random.default_rng(0)
    uniform = rng.uniform(size=100)
    narrow = np.concatenate([rng.uniform(0, 0.1, 40), rng.uniform(0.9, 1, 40), rng.uniform(size=20)])  # q too narrow
    biased = rng.beta(2, 5, size=100)  # q centred above the truth
    assert sbc_pvalue(uniform) > 0.01 and vsbc_pvalue(uniform) > 0.01
    assert sbc_pvalue(narrow) < 1e-6 and vsbc_pvalue(narrow) > 0.01  # symmetric, so VSBC cannot see it
    assert sbc_pvalue(biased) < 1e-6 and vsbc_pvalue(biased) == pytest.approx(1 / 4001)  # no flip as extreme


@pytest.mark.parametrize("test", [sbc_pvalue, partial(vsbc_pvalue, flips=1000)], ids=["sbc", "vsbc"])
def test_a_calibrated_q_is_rejected_at_about_the_level(test):
    """Under uniform ranks (of 1000 draws, as the study's) the 5% test rejects 5% of 400 studies of 100 simulations,
    within 3 binomial standard errors (scipy's two-sample test of u against 1 - u rejected 11%)."""
    rng = np.random.default_rng(1)
    rejected = np.mean([test(np.floor(rng.uniform(size=100) * 1000) / 1000 + 0.0005) < 0.05 for _ in range(400)])
    assert abs(rejected - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 400)


def test_a_site_fails_where_one_element_fails_after_bonferroni():
    rng = np.random.default_rng(2)
    shares = np.column_stack([rng.uniform(size=100), rng.uniform(size=100), rng.beta(2, 5, size=100)])
    summary = site_summary(shares)
    assert summary["elements"] == 3 and summary["threshold"] == pytest.approx(0.05 / 3)
    assert not summary["sbc_calibrated"] and not summary["vsbc_symmetric"]
    assert site_summary(shares[:, :2])["sbc_calibrated"]


def test_the_coverage_of_the_central_interval_and_its_error_from_the_simulations_spread():
    shares = np.array([[0.01, 0.5], [0.5, 0.99]])  # each simulation has one of two inside: no spread between them
    assert interval_coverage(shares) == pytest.approx((0.5, 0.15))  # the binomial's floor: 90% over four pairs
    together = np.array([[0.5, 0.5], [0.01, 0.99], [0.5, 0.5], [0.01, 0.99]])  # both in or both out
    assert interval_coverage(together) == pytest.approx((0.5, np.std([1, 0, 1, 0], ddof=1) / 2))


def test_ranks_piled_at_the_ends_fail_even_with_few_simulations():
    """Twelve simulations give two chi-square bins, which cannot see a U; the share near the ends can."""
    shares = np.array([0.01, 0.02, 0.97, 0.99, 0.03, 0.95, 0.5, 0.04, 0.98, 0.02, 0.96, 0.93])
    assert sbc_pvalue(shares) < 0.01


def test_the_coverages_standard_error_matches_its_spread_over_repeated_studies():
    """A study's elements share a simulation (here correlated 0.7 through a common draw), so the binomial error
    over every pair would be too small; the error from the simulations' spread is right: over 400 studies of 50
    simulations x 3 elements, the spread of the coverage is the root-mean-square reported error within 15%."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    estimates, errors = [], []
    for _ in range(400):
        common, own = rng.normal(size=(50, 1)), rng.normal(size=(50, 3))
        shares = norm.cdf(np.sqrt(0.7) * common + np.sqrt(0.3) * own)  # uniform margins, correlated in a row
        share, stderr = interval_coverage(shares)
        estimates.append(share)
        errors.append(stderr)
    ratio = np.std(estimates, ddof=1) / np.sqrt(np.mean(np.square(errors)))
    assert 0.85 < ratio < 1.15
    assert abs(np.mean(estimates) - 0.9) < 3 * np.std(estimates, ddof=1) / np.sqrt(400)
