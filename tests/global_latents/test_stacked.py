"""Stacked fits: each fit of the stack is its own autoguide's q, trained to where a lone run goes."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from elbogap.config import Config
from elbogap.data import Dataset
from elbogap.factory import for_data, make_trainer
from elbogap.global_latents.autoguides import AUTOGUIDES
from elbogap.global_latents.guides import global_guide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.stacked import NotStackable, StackedFits, flat_posterior
from elbogap.inference.convergence import ConvergenceSettings
from tests.global_latents import truth


def scale_and_regression(data):
    """A positive scale beside a weight vector, so the flat vector carries a Jacobian."""
    x, y = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_zeros(x.shape[-1]), 1.0).to_event(1))
    noise = pyro.sample("noise", dist.HalfNormal(data.new_tensor(1.0)))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), noise), obs=y)


def guides_of(name, model, data, seeds):
    guides = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        guides.append(global_guide(f"auto:{name}", model, data))
    return guides


@pytest.mark.parametrize("name", [family.name for family in AUTOGUIDES.values() if family.stacks])
def test_the_flat_q_is_the_autoguides_own_density_and_each_stacked_fit_draws_as_its_guide_alone(name):
    """Pyro's guide trace scores its sites in their supports: log q(z) - log|J(z)| of the flat vector z."""
    data = truth.regression_data(12, 2, seed=1)
    model = GlobalLatentModel(scale_and_regression, data, "scale_and_regression")
    guides = guides_of(name, model, data, [0, 1, 2])
    for guide in guides:
        with torch.no_grad():
            guide_trace = poutine.trace(guide.guide).get_trace(data)
            values = {site: guide_trace.nodes[site]["value"] for site in model.latent_sites}
            z = model.pack(values)
            guide_trace.compute_log_prob()
            traced = sum(site["log_prob_sum"] for site in guide_trace.nodes.values()
                         if site["type"] == "sample" and not site["is_observed"])
            flat = flat_posterior(guide.auto).log_prob(z) - model.log_abs_det(z)
        assert torch.allclose(torch.as_tensor(traced), flat, atol=1e-4)
    stack = StackedFits(model, guides, data, [0, 1, 2], 0.05, 4, 10, ConvergenceSettings())
    with torch.no_grad():  # draws from given normals have q's own mean and covariance (20,000 draws against 20,000)
        q = flat_posterior(guides[1].auto)
        z, _ = stack.draw([1], torch.randn(1, 20000, stack.noise, generator=torch.Generator().manual_seed(1)))
        sampled = q.sample((20000,))
        spread = sampled.std(0)
        assert ((z[0].mean(0) - sampled.mean(0)).abs() < 5 * spread * math.sqrt(2 / 20000)).all()
        assert torch.allclose(torch.cov(z[0].T), torch.cov(sampled.T), atol=0.1 * float(spread.max()) ** 2)
    eps = torch.randn(3, 5, stack.noise)
    with torch.no_grad():
        z, log_q = stack.draw([0, 1, 2], eps)
        log_joint = stack.log_joint([0, 1, 2], z)
        for g in range(3):
            lone_z, lone_log_q = stack.flats[g](eps[g])
            assert torch.allclose(z[g], lone_z, atol=1e-5) and torch.allclose(log_q[g], lone_log_q, atol=1e-4)
            lone = torch.stack([model.joint_parts(one, data).sum() for one in lone_z])
            assert torch.allclose(log_joint[g], lone, atol=1e-3)


def test_stacked_fits_reach_the_closed_form_mean_field_optimum_as_lone_runs_do():
    """A conjugate regression with correlated features: the best factorized Gaussian's ELBO is log p(D) - KL*, in
    closed form. Eight stacked AutoNormal fits (seeds 0-7) and three lone runs of the trainer at the same family
    settings each end within 3 s.e. of their ELBO estimate (4,000 draws) plus the rule's tolerance of it."""
    data = truth.regression_data(30, 3, seed=5, correlation=0.8)
    program = truth.regression_model(1.0, 1.0)
    x, y = data[:, :-1].double(), data[:, -1].double()
    _, _, precision = truth.regression_posterior(x, y, 1.0, 1.0)
    optimum = truth.regression_log_evidence(x, y, 1.0, 1.0) - truth.best_factorized_gaussian_kl(precision)
    model = GlobalLatentModel(program, data, "regression")
    dataset = Dataset("regression", data, data[:0], kind="global")
    config = for_data(Config(model="regression"), dataset, "auto:AutoNormal")
    seeds = list(range(8))
    stack = StackedFits(model, guides_of("AutoNormal", model, data, seeds), data, seeds, config.lr,
                        config.particles, config.steps, ConvergenceSettings(tolerance=config.convergence_tol))
    stack.run()
    _, log_w = stack.final_draws(4000)
    stacked = log_w.double().mean(1)
    stderr = log_w.double().std(1) / math.sqrt(4000)
    assert all(stack.verdict(g)["converged"] for g in seeds)
    assert ((stacked - optimum).abs() < 3 * stderr + config.convergence_tol).all(), (stacked - optimum, stderr)
    lone = []
    for seed in range(3):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = global_guide("auto:AutoNormal", model, data)
        trainer = make_trainer(config, model, guide, dataset, seed)
        trainer.run(config.steps)
        assert trainer.convergence(config.steps)["converged"]
        one = StackedFits(model, [guide], data, [seed], config.lr, config.particles, 0, ConvergenceSettings())
        _, weights = one.final_draws(4000)
        lone.append(float(weights.double().mean()))
        assert abs(lone[-1] - optimum) < 3 * float(weights.double().std()) / math.sqrt(4000) + config.convergence_tol
    # the two ways agree in distribution: their means over fits within the error of those means
    spread = math.hypot(float(stacked.std()) / math.sqrt(8), float(torch.tensor(lone).std()) / math.sqrt(3))
    assert abs(float(stacked.mean()) - sum(lone) / 3) < 3 * spread + 0.01


