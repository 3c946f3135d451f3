"""Reference posteriors: NUTS and the weighted AIS states against the closed-form posterior of a conjugate model."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import norm

from elbogap.global_latents.evaluation import moments as reference_moments
from elbogap.global_latents.evidence import (
    FAR_HINT,
    Evidence,
    EvidenceSettings,
    ais_evidence,
    gaussian_reference,
    with_reference_draws,
)
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.reference import (
    REFERENCE_DRAWS_KHAT,
    against_reference,
    ais_reference,
    mass_outside_q,
    nuts_reference,
)
from elbogap.inference.ais import AISSettings
from tests.global_latents import truth


def conjugate():
    data = truth.regression_data(10, 2, seed=4)
    mean, cov, _ = truth.regression_posterior(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    return GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression"), data, mean, cov.diag().sqrt()


def test_nuts_reference_moments_agree_with_the_closed_form_posterior():
    model, data, mean, sd = conjugate()
    reference = nuts_reference(model, data, chains=2, warmup=150, samples=300, seed=0)
    moments = reference.moments()["w"]
    ess = reference.diagnostics["ess_min"]["w"]
    assert reference.diagnostics["rhat_max"]["w"] < 1.05 and ess > 100
    assert ((moments["mean"] - mean).abs() < 4 * sd / ess**0.5).all()
    assert ((moments["sd"] / sd - 1).abs() < 0.2).all()
    assert reference.diagnostics["warnings"] == [] or all("effective" in w for w in reference.diagnostics["warnings"])


def test_weighted_ais_states_are_a_reference_too():
    model, data, mean, sd = conjugate()
    evidence = ais_evidence(model, data, AISSettings(steps=200, chains=512))
    reference = ais_reference(model, evidence.log_w, evidence.states)
    moments = reference.moments()["w"]
    effective = reference.diagnostics["effective_chains"]
    assert effective > 100
    assert ((moments["mean"] - mean).abs() < 4 * sd / effective**0.5).all()
    assert ((moments["sd"] / sd - 1).abs() < 0.2).all()


def reference_draws_of(model, data, far: float = 0.0) -> Evidence:
    """An estimate from the fitted Gaussian reference of ``model`` (its AIS run left out: 256 chains of equal
    weight at the prior's draws stand for its states), with that reference's weighted draws; where SMC's particles
    sat ``far`` outside it beyond the share that stops them, the reference is not fitted (no draws are made)."""
    pyro.set_rng_seed(0)
    path = gaussian_reference(model, data, EvidenceSettings()) if far <= FAR_HINT else None
    chains = torch.zeros(256, dtype=torch.float64)
    evidence = Evidence(0.0, 0.0, chains, model.prior_draws(256, data), torch.zeros(1), torch.zeros(1), 0.0,
                        stages={"fit": {"smc_far": far}}, reference=(model, path))
    return with_reference_draws(model, data, evidence)


def test_draws_of_the_fitted_reference_show_the_mean_fields_narrow_sd_the_chains_states_hide():
    """A correlated conjugate regression: the mean field's sd is 1/sqrt(Λ_ii), below the posterior's sqrt(Σ_ii). Read
    against 256 chains' states (an sd error of about 1/sqrt(2 x 256) = 4.4%) a ratio of 0.9 could read as 1; the
    reference's 2048 weighted draws, worth over 1500 at a Gaussian posterior, read the sds to about 1.8% and the
    mean-field ratio to within 4 of their errors."""
    data = truth.regression_data(30, 3, seed=2, correlation=0.8)
    mean, cov, precision = truth.regression_posterior(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    evidence = reference_draws_of(model, data)
    reference = ais_reference(model, evidence.log_w, evidence.states, draws=evidence.draws)
    diagnostics, moments = reference.diagnostics, reference.moments()["w"]
    assert diagnostics["source"] == "reference_draws" and diagnostics["draws"] == 2048
    assert diagnostics["effective_draws"] > 1500 and diagnostics["effective_chains"] == pytest.approx(256)
    effective, sd = diagnostics["effective_draws"], cov.diag().sqrt()
    assert ((moments["mean"] - mean).abs() < 4 * sd / effective**0.5).all()
    assert ((moments["sd"] / sd - 1).abs() < 4 / (2 * effective) ** 0.5).all()
    mean_field = {"w": {"mean": mean, "sd": precision.diag().rsqrt()}}  # the best diagonal Gaussian's moments
    exact_ratio = precision.diag().rsqrt() / sd
    assert exact_ratio.max() < 0.8  # the correlation the test is about
    read = torch.tensor(against_reference(mean_field, reference.moments())["w"]["sd_ratio"], dtype=torch.float64)
    assert ((read / exact_ratio - 1).abs() < 4 / (2 * effective) ** 0.5).all()


def test_the_chains_states_stay_the_reference_where_the_draws_tail_is_heavy_or_modes_were_seen():
    """Draws of N(0, 0.75²) weighted toward N(0, 1) have weights with k = 0.44: a finite variance, over 1000 of Kish's
    effective draws, and an sd read no better than 256 chains' states (benchmarks/reference_draws.py: 5.9% at k-hat
    0.43). Weights with a Pareto tail of k 0.8 have no variance at all. In both the chains' states stay, and the
    record says so, as where a draw's weight is NaN; where SMC's particles sat far outside the fitted reference
    (modes it did not settle in), no draws are made at all."""
    data = truth.regression_data(30, 3, seed=2, correlation=0.8)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    z = model.prior_draws(2048, data).double()
    narrow = 0.75 * torch.randn(2048, dtype=torch.float64)
    heavier = 0.5 * narrow.pow(2) * (0.75**-2 - 1)
    heavy = 0.8 * torch.distributions.Exponential(1.0).sample((2048,)).double()  # a Pareto tail of shape 0.8
    undefined = torch.zeros(2048, dtype=torch.float64).index_fill(0, torch.tensor([7]), math.nan)
    states = model.prior_draws(256, data)
    for log_w in (heavier, heavy, undefined):
        reference = ais_reference(model, torch.zeros(256, dtype=torch.float64), states, draws=(z, log_w))
        diagnostics = reference.diagnostics
        assert diagnostics["source"] == "chains" and torch.equal(reference.values["w"], states.detach())
        assert diagnostics["draws_khat"] is None or diagnostics["draws_khat"] > REFERENCE_DRAWS_KHAT + 0.05
        json.dumps(diagnostics, allow_nan=False)  # as results.json is written
    assert ais_reference(model, torch.zeros(256, dtype=torch.float64), states, draws=(z, heavier)).diagnostics[
        "draws_effective"] > 1000  # Kish's count alone would have taken them
    assert reference_draws_of(model, data, far=2 * FAR_HINT).draws is None


def test_a_guide_with_the_posterior_moments_scores_zero_error_and_unit_ratio():
    exact = {"w": {"mean": torch.tensor([0.5, -1.0]), "sd": torch.tensor([0.2, 0.4])}}
    wide = {"w": {"mean": torch.tensor([0.7, -1.0]), "sd": torch.tensor([0.4, 0.4])}}
    same = against_reference(exact, exact)["w"]
    assert same["mean_error_max_abs"] == 0 and same["sd_ratio_min"] == same["sd_ratio_max"] == 1
    off = against_reference(wide, exact)["w"]
    assert off["mean_error"] == [pytest.approx(1.0), 0.0] and off["sd_ratio"] == [2.0, 1.0]


def test_a_reference_on_few_effective_draws_says_it_is_rough():
    """Fewer than 100 effective draws: the reference is marked unreliable, with a warning saying what to do."""
    model, data, *_ = conjugate()
    log_w = torch.tensor([0.0] * 20 + [-50.0] * 236, dtype=torch.float64)
    reference = ais_reference(model, log_w, model.prior_draws(256, data))
    assert reference.diagnostics["effective_draws"] == pytest.approx(20.0)
    assert not reference.diagnostics["reliable"]
    assert "20 effective draws" in reference.diagnostics["warnings"][0]
    steady = ais_reference(model, torch.zeros(256, dtype=torch.float64), model.prior_draws(256, data))
    assert steady.diagnostics["reliable"] and steady.diagnostics["warnings"] == []


def test_a_positive_site_is_compared_where_q_is_fitted_on_its_log():
    """s ~ LogNormal(0, 1), y_i ~ N(log s, 1): log s | y is N(sum y / (n + 1), 1 / (n + 1)) exactly, s a heavy right
    tail (kurtosis 7.3). The weighted AIS states mapped by ``unconstrained`` (log s) have that mean and sd within 4 of
    their errors at the effective draws (sd: relative 1 / sqrt(2 n_eff), as for Gaussian draws)."""
    y = torch.tensor([[0.3], [1.1], [0.4], [0.9]])

    def program(data):
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with pyro.plate("rows", len(data)):
            pyro.sample("y", dist.Normal(s.log(), 1.0), obs=data[:, 0])

    model = GlobalLatentModel(program, y, "lognormal")
    evidence = ais_evidence(model, y, AISSettings(steps=200, chains=512))
    reference = ais_reference(model, evidence.log_w, evidence.states)
    effective = reference.diagnostics["effective_draws"]
    logged = model.unconstrained(reference.values)
    assert torch.allclose(logged["s"], reference.values["s"].log())
    mean, sd = float(y.sum() / 5), 5 ** -0.5
    moments = reference_moments(logged, reference.weights)["s"]
    assert abs(float(moments["mean"]) - mean) < 4 * sd / effective ** 0.5
    assert abs(float(moments["sd"]) / sd - 1) < 4 / (2 * effective) ** 0.5


def test_the_reference_mass_outside_q_is_half_where_q_sits_in_one_of_two_modes():
    """Against q = N(4, 1): two equal modes at -4 and 4 put half their mass beyond 4 of q's sds (the far mode), while a
    Gaussian posterior 2.3 times wider than q puts P(|Z| > 4 / 2.3) = 8.2% there; weighted draws count by weight."""
    generator = torch.Generator().manual_seed(0)
    count = 200_000
    q = {"theta": {"mean": torch.tensor([4.0], dtype=torch.float64), "sd": torch.tensor([1.0], dtype=torch.float64)}}
    signs = torch.randint(0, 2, (count, 1), generator=generator).double() * 2 - 1
    bimodal = 4.0 * signs + torch.randn(count, 1, generator=generator, dtype=torch.float64)
    share = mass_outside_q(q, {"theta": bimodal}, None)["theta"]
    assert abs(share - 0.5) < 4 * (0.25 / count) ** 0.5
    wide = 4.0 + 2.3 * torch.randn(count, 1, generator=generator, dtype=torch.float64)
    expected = 2 * norm.sf(4 / 2.3)
    assert abs(mass_outside_q(q, {"theta": wide}, None)["theta"] - expected) < 4 * (expected / count) ** 0.5
    weights = (signs[:, 0] > 0).double() / float((signs > 0).sum())  # the near mode alone, by weight
    assert mass_outside_q(q, {"theta": bimodal}, weights)["theta"] < 1e-3
