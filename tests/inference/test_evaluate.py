"""The identity log p(x) = ELBO + KL(q || p(z|x)), checked against the linear model's exact posterior."""

import math

import pytest
import torch
from torch import nn

from elbogap.guides import build_guide
from elbogap.inference import evaluate
from tests.conftest import diag_gap_closed_form, optimal_diag_guide

GAUSSIAN = ["diag", "full", "lowrank", "local"]


def guide_for(name, model, num_data=200):
    return build_guide(name, model, num_data, hidden_dims=(16,)).to(torch.float64)


@pytest.mark.parametrize("name", GAUSSIAN)
def test_direct_kl_to_the_posterior_equals_log_px_minus_elbo(name, linear_model, linear_data):
    """kl_exact is a closed form; log_px - elbo comes from the exact evidence and a sampled ELBO."""
    guide = guide_for(name, linear_model)
    metrics = evaluate(linear_model, guide, linear_data, elbo_samples=500).metrics
    assert metrics["kl_exact_method"] == "analytic" and metrics["log_px_method"] == "exact"
    assert metrics["kl_exact"] > 0.1  # an untrained guide: a real gap to recover
    assert metrics["kl_gap"] == pytest.approx(metrics["kl_exact"], abs=4 * metrics["kl_gap_stderr"])


