"""AIS against ground truth: the exact evidence of PPCA (8-D, correlated posterior) and 2-D quadrature."""

import math

import pytest
import torch

from elbogap.errors import UsageError
from elbogap.estimators.ais import ais_against_iwae
from elbogap.guides import build_guide
from elbogap.inference import evaluate, quadrature_log_px
from elbogap.inference.ais import (
    START_BIAS,
    AISSettings,
    AnnealingPath,
    ChainState,
    ais_log_px,
    hmc_transition,
    pilot_steps,
    sigmoid_schedule,
)
from elbogap.inference.bdmc import simulate
from elbogap.inference.gaps import KnownLogPx, gap_decomposition
from elbogap.inference.log_px import methods, plan
from elbogap.model import VAE, LinearGaussian
from elbogap.model.target import PointsTarget
from elbogap.user_model import ProgramModel
from tests.conftest import optimal_diag_guide
from tests.test_programs import GAMMA_POISSON_COUNTS, gamma_poisson, gamma_poisson_evidence

#: settings under which AIS is accurate on the 8-D model: 250 x 32 x 5 x 1.25 = 50,000 gradient evaluations a point
ACCURATE = AISSettings(steps=250, chains=32, leapfrog_steps=5)


def correlated_linear_model(latent_dim: int = 8, data_dim: int = 12) -> LinearGaussian:
    """PPCA whose posterior is strongly correlated: W's columns share one direction."""
    generator = torch.Generator().manual_seed(3)
    shared = torch.randn(data_dim, 1, generator=generator, dtype=torch.float64)
    weight = shared + 0.35 * torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    return LinearGaussian.from_params(weight, torch.zeros(data_dim, dtype=torch.float64), 0.6).to(torch.float64)


def mean_and_stderr(per_point_error: torch.Tensor, per_point_stderr: torch.Tensor) -> tuple[float, float]:
    """Mean error over points, and its standard error (within-point noise and spread over points)."""
    within = float(per_point_stderr.pow(2).sum().sqrt() / len(per_point_stderr))
    return float(per_point_error.mean()), within


def test_sigmoid_schedule_runs_from_zero_to_one_with_small_steps_at_both_ends():
    betas = sigmoid_schedule(100)
    assert betas[0] == 0 and betas[-1] == 1 and bool((betas.diff() > 0).all())
    steps = betas.diff()
    assert steps[0] < steps[50] and steps[-1] < steps[50]


def test_hmc_transition_leaves_the_posterior_invariant():
    """Exact posterior draws stay distributed as the posterior after 20 transitions at beta = 1."""
    model = correlated_linear_model()
    x = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 1)[0]
    posterior = model.posterior(x)
    z = posterior.sample((4000,))  # (chains, 1, latent)
    path = AnnealingPath(PointsTarget(model, x))
    values, grads = path.parts(z)
    state = ChainState(z, values, grads, torch.zeros(4000, 1, dtype=torch.float64))
    narrowest = float(torch.linalg.eigvalsh(posterior.covariance_matrix[0]).min().sqrt())
    for _ in range(20):
        state, accept = hmc_transition(path, state, 1.0, torch.tensor([narrowest], dtype=torch.float64), 5)
    assert 0.3 < float(accept.mean()) < 0.99
    standardized = (state.z[:, 0] - posterior.loc[0]) @ torch.linalg.inv(posterior.scale_tril[0]).T
    # each coordinate of L^-1 (z - m) is standard normal: its mean within 4 standard errors (the draws are
    # nearly independent across chains; 20 HMC moves of one draw each)
    assert float(standardized.mean(0).abs().max()) < 4 / math.sqrt(4000) * 1.5
    assert float((standardized.var(0) - 1).abs().max()) < 0.15


