"""Whether a fit converged: the trend rule of fixed runs and the plateau schedule that trains until converged."""

import copy
import math

import pyro
import pytest
import torch
from scipy import stats

from elbogap import streams
from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.config import Config
from elbogap.data import Dataset
from elbogap.factory import build, load_dataset, make_trainer
from elbogap.global_latents.guides import GlobalAutoGuide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference import evaluate
from elbogap.inference.convergence import (
    ConvergenceSettings,
    ConvergeSchedule,
    fixed_verdict,
    paired_gain,
    trend,
    window_steps,
)
from tests.global_latents import truth

RULE = ConvergenceSettings(tolerance=0.01)


def test_the_trend_of_a_straight_line_is_its_gain_over_the_window():
    gain, stderr, dof = trend([0.002 * step for step in range(1000)], blocks=10)
    assert gain == pytest.approx(0.002 * 1000, rel=1e-6) and stderr == pytest.approx(0.0, abs=1e-9) and dof == 8


def test_a_flat_fit_is_converged_a_rising_one_is_not_and_one_too_noisy_to_tell_is_not_judged():
    """Converged where the gain is shown below the tolerance (gain + t s.e. <= tolerance), unconverged where it is
    shown above it, and neither (None, with the reason) where the interval holds the tolerance: a tester's fit read
    0.085 ± 0.046 against 0.01 and was called converged."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2000, generator=generator)
    t = float(stats.t.ppf(0.975, RULE.blocks - 2))  # the line through 10 block means: 8 degrees of freedom
    quiet = fixed_verdict((0.001 * noise).tolist(), RULE)
    assert quiet["converged"] is True and quiet["gain"] + t * quiet["gain_stderr"] <= RULE.tolerance
    flat = fixed_verdict(noise.tolist(), RULE)
    assert flat["converged"] is None and abs(flat["gain"]) < 4 * flat["gain_stderr"]
    assert flat["gain"] - t * flat["gain_stderr"] < RULE.tolerance < flat["gain"] + t * flat["gain_stderr"]
    assert "cannot tell" in flat["reason"]
    rising = fixed_verdict([value - 0.01 * step for step, value in enumerate(noise.tolist())], RULE)  # ELBO rises
    assert rising["converged"] is False and "still rising" in rising["reason"]


def test_the_trend_rule_raises_few_false_alarms_on_fits_that_stopped_rising():
    """Over 200 noise sequences with no trend, the rule calls about 2.5% unconverged (a one-sided t test at 97.5%)."""
    generator = torch.Generator().manual_seed(1)
    alarms = sum(fixed_verdict(torch.randn(1000, generator=generator).tolist(), ConvergenceSettings(
        tolerance=0.0))["converged"] is False for _ in range(200))
    assert alarms <= 12  # 5 expected; 12 is beyond 3 binomial standard errors


def test_a_short_run_has_no_verdict():
    assert fixed_verdict([1.0] * 20, RULE)["converged"] is None


def vae_run(steps: int, lr: float = 0.003, lr_decay: float = 0.1, stop_at: int | None = None):
    """The default VAE on digits (one hidden layer of 32), trained as a run trains it: the trend rule's scorings at
    its window's ends; stopped at ``stop_at`` where given."""
    config = Config(steps=steps, hidden_dims=[32], guides=["diag"], lr=lr, lr_decay=lr_decay).validate()
    data = load_dataset(config)
    pyro.clear_param_store()
    streams.seeded("training", 0)
    model, guide = build(config, data, "diag")
    trainer = make_trainer(config, model, guide, data, seed=0)
    trainer.run(stop_at or steps, lambda trainer: trainer.check_window(steps))
    return trainer, model, guide, data


def test_a_vae_still_rising_is_seen_on_fixed_draws_where_the_minibatches_hide_it():
    """The trend rule reads the ELBO of 1,024 training rows on fixed draws at its window's ends: on a VAE whose ELBO
    still rises by about 0.05 nats a point over the last 50 steps, the minibatch losses' line had a standard error of
    0.2 and called it converged (now: cannot tell). The gain agrees with the ELBOs of the window's two ends on fresh
    draws."""
    trainer, model, guide, data = vae_run(300, stop_at=300 - 50)
    start = copy.deepcopy((model.state_dict(), guide.state_dict()))
    trainer.run(300, lambda trainer: trainer.check_window(300))
    verdict = trainer.convergence(300)
    assert verdict["read_from"] == "fixed_draws" and verdict["terms"] == 1024 and verdict["window"] == 50
    assert not verdict["converged"] and "fixed draws of 1024 training rows" in verdict["reason"]
    assert fixed_verdict(trainer.losses, RULE)["converged"] is None  # the minibatches' line cannot tell

    rows = data.train[:1024]
    end = evaluate(model, guide, rows, elbo_samples=64, iw_samples=1, log_px_method="iwae").per_point
    with torch.no_grad():
        model.load_state_dict(start[0])
        guide.load_state_dict(start[1])
    begin = evaluate(model, guide, rows, elbo_samples=64, iw_samples=1, log_px_method="iwae").per_point
    fresh = float((end["elbo"] - begin["elbo"]).double().mean())
    variances = end["elbo_stderr"].double() ** 2 + begin["elbo_stderr"].double() ** 2
    fresh_stderr = math.sqrt(float(variances.sum())) / 1024
    assert abs(verdict["gain"] - fresh) < 4 * math.hypot(verdict["gain_stderr"], fresh_stderr)
    assert fresh - 3 * fresh_stderr > RULE.tolerance  # it was still rising