@pytest.mark.parametrize("name", ["mixture", "iaf", "planar", "sylvester", "spline"])
def test_identity_holds_for_non_gaussian_families(name, linear_model, linear_data):
    """With a Monte-Carlo KL on the same draws the identity holds draw by draw, up to rounding."""
    guide = guide_for(name, linear_model)
    metrics = evaluate(linear_model, guide, linear_data, elbo_samples=64).metrics
    assert metrics["kl_exact_method"] == "mc"
    assert metrics["kl_gap"] == pytest.approx(metrics["kl_exact"], abs=1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_guide_has_no_gap_and_its_error_holds_the_rounding(dtype, linear_model, linear_data):
    """The exact posterior's ELBO has no Monte-Carlo error, so what is left of its KL gap is float rounding, which a
    mean over points keeps: the stated errors hold it (a tester's float32 gap read -2.4e-6 ± 5e-9, a KL below 0 at
    hundreds of its errors), and are no larger than rounding (1e-4 nats)."""
    model, x = linear_model.to(dtype), linear_data.to(dtype)
    metrics = evaluate(model, guide_for("exact", model), x).metrics
    assert metrics["kl_exact"] == pytest.approx(0.0, abs=1e-6)
    assert abs(metrics["kl_gap"]) <= 2 * metrics["kl_gap_stderr"] < 1e-4
    assert abs(metrics["elbo"] - float(model.log_px(x).double().mean())) <= 3 * metrics["elbo_stderr"] < 1e-4


def test_the_elbo_of_q_at_the_posterior_has_no_noise_and_near_it_its_error_is_honest(linear_model, linear_data):
    """With the KL to the prior in closed form the ELBO's noise was the reconstruction term's, however close q was
    to the posterior: a tester's q* read ± 0.017 where the flows, scored by log w, read ± 0.002. With the KL's
    draws as a control variate, q at the posterior has log w = log p(x) on every draw and no noise at all; a q
    near it (the best diagonal Gaussian) has a small error that holds against the spread over 40 repeats."""
    exact = evaluate(linear_model, guide_for("exact", linear_model), linear_data, elbo_samples=64).per_point
    torch.testing.assert_close(exact["elbo"], linear_model.log_px(linear_data), rtol=0, atol=1e-9)
    assert float(exact["elbo_stderr"].max()) < 1e-9
    guide = optimal_diag_guide(linear_model)
    closed_form = []
    for seed in range(40):
        torch.manual_seed(seed)
        metrics = evaluate(linear_model, guide, linear_data, elbo_samples=64).metrics
        closed_form.append(metrics["elbo"])
    spread = torch.tensor(closed_form, dtype=torch.float64).std()
    stated = metrics["elbo_stderr"]
    assert 0.7 < float(spread) / stated < 1.4  # 40 repeats: the sd's own error is about 11%
    assert abs(sum(closed_form) / 40 - (linear_model.log_px(linear_data).double().mean() - diag_gap_closed_form(
        linear_model))) < 4 * stated / math.sqrt(40) + 1e-4  # unbiased: the ELBO of the best diagonal Gaussian


def test_optimal_diag_gap_is_the_closed_form(linear_model, linear_data):
    expected = diag_gap_closed_form(linear_model)
    metrics = evaluate(linear_model, optimal_diag_guide(linear_model), linear_data, elbo_samples=1000).metrics
    assert metrics["kl_exact"] == pytest.approx(expected, abs=1e-9)
    assert metrics["kl_gap"] == pytest.approx(expected, abs=4 * metrics["kl_gap_stderr"])


def test_closed_form_diag_gap_is_a_minimum(linear_model, linear_data):
    """Perturbing the optimal mean-field guide only widens the gap."""
    guide = optimal_diag_guide(linear_model)
    best = evaluate(linear_model, guide, linear_data).metrics["kl_exact"]
    for parameter in (guide.loc.bias, guide.scale.bias):
        with torch.no_grad():
            parameter.add_(0.05)
        assert evaluate(linear_model, guide, linear_data).metrics["kl_exact"] > best
        with torch.no_grad():
            parameter.sub_(0.05)


def test_metrics_are_consistent(linear_model, linear_data):
    metrics = evaluate(linear_model, guide_for("diag", linear_model), linear_data).metrics
    # the ELBO's draws carry the closed-form KL's control variate: equal to recon - kl_prior in expectation
    assert abs(metrics["elbo"] - (metrics["recon"] - metrics["kl_prior"])) < 4 * metrics["elbo_stderr"] + 1e-6
    assert metrics["kl_gap"] == pytest.approx(metrics["log_px"] - metrics["elbo"])
    assert metrics["num_points"] == len(linear_data)


def test_evaluation_memory_is_chunked_over_points(linear_model, linear_data, monkeypatch):
    """Splitting the work into many chunks gives the same numbers as one chunk."""
    import elbogap.inference.evaluation as module

    guide = guide_for("full", linear_model)
    torch.manual_seed(0)
    whole = evaluate(linear_model, guide, linear_data).per_point["kl_exact"]
    monkeypatch.setattr(module, "ELEMENT_BUDGET", 256 * 5 * 7)
    torch.manual_seed(0)
    chunked = evaluate(linear_model, guide, linear_data).per_point["kl_exact"]
    torch.testing.assert_close(chunked, whole)


def test_guide_without_encoder_layers_is_linear(linear_model):
    guide = build_guide("diag", linear_model, 1, hidden_dims=())
    assert not any(isinstance(layer, nn.Linear) for layer in guide.encoder)


def test_batched_pareto_fit_gives_pyros_k_hat_for_every_point():
    from pyro.ops.stats import fit_generalized_pareto

    from elbogap.inference.weights import generalized_pareto_khat

    torch.manual_seed(0)
    exceedances = torch.distributions.Pareto(1.0, torch.linspace(0.8, 5.0, 20)).sample((90,)) - 1.0
    one_at_a_time = torch.tensor([fit_generalized_pareto(exceedances[:, i])[0] for i in range(20)])
    assert torch.allclose(generalized_pareto_khat(exceedances), one_at_a_time.double(), atol=1e-6)


def test_a_guide_program_whose_model_does_not_broadcast_over_draws_is_evaluated_with_draws_as_rows():
    """The exact posterior of a PPCA whose program reshapes its 2 x 3 latent: every importance weight is p(x)."""
    import pyro
    import pyro.distributions as dist
    from torch.distributions.transforms import ReshapeTransform

    from elbogap.guides.program import ProgramGuide
    from elbogap.inference.bdmc import simulate
    from elbogap.user_model import ProgramModel
    from tests.inference.test_ais import correlated_linear_model, reshaping_program

    closed_form = correlated_linear_model(latent_dim=6, data_dim=8)
    posterior_of = closed_form.posterior
    calls = []

    def exact_guide(x):
        calls.append(len(x))
        posterior = posterior_of(x)
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("Z", dist.TransformedDistribution(
                dist.MultivariateNormal(posterior.loc.detach(), scale_tril=posterior.scale_tril.detach()),
                ReshapeTransform((6,), (2, 3))))

    x, _ = simulate(closed_form, torch.zeros(1, 8, dtype=torch.float64), 10)
    model = ProgramModel(reshaping_program, x[:3])
    guide = ProgramGuide(exact_guide, model, x[:3], "exact.py:guide")
    calls.clear()
    metrics = evaluate(model, guide, x, elbo_samples=32, iw_samples=32, log_px_method="iwae").metrics
    exact = float(closed_form.log_px(x).mean())
    assert metrics["log_px_iwae"] == pytest.approx(exact, abs=1e-6)
    assert metrics["elbo"] == pytest.approx(exact, abs=1e-6)
    assert 320 in calls and len(calls) < 32  # 32 draws of 10 points as one batch of rows, not one call per draw


def test_a_guide_far_too_narrow_gets_a_khat_note_beside_iwae(linear_model, linear_data):
    """Weights with no finite variance: k-hat above 0.5 on most points, so IWAE reports no standard error and says
    why."""
    torch.manual_seed(0)
    guide = optimal_diag_guide(linear_model, scale_factor=0.2)
    metrics = evaluate(linear_model, guide, linear_data[:20], elbo_samples=8, iw_samples=1000,
                       log_px_method="iwae").metrics
    assert metrics["khat_samples"] == 1000 and metrics["khat_threshold"] == pytest.approx(2 / 3)
    assert metrics["khat_bad_share"] > 0.5
    assert "has no standard error" in metrics["log_px_iwae_note"] and "use AIS" in metrics["log_px_iwae_note"]
    assert " of 20 points" in metrics["log_px_iwae_note"]  # counts: a share of 1 in 240 read "0% of points"
    exact = evaluate(linear_model, guide, linear_data[:20], elbo_samples=256, iw_samples=1000).metrics
    assert exact["log_px_method"] == "exact"  # the gap's log p(x) is not IWAE's: no call for AIS (a tester's)
    assert "here are exact's, not IWAE's" in exact["log_px_iwae_note"] and "use AIS" not in exact["log_px_iwae_note"]
    assert math.isnan(metrics["log_px_iwae_stderr"]) and math.isnan(metrics["log_px_stderr"])
    assert math.isnan(metrics["kl_gap_stderr"]) and math.isfinite(metrics["elbo_stderr"])
    wide = evaluate(linear_model, guide_for("exact", linear_model), linear_data[:20], elbo_samples=8,
                    iw_samples=1000, log_px_method="iwae").metrics
    assert wide["khat_bad_share"] == 0 and "log_px_iwae_note" not in wide
    assert math.isfinite(wide["log_px_iwae_stderr"])


def test_iwae_has_no_standard_error_where_most_points_weights_have_infinite_variance(linear_model, linear_data):
    """A guide too narrow on every point: no IWAE error bar on the split or on any point, nor on log p(x) from IWAE."""
    torch.manual_seed(0)
    narrow = optimal_diag_guide(linear_model, scale_factor=0.2)
    evaluation = evaluate(linear_model, narrow, linear_data[:20], elbo_samples=8, iw_samples=1000,
                          log_px_method="iwae")
    assert float((evaluation.per_point["khat"] > 0.5).double().mean()) > 0.5
    assert bool(evaluation.per_point["log_px_iwae_stderr"].isnan().all())
    assert bool(evaluation.per_point["log_px_stderr"].isnan().all())


def test_each_points_interval_widens_its_error_by_students_t_for_its_degrees_of_freedom(linear_model, linear_data):
    """One point's AIS and IWAE errors have ~6 degrees of freedom (2.47 s.e. for 95% at 8 chains and 64 draws); the
    ELBO's, from 64 draws, 63; a key without a per-point error is refused by name."""
    from elbogap.inference.ais import AISSettings

    x = linear_data[:4]
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)  # weights of finite variance: IWAE has an error bar
    evaluation = evaluate(linear_model, guide, x, elbo_samples=64, iw_samples=64,
                          log_px_method="ais", ais=AISSettings(steps=10, chains=8))
    assert evaluation.dof["log_px_ais"] == evaluation.dof["log_px"] == pytest.approx(5.76, abs=0.01)
    assert evaluation.dof["log_px_iwae"] == pytest.approx(5.76, abs=0.01) and evaluation.dof["elbo"] == 63
    for key, quantile in (("log_px_ais", 2.4716), ("log_px_iwae", 2.4716), ("elbo", 1.9983)):
        low, high = evaluation.interval(key)
        stderr = evaluation.per_point[f"{key}_stderr"].double()
        assert torch.allclose((high - low) / 2, quantile * stderr, rtol=1e-4)
        assert torch.allclose((high + low) / 2, evaluation.per_point[key].double())
    with pytest.raises(KeyError, match="kl_gap"):
        evaluation.interval("kl_gap")