def test_ais_matches_the_exact_evidence_where_iwae_from_the_best_diagonal_guide_does_not():
    """8-D latent, correlated posterior: AIS within 0.05 nats/point; IWAE at equal cost visibly below."""
    model = correlated_linear_model()
    torch.manual_seed(0)
    x, _ = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 64)
    exact = model.log_px(x)
    torch.manual_seed(1)
    result = ais_log_px(model, x, ACCURATE)
    error, stderr = mean_and_stderr(result.log_px - exact, result.stderr)
    assert abs(error) < 0.05
    assert error < 3 * stderr  # a lower bound in expectation: not above the truth beyond its noise
    assert ((result.acceptance > 0.3) & (result.acceptance < 1)).all()

    equal_cost = ACCURATE.gradient_evaluations() * (ACCURATE.steps + pilot_steps(ACCURATE)) // ACCURATE.steps
    iwae = evaluate(model, optimal_diag_guide(model), x, iw_samples=equal_cost, elbo_samples=1,
                    log_px_method="iwae").per_point
    iwae_error, iwae_stderr = mean_and_stderr(iwae["log_px"] - exact, iwae["log_px_stderr"])
    # the diagonal guide's weights have infinite variance here (k-hat > 0.5), so IWAE gives no error bar
    assert iwae_error < -0.1 and (math.isnan(iwae_stderr) or iwae_error < -3 * iwae_stderr)
    assert abs(iwae_error) > 2 * abs(error)


def test_pilot_steps_take_a_quarter_of_the_run_and_at_least_five_per_band():
    assert pilot_steps(AISSettings(steps=500)) == 125
    assert pilot_steps(AISSettings(steps=50)) == 50  # 10 bands x 5
    assert pilot_steps(AISSettings(steps=4)) == 20  # as many bands as temperatures
    assert pilot_steps(AISSettings(steps=50, pilot_per_band=1)) == 12  # the rule before 2026-12-01


def test_a_short_run_tunes_its_step_sizes_toward_the_target_and_halves_the_bias_of_a_one_per_band_pilot():
    """8 chains x 50 temperatures on the 8-D model, 20 seeds: a pilot of one transition per band lags behind the
    posterior's narrowing (acceptance 0.26-0.35 in the middle bands) and leaves the split mean 1.5 nats per point
    below the exact evidence (benchmarks/pilot.py: sd 0.55 over runs); five per band, the default, 0.74 (sd 0.28)."""
    model = correlated_linear_model()
    torch.manual_seed(1)
    x, _ = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 20)
    exact = model.log_px(x).mean()
    biases, acceptance = {}, {}
    for per_band in (1, 5):  # 20 runs as one: every point has its own chains and step sizes, so a copy is a rerun
        torch.manual_seed(per_band)
        run = ais_log_px(model, x.repeat(20, 1), AISSettings(steps=50, chains=8, pilot_per_band=per_band))
        biases[per_band] = run.log_px.reshape(20, len(x)).mean(1) - exact
        acceptance[per_band] = run.acceptance
    # the mean of 20 runs is known to sd / sqrt(20), about 0.06 nats (0.12 with one per band; measured -0.59 to -0.75
    # and -1.40 to -1.66 on three seeds)
    assert float(biases[5].mean()) > -1.0
    assert float(biases[1].mean()) < float(biases[5].mean()) - 0.4
    # past the first bands (the prior's, where every move is accepted), within 0.1 of the target on average
    assert float((acceptance[5][2:] - 0.65).abs().mean()) < 0.1 < float((acceptance[1][2:] - 0.65).abs().mean())


def test_ais_agrees_with_quadrature_on_a_2d_vae():
    """A VAE whose decoder weights are scaled up (a sharp, bent posterior), data simulated from it."""
    torch.manual_seed(0)
    model = VAE(20, 2, hidden_dims=(16,)).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3)
    x, _ = simulate(model, torch.zeros(1, 20, dtype=torch.float64), 48)
    truth, discretization = quadrature_log_px(model, x, 64)
    assert float(discretization.max()) < 1e-4
    result = ais_log_px(model, x, AISSettings(steps=150, chains=32, leapfrog_steps=5))
    error, stderr = mean_and_stderr(result.log_px - truth, result.stderr)
    assert abs(error) < 4 * stderr + 0.01