def test_a_vae_whose_rate_has_decayed_to_nothing_is_converged_on_fixed_draws():
    trainer, *_ = vae_run(250, lr_decay=1e-6)
    verdict = trainer.convergence(250)
    assert verdict["read_from"] == "fixed_draws" and verdict["converged"]
    assert abs(verdict["gain"]) < 0.002


def test_a_run_as_short_as_the_window_is_scored_on_fixed_draws_from_after_its_first_step():
    """At --steps 50 the window was all 50 steps and began before the first, where no scoring follows a step: the
    minibatches' line called a tester's fit converged at 4 times its trained gap. It now begins after step 1."""
    assert window_steps(50, RULE) == 49 and window_steps(1000, RULE) == 100
    trainer, *_ = vae_run(50)
    verdict = trainer.convergence(50)
    assert verdict["read_from"] == "fixed_draws" and verdict["window"] == 49 and not verdict["converged"]


def test_a_run_resumed_inside_the_window_keeps_its_first_scoring(tmp_path):
    trainer, *_ = vae_run(250, stop_at=220)
    save_checkpoint(tmp_path / "state.pt", {"trainer": trainer.state_dict()})
    straight, *_ = vae_run(250)
    resumed, *_ = vae_run(250, stop_at=1)
    resumed.load_state_dict(load_checkpoint(tmp_path / "state.pt")["trainer"])
    resumed.run(250, lambda trainer: trainer.check_window(250))
    assert resumed.convergence(250) == straight.convergence(250)


def test_the_paired_gain_is_the_mean_difference_with_its_standard_error():
    before = torch.tensor([1.0, 2.0, 3.0, 4.0])
    gain = paired_gain(before, before + torch.tensor([0.1, 0.3, 0.1, 0.3]))
    assert gain["gain"] == pytest.approx(0.2) and gain["gain_stderr"] == pytest.approx(0.1 / math.sqrt(3))
    assert gain["dof"] == 3 and gain["terms"] == 4