def test_a_fit_whose_data_set_gives_no_finite_elbo_gives_up_alone():
    data = truth.regression_data(15, 2, seed=3)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    broken = data.clone()
    broken[4, -1] = math.nan
    data_sets = torch.stack([data, broken, data])
    stack = StackedFits(model, guides_of("AutoMultivariateNormal", model, data, [0, 1, 2]), data_sets, [0, 1, 2],
                        0.05, 8, 3000, ConvergenceSettings())
    stack.run()
    failed = stack.verdict(1)
    assert not failed["converged"] and "not finite" in failed["reason"]
    assert failed["backoffs"] == ConvergenceSettings().max_backoffs
    for g in (0, 2):
        assert stack.verdict(g)["converged"] and all(torch.isfinite(p).all() for p in stack.views[g].params)


def test_a_program_vmap_cannot_run_is_refused_before_training():
    def branching(data):
        w = pyro.sample("w", dist.Normal(data.new_zeros(()), 1.0))
        if float(w) > 0:  # Python control flow on a latent's value: one value at a time
            w = w * 1.0
        with pyro.plate("data", data.shape[0]):
            pyro.sample("y", dist.Normal(w, 1.0), obs=data[:, -1])

    data = truth.regression_data(10, 1, seed=0)
    model = GlobalLatentModel(branching, data, "branching")
    with pytest.raises(NotStackable, match="vmap cannot run the program"):
        StackedFits(model, guides_of("AutoNormal", model, data, [0, 1]), data, [0, 1], 0.05, 4, 10,
                    ConvergenceSettings())


def test_the_stacked_update_is_pyros_clipped_adam_per_fit_with_its_own_rate_and_steps():
    """Gradients beyond the clip, a rate per fit, and a fit that skips steps: each fit's parameters follow one
    ClippedAdam of its own."""
    from pyro.optim.clipped_adam import ClippedAdam

    data = truth.regression_data(12, 2, seed=1)
    model = GlobalLatentModel(scale_and_regression, data, "scale_and_regression")
    stack = StackedFits(model, guides_of("AutoMultivariateNormal", model, data, [0, 1, 2]), data, [0, 1, 2], 0.05, 4,
                        10, ConvergenceSettings())
    stack.lr[1] = 0.01
    lone = [[leaf[g].detach().clone().requires_grad_() for leaf in stack.leaves] for g in range(3)]
    optimizers = [ClippedAdam(params, lr=float(stack.lr[g]), clip_norm=10.0) for g, params in enumerate(lone)]
    generator = torch.Generator().manual_seed(0)
    for step in range(20):
        fits = [0, 1] if step % 3 else [0, 1, 2]  # fit 2 sits out some steps
        grads = [30 * torch.randn(leaf.shape, generator=generator) for leaf in stack.leaves]
        for leaf, grad in zip(stack.leaves, grads, strict=True):
            leaf.grad = grad
        stack.update(fits)
        for g in fits:
            for param, grad in zip(lone[g], grads, strict=True):
                param.grad = grad[g].clone()
            optimizers[g].step()
    for g in range(3):
        for leaf, param in zip(stack.leaves, lone[g], strict=True):
            assert torch.allclose(leaf[g], param, atol=2e-5)


def test_a_fit_whose_parameters_turn_nan_backs_off_alone_and_the_others_step_on():
    data = truth.regression_data(15, 2, seed=3)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    stack = StackedFits(model, guides_of("AutoMultivariateNormal", model, data, [0, 1, 2]), data, [0, 1, 2], 0.05, 8,
                        3000, ConvergenceSettings())
    for g, schedule in enumerate(stack.schedules):
        schedule.start(stack.views[g])
    for _ in range(60):
        stack.step([0, 1, 2])
    with torch.no_grad():
        stack.leaves[0][1] = math.nan  # fit 1's location
    before = [leaf[0].detach().clone() for leaf in stack.leaves]
    stack.step([0, 1, 2])
    assert stack.schedules[1].backoffs == 1 and stack.views[1].params_finite()
    assert not torch.equal(stack.leaves[0][0], before[0])  # fit 0 took its step
    assert stack.steps[0] == 61 and stack.steps[1] == 50  # fit 1 back at its best check, fit 0 a step on