def test_ais_from_the_exact_posterior_is_exact():
    """Annealing from q = p(z|x): every intermediate distribution is the posterior, every weight p(x)."""
    model = correlated_linear_model()
    x, _ = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 5)
    guide = build_guide("exact", model, 5)
    result = ais_log_px(model, x, AISSettings(steps=10, chains=4, leapfrog_steps=2, init="q"), guide=guide)
    torch.testing.assert_close(result.log_px, model.log_px(x), atol=1e-8, rtol=0)
    assert float(result.stderr.max()) < 1e-6


def test_auto_plans_ais_on_a_subset_only_where_nothing_exact_applies(linear_model):
    def steps(setting, model):
        return [(step.method.name, step.rows) for step in plan(setting, model).steps]

    assert steps("auto", linear_model) == [("exact", "all"), ("ais", "unsure")]  # the points left without an error
    assert steps("auto", VAE(4, 2)) == [("quadrature", "all"), ("ais", "unsure")]
    assert steps("auto", VAE(4, 8)) == [("iwae", "all"), ("ais", "subset")]
    assert steps("ais", VAE(4, 2)) == [("ais", "all")]
    with pytest.raises(UsageError, match="2-D latent"):
        plan("quadrature", VAE(4, 8))
    with pytest.raises(UsageError, match="choose one of"):
        plan("bogus", VAE(4, 8))
    assert methods()["ais"].guide_independent and not methods()["iwae"].guide_independent


def test_evaluate_reports_ais_on_a_subset_and_the_gap_from_it():
    model = correlated_linear_model(latent_dim=3, data_dim=6)
    model.has_exact_posterior = False  # seen as a model with no closed form, as a user's would be
    x, _ = simulate(model, torch.zeros(1, 6, dtype=torch.float64), 30)
    guide = build_guide("diag", model, 30, hidden_dims=(8,)).double()
    rows = torch.tensor([2, 5, 11, 17])
    settings = AISSettings(steps=60, chains=8, leapfrog_steps=3)
    result = evaluate(model, guide, x, elbo_samples=16, iw_samples=200, ais=settings, ais_index=rows)
    metrics, per_point = result.metrics, result.per_point
    assert metrics["log_px_method"] == "ais" and metrics["log_px_points"] == 4 and metrics["num_points"] == 30
    assert metrics["log_px_guide_independent"] and metrics["ais"]["points"] == 4
    assert not per_point["log_px_ais"][rows].isnan().any() and per_point["log_px_ais"].isnan().sum() == 26
    assert metrics["kl_gap"] == pytest.approx(metrics["log_px"] - metrics["elbo_log_px_points"])
    assert "log_px_iwae" in metrics and metrics["log_px_iwae_samples"] == 200


def test_auto_without_a_subset_runs_no_ais():
    """Curve evaluations during training ask for ``auto`` without AIS points: IWAE alone, on every row."""
    model = correlated_linear_model(latent_dim=3, data_dim=6)
    model.has_exact_posterior = False
    x, _ = simulate(model, torch.zeros(1, 6, dtype=torch.float64), 10)
    guide = build_guide("diag", model, 10, hidden_dims=(8,)).double()
    for ais_index in (None, torch.tensor([], dtype=torch.long)):
        result = evaluate(model, guide, x, elbo_samples=8, iw_samples=16, ais_index=ais_index)
        assert result.metrics["log_px_method"] == "iwae" and "ais" not in result.metrics
        assert result.metrics["log_px_points"] == 10 and "log_px_ais" not in result.per_point