def conjugate_study(num_data: int = 100):
    """A conjugate regression with correlated features: exact posterior, so any Gaussian q's KL is a closed form."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(num_data, 3, generator=generator)
    features[:, 1] = 0.9 * features[:, 0] + 0.45 * features[:, 1]
    targets = features @ torch.tensor([0.5, -1.0, 0.3]) + torch.randn(num_data, generator=generator)
    data = torch.cat([features, targets[:, None]], 1)
    mean, cov, precision = truth.regression_posterior(features.double(), targets.double(), 1.0, 1.0)
    return data, mean, cov, precision


def q_kl(guide, mean, cov) -> float:
    """KL(q || posterior) of a fitted AutoMultivariateNormal (a Gaussian over the one site w)."""
    auto = guide.auto
    factor = (auto.scale[:, None] * auto.scale_tril).detach().double()
    return truth.gaussian_kl(auto.loc.detach().double(), factor @ factor.T, mean, cov)


def fit(data, steps: int, **settings):
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    guide = GlobalAutoGuide("AutoMultivariateNormal", model, data)
    config = Config(model="regression.py:model", guides=["auto:AutoMultivariateNormal"], **settings).validate()
    trainer = make_trainer(config, model, guide, Dataset("regression", data, data[:0], kind="global"), seed=0)
    trainer.run(steps)
    return trainer, guide


def test_models_with_global_latents_train_until_converged_at_the_defaults():
    """The defaults (schedule converge, lr 0.05 dropped tenfold on plateaus, 32 particles) reach the family's optimum
    (KL 0 for a full-rank Gaussian on a Gaussian posterior) within the tolerance and stop by the rule."""
    data, mean, cov, _ = conjugate_study()
    trainer, guide = fit(data, steps=20000)
    verdict = trainer.convergence(20000)
    assert verdict["rule"] == "plateau" and verdict["converged"] and "within the tolerance" in verdict["reason"]
    assert trainer.step_count < 20000 and verdict["drops"] >= 1
    assert q_kl(guide, mean, cov) < 0.05


def test_a_fit_stopped_at_the_cap_says_it_did_not_converge():
    data, mean, cov, _ = conjugate_study()
    trainer, guide = fit(data, steps=20)
    verdict = trainer.convergence(20)
    assert not verdict["converged"] and "cap of 20 steps" in verdict["reason"]
    assert q_kl(guide, mean, cov) > 0.5  # and it was right: far from the posterior


def test_a_diverging_step_backs_off_to_the_last_check_at_a_tenth_of_the_rate():
    """At lr 50 the first steps blow the scales up; the schedule returns to its last finite state and lowers the rate
    instead of stopping the run with a numerical fault."""
    data, mean, cov, _ = conjugate_study()
    trainer, guide = fit(data, steps=3000, lr=50.0)
    assert trainer.schedule.backoffs >= 1 and all(math.isfinite(loss) for loss in trainer.losses)
    assert trainer.svi.lrs[0] <= 5.0
    assert any(math.isnan(check[1]) for check in trainer.schedule.checks)


def test_the_schedule_resumes_from_a_checkpoint_where_it_left_off():
    data, *_ = conjugate_study()
    first, _ = fit(data, steps=400)
    state = first.state_dict()
    pyro.clear_param_store()
    second, _ = fit(data, steps=0)
    second.load_state_dict(state)
    assert second.schedule.checks == first.schedule.checks and second.svi.lrs == first.svi.lrs


def test_a_drop_whose_level_scatters_beyond_the_tolerance_does_not_converge():
    """Checks flat on average but scattered by 0.1 nats: the drop changed the level by less than the tolerance, but the
    level is not known that well, so the rate drops again instead of stopping; the same checks at 0.001 stop."""
    for scatter, converged in ((0.1, False), (0.001, True)):
        schedule = ConvergeSchedule(None, ConvergenceSettings(tolerance=0.02))
        signs = [1, -1, 1, -1, 1, -1]
        schedule.checks = [[50 * (i + 1), -10.0 + scatter * sign, 0.05] for i, sign in enumerate(signs)]
        schedule.stage_start, schedule.levels = 0, [-10.0]
        assert schedule._judge(0.05, 300) == ("" if converged else "drop")
        assert schedule.done == converged and schedule.converged == converged


def test_a_kept_start_is_the_first_level_to_beat():
    """A fit started from another fit (keep_start): a first stage that settles below the start, by more than the noise,
    returns there; one at the start's level or above it drops the rate (convergence is judged between two rates' levels,
    and the start was not reached at one)."""
    for level, action, converged in ((-10.5, "back off", False), (-10.005, "drop", False), (-9.5, "drop", False)):
        schedule = ConvergeSchedule(None, ConvergenceSettings(tolerance=0.02), keep_start=True)
        schedule.start_level = -10.0
        schedule.checks = [[50 * (i + 1), level + 0.001 * sign, 0.05] for i, sign in enumerate([1, -1] * 3)]
        schedule.stage_start = 0
        assert schedule._judge(0.05, 300) == action
        assert schedule.converged == converged


def test_a_fit_that_falls_below_its_kept_start_ends_there():
    """A full-rank Gaussian started at the closed-form posterior (its family's optimum, KL 0) at a learning rate that
    throws it off: the schedule scores the start, returns there whenever a stage ends below it, and the fit ends no
    further from the posterior than the tolerance allows."""
    data, mean, cov, _ = conjugate_study()
    pyro.clear_param_store()
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    guide = GlobalAutoGuide("AutoMultivariateNormal", model, data)
    with torch.no_grad():
        guide.auto.loc.copy_(mean.float())
        factor = torch.linalg.cholesky(cov).float()  # Pyro's scale is its diagonal, scale_tril its unit rows
        guide.auto.scale = pyro.nn.PyroParam(factor.diagonal(), guide.auto.scale_constraint)
        guide.auto.scale_tril = pyro.nn.PyroParam(factor / factor.diagonal()[:, None], guide.auto.scale_tril_constraint)
    assert q_kl(guide, mean, cov) < 1e-4
    config = Config(model="regression.py:model", guides=["auto:AutoMultivariateNormal"], lr=1.0).validate()
    dataset = Dataset("regression", data, data[:0], kind="global")
    trainer = make_trainer(config, model, guide, dataset, seed=0, keep_start=True)
    trainer.run(20000)
    verdict = trainer.convergence(20000)
    assert verdict["start_level"] is not None and trainer.schedule.backoffs >= 1
    assert verdict["converged"] and q_kl(guide, mean, cov) < 0.02 + 0.01  # the tolerance (ELBO nats) and the noise