def test_a_mean_over_one_point_takes_that_points_own_error(linear_model, linear_data):
    """AIS on one row: the split's error is the point's own (the group spread's), not its jackknife, which a mean over
    many points combines."""
    from elbogap.inference.ais import AISSettings

    guide = optimal_diag_guide(linear_model, scale_factor=2.0)
    for rows in (1, 3):
        torch.manual_seed(0)
        evaluation = evaluate(linear_model, guide, linear_data[:rows], elbo_samples=16, iw_samples=16,
                              log_px_method="ais", ais=AISSettings(steps=10, chains=8))
        per_point, metrics = evaluation.per_point, evaluation.metrics
        source = per_point["log_px_ais_stderr"] if rows == 1 else per_point["log_px_ais_jackknife_stderr"]
        expected = float(source.double().pow(2).sum().sqrt() / rows)
        assert metrics["log_px_ais_stderr"] == pytest.approx(expected) == metrics["log_px_stderr"]
    assert float(per_point["log_px_ais_stderr"][0]) != pytest.approx(float(per_point["log_px_ais_jackknife_stderr"][0]))


def test_an_interval_covers_the_estimators_mean_and_a_known_bias_widens_its_upper_end(linear_model, linear_data):
    """AIS and IWAE are biased low: their interval covers their own mean; a bias given (a BDMC width) raises its
    upper end by that much, the lower end unchanged."""
    evaluation = evaluate(linear_model, optimal_diag_guide(linear_model), linear_data[:4], iw_samples=200,
                          log_px_method="iwae")
    low, high = evaluation.interval("elbo")
    wide_low, wide_high = evaluation.interval("elbo", bias=0.3)
    assert bool(low.isfinite().all()) and torch.equal(low, wide_low) and torch.allclose(wide_high, high + 0.3)
    assert torch.equal(evaluation.interval("elbo", bias=-1.0)[1], high)  # a bias is not negative