def test_ais_from_q_refuses_a_guide_whose_density_has_no_inverse():
    model = VAE(10, 3)
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    settings = AISSettings(steps=4, chains=2, leapfrog_steps=1, init="q")
    with pytest.raises(UsageError, match="--ais-init q needs a guide whose density"):
        ais_log_px(model, x, settings, guide=build_guide("planar", model, 4))
    assert ais_log_px(model, x, settings, guide=build_guide("iaf", model, 4)).log_px.isfinite().all()


def test_an_ais_run_too_short_for_its_model_is_flagged_against_iwae_from_the_exact_posterior():
    """IWAE from the exact posterior is exact; AIS with 20 temperatures falls visibly below it and says so."""
    model = correlated_linear_model()
    x, _ = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 40)
    guide = build_guide("exact", model, 40).double()
    short = evaluate(model, guide, x, elbo_samples=8, iw_samples=64, log_px_method="ais",
                     ais=AISSettings(steps=20, chains=32, leapfrog_steps=1)).metrics
    assert short["iwae_above_ais"] > 3 * short["iwae_above_ais_stderr"] > 0
    assert "raise --ais-steps" in short["log_px_warning"]
    from elbogap.config import Config
    from elbogap.report import markdown

    run = {"guide": "exact", "seed": 0, "test": short, "train": short}
    report = markdown({"config": Config().to_dict(), "versions": {}, "runs": [run]})
    assert "## Warnings\n\n- exact seed 0, test: IWAE from q is" in report


def test_ais_within_its_error_of_iwae_is_not_flagged():
    per_point = {"log_px_iwae": torch.tensor([-10.0, -11.0]),
                 "log_px_iwae_jackknife_stderr": torch.tensor([0.01, 0.01]),
                 "log_px_ais": torch.tensor([-10.02, -10.99]),
                 "log_px_ais_jackknife_stderr": torch.tensor([0.02, 0.02])}
    check = ais_against_iwae(per_point, torch.tensor([True, True]))
    assert check["iwae_above_ais"] == pytest.approx(0.005, abs=1e-6)
    assert "log_px_warning" not in check
    per_point["log_px_ais"] = torch.tensor([-10.5, -11.5])
    assert "log_px_warning" in ais_against_iwae(per_point, torch.tensor([True, True]))


def reshaping_program(x):
    """PPCA with a 2 x 3 matrix latent that the program flattens with ``reshape(-1, 6)``, as user code may:
    it handles a batch of rows but not extra leading dimensions (chains, grid points)."""
    import pyro
    import pyro.distributions as dist

    weight = correlated_linear_model(latent_dim=6, data_dim=8).weight.detach().to(x.dtype)
    with pyro.plate("rows", x.shape[0]):
        z = pyro.sample("Z", dist.Normal(torch.zeros(x.shape[0], 2, 3, dtype=x.dtype), 1.0).to_event(2))
        pyro.sample("obs", dist.Normal(z.reshape(-1, 6) @ weight.T, 0.6).to_event(1), obs=x)


def test_ais_from_q_rejects_a_leapfrog_step_that_diverges_where_a_positive_latent_overflows():
    """From an unfitted per-point q on log-rates, some leapfrog steps of the pilot leave the real numbers (exp
    overflows): q's density there is scored and the step rejected, as from the prior, where it raised before."""
    torch.manual_seed(1)  # the pilot diverges on this stream (before: a ValueError from q's argument check)
    rates = torch.distributions.Gamma(2.0, 1.0).sample((100, 2))
    x = torch.poisson(rates.repeat_interleave(GAMMA_POISSON_COUNTS, -1))
    model = ProgramModel(gamma_poisson, x[:3])
    guide = build_guide("local", model, len(x))
    result = ais_log_px(model, x, AISSettings(steps=100, chains=8, leapfrog_steps=5, init="q"), guide=guide)
    error, stderr = mean_and_stderr(result.log_px - gamma_poisson_evidence(x), result.stderr)
    assert torch.isfinite(result.log_px).all() and abs(error) < 0.05 + 4 * stderr


def test_ais_runs_a_program_that_does_not_broadcast_over_chains_and_recovers_its_evidence():
    closed_form = correlated_linear_model(latent_dim=6, data_dim=8)
    x, _ = simulate(closed_form, torch.zeros(1, 8, dtype=torch.float64), 12)
    program = ProgramModel(reshaping_program, x[:3])
    assert program.latent_dim == 6 and not program.broadcasts_draws
    result = ais_log_px(program, x, ACCURATE)
    exact = closed_form.log_px(x)
    error, stderr = mean_and_stderr(result.log_px - exact, result.stderr)
    assert abs(error) < 0.05 + 4 * stderr


def test_ais_from_the_modes_of_a_gaussian_posterior_holds_its_start_bias_in_its_error():
    """A tester's linear model at 50 temperatures and 8 chains from the modes: points read up to 3e-4 nats off (mostly
    high: the start's Student-t tails, seldom drawn) at errors of 1e-5, and 43% of points lay outside their
    intervals. Each point's own error now holds the bound -log(1 - share) on that bias; a mean over points lies
    within its chains' error below, and within it plus the bound above."""
    model = correlated_linear_model(latent_dim=2, data_dim=8)
    torch.manual_seed(0)
    x, _ = simulate(model, torch.zeros(1, 8, dtype=torch.float64), 40)
    torch.manual_seed(1)
    result = ais_log_px(model, x, AISSettings(steps=50, chains=8, init="laplace"))
    error = result.log_px - model.log_px(x)
    assert (error.abs() < 2.47 * result.stderr).all()
    split_error, split_stderr = mean_and_stderr(error, result.jackknife_stderr)  # a mean's error: the chains' alone
    assert split_stderr < START_BIAS / 10 and -1.96 * split_stderr < split_error < 1.96 * split_stderr + START_BIAS
    assert (result.bias_bound == START_BIAS).all()


def test_a_split_mean_of_ais_from_the_modes_holds_the_start_bias_in_its_error():
    """The same 40 points through ``evaluate`` and the gap split: each mean's error adds the start's bias bound whole,
    and the split's log p(x) lies within 1.96 of them of the exact mean. Before, a mean's error was the chains' alone
    (2.8e-5 here) while a mean may read up to the bound (1e-3) high: a tester's split means read 4-9 errors high."""
    model = correlated_linear_model(latent_dim=2, data_dim=8)
    torch.manual_seed(0)
    x, _ = simulate(model, torch.zeros(1, 8, dtype=torch.float64), 40)
    exact = float(model.log_px(x).mean())
    torch.manual_seed(1)
    settings = AISSettings(steps=50, chains=8, init="laplace")
    evaluation = evaluate(model, optimal_diag_guide(model), x, log_px_method="ais", ais=settings, elbo_samples=64)
    metrics = evaluation.metrics
    assert metrics["log_px_stderr"] > START_BIAS and metrics["log_px_ais_stderr"] > START_BIAS
    assert abs(metrics["log_px"] - exact) < 1.96 * metrics["log_px_stderr"]
    rows = torch.arange(10)
    gaps = gap_decomposition(model, optimal_diag_guide(model), x[rows], rows, elbo_samples=64,
                             log_px=KnownLogPx.of(evaluation.per_point, "ais", rows))
    assert gaps["gap_log_px_stderr"] > START_BIAS
    assert abs(gaps["gap_log_px"] - float(model.log_px(x[rows]).mean())) < 1.96 * gaps["gap_log_px_stderr"]
    one = KnownLogPx.of(evaluation.per_point, "ais", rows[:1])  # one point: its own error holds its bound already
    own = float(evaluation.per_point["log_px_stderr"][0])
    assert one.bias_bound is None and float(one.stderr[0]) == pytest.approx(own) and own > START_BIAS
