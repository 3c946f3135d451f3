"""Pyro's autoguides over every latent of a conjugate model: their KL gaps against the closed forms."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from elbogap.errors import UsageError
from elbogap.global_latents.evaluation import guide_draws, summarize_draws
from elbogap.global_latents.guides import GlobalAutoGuide, GlobalProgramGuide, global_guide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference.train import Trainer
from elbogap.protocols import GLOBAL
from elbogap.threads import intra_op_threads
from tests.global_latents import truth

ALPHA, SIGMA = 1.0, 0.5


@pytest.fixture(scope="module")
def regression():
    """Correlated features, so the posterior is tilted and the mean-field family pays a visible price."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 3, generator=generator)
    features[:, 1] = features[:, 0] + 0.4 * features[:, 1]
    targets = features @ torch.tensor([0.5, -1.0, 0.3]) + SIGMA * torch.randn(30, generator=generator)
    data = torch.cat([features, targets[:, None]], 1)
    mean, cov, precision = truth.regression_posterior(features.double(), targets.double(), ALPHA, SIGMA)
    return {"data": data, "evidence": truth.regression_log_evidence(features.double(), targets.double(), ALPHA, SIGMA),
            "mean_field_kl": truth.best_factorized_gaussian_kl(precision), "mean": mean, "cov": cov}


def fitted_gap(name: str, regression: dict, steps: int = 3000) -> tuple[float, float]:
    data = regression["data"]
    model = GlobalLatentModel(truth.regression_model(ALPHA, SIGMA), data, "regression")
    guide = GlobalAutoGuide(name, model, data)
    with intra_op_threads(GLOBAL.threads):
        Trainer(model, guide, data, batch_size=len(data), lr=0.03, lr_decay=0.02 ** (1 / steps),
                jit=False).run(steps)
        metrics = summarize_draws(guide_draws(model, guide, data, 4000), len(data))
    return regression["evidence"] - metrics["elbo"], metrics["elbo_stderr"]


def test_the_full_rank_gaussian_closes_the_gap_on_a_gaussian_posterior(regression):
    gap, stderr = fitted_gap("AutoMultivariateNormal", regression)
    assert abs(gap) < 3 * stderr + 0.01


def test_the_mean_field_gap_is_the_closed_form_kl_of_the_best_factorized_gaussian(regression):
    assert regression["mean_field_kl"] > 0.3  # the tilt makes it worth measuring
    gap, stderr = fitted_gap("AutoNormal", regression, steps=1000)  # it settles in fewer steps than full rank
    assert stderr < 0.02
    assert abs(gap - regression["mean_field_kl"]) < 0.05


@pytest.mark.parametrize("name, message", [
    ("AutoDelta", "no density"), ("AutoLaplaceApproximation", "no KL gap"), ("AutoNoSuchGuide", "no Pyro autoguide"),
])
def test_autoguides_without_a_density_are_refused_in_one_line(name, message, regression):
    model = GlobalLatentModel(truth.regression_model(ALPHA, SIGMA), regression["data"], "regression")
    with pytest.raises(UsageError, match=message) as error:
        GlobalAutoGuide(name, model, regression["data"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["AutoDiagonalNormal", "AutoLowRankMultivariateNormal", "AutoIAFNormal",
                                  "AutoNormalizingFlow", "AutoStructured", "AutoGaussian"])
def test_every_autoguide_with_a_density_scores_its_own_draws(name, regression):
    data = regression["data"]
    model = GlobalLatentModel(truth.regression_model(ALPHA, SIGMA), data, "regression")
    draws = guide_draws(model, GlobalAutoGuide(name, model, data), data, 50)
    assert torch.isfinite(draws.log_w).all() and draws.values["w"].shape == (50, 3)
    assert summarize_draws(draws, len(data))["elbo"] < regression["evidence"]


@pytest.mark.parametrize("spec, message", [
    ("autonormal", "unknown guide 'autonormal' for a model with global latents; did you mean auto:AutoNormal?"),
    ("AutoMultivariateNormal", "did you mean auto:AutoMultivariateNormal?"),
    ("diag", "the guide diag is one of elbogap's amortized families"),
    ("nothing", "unknown guide 'nothing' for a model with global latents; choose Pyro's autoguides"),
])
def test_a_guide_spec_that_is_no_autoguide_or_program_is_named_in_one_line(spec, message, regression):
    """A tester's --guides autonormal (and a missing auto: prefix) read "one of elbogap's amortized families"."""
    model = GlobalLatentModel(truth.regression_model(ALPHA, SIGMA), regression["data"], "regression")
    with pytest.raises(UsageError) as error:
        global_guide(spec, model, regression["data"])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_guide_program_missing_a_site_is_refused(regression):
    def guide(data):
        pyro.sample("v", dist.Normal(0.0, 1.0))

    model = GlobalLatentModel(truth.regression_model(ALPHA, SIGMA), regression["data"], "regression")
    with pytest.raises(UsageError, match="does not sample the model's latent site"):
        GlobalProgramGuide(guide, model, regression["data"], "guide.py:guide")


def test_qs_importance_estimate_has_no_standard_error_where_its_weights_tail_is_too_heavy(regression):
    """A guide far narrower than the posterior: its importance weights have k-hat above 0.5, an infinite variance,
    and no error bar is given for q's estimate of log p(D) (one was, at k-hat 0.85), as per-point IWAE declines."""
    from elbogap.global_latents.evaluation import GuideDraws

    torch.manual_seed(0)
    heavy = -0.8 * torch.rand(2000, dtype=torch.float64).log()  # Pareto weights of shape 0.8
    draws = GuideDraws(heavy, torch.zeros(2000, dtype=torch.float64), torch.zeros(2000, dtype=torch.float64), {})
    metrics = summarize_draws(draws, 30)
    assert metrics["khat_mean"] > 0.5 and math.isnan(metrics["log_px_iwae_stderr"])
    assert "no standard error" in metrics["log_px_iwae_note"]
    light = GuideDraws(0.1 * torch.randn(2000, dtype=torch.float64), torch.zeros(2000, dtype=torch.float64),
                       torch.zeros(2000, dtype=torch.float64), {})
    assert math.isfinite(summarize_draws(light, 30)["log_px_iwae_stderr"])


def matmul_regression(data):
    """The regression written with ``features @ w``: right on the data, but not under a plate of particles."""
    features, targets = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_zeros(features.shape[-1]), ALPHA**-0.5).to_event(1))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal(features @ w, SIGMA), obs=targets)


def test_a_program_that_does_not_broadcast_trains_on_its_particles_scored_at_once(regression):
    """Pyro's vectorized particles cannot run ``features @ w``; its particles are drawn from the guide under a plate
    and the program scored at all of them by vmap (VectorizedModelELBO), which estimates the same ELBO as one trace
    per particle, and trains the full-rank family to the posterior at the defaults."""
    from elbogap.config import Config
    from elbogap.data import Dataset
    from elbogap.factory import make_trainer
    from elbogap.global_latents.elbo import VectorizedModelELBO

    data = regression["data"]
    model = GlobalLatentModel(matmul_regression, data, "matmul")
    guide = GlobalAutoGuide("AutoMultivariateNormal", model, data)
    index = torch.arange(len(data))
    with torch.no_grad():
        plate, looped = ([VectorizedModelELBO(model, 64, dim).loss(None, guide.guide, data, index, len(data))
                          for _ in range(40)] for dim in (-2, None))
    plate, looped = torch.tensor(plate), torch.tensor(looped)
    assert abs(float(plate.mean() - looped.mean())) < 4 * float((plate.var() / 40 + looped.var() / 40).sqrt())
    config = Config(model="matmul.py:model", guides=["auto:AutoMultivariateNormal"]).validate()
    with intra_op_threads(GLOBAL.threads):
        trainer = make_trainer(config, model, guide, Dataset("regression", data, data[:0], kind="global"), seed=0)
        assert isinstance(trainer.svi.loss, VectorizedModelELBO)
        trainer.run(20000)
        metrics = summarize_draws(guide_draws(model, guide, data, 4000), len(data))
    assert trainer.convergence(20000)["converged"]
    assert abs(regression["evidence"] - metrics["elbo"]) < 3 * metrics["elbo_stderr"] + 0.03


def test_an_iaf_whose_posterior_is_narrower_than_pyros_bound_reads_its_scales_at_that_bound(regression):
    """Pyro's IAF clamps each log scale to [-5, 3]: on a regression whose noise sd is 0.001 (posterior sds about
    1e-4), a trained IAF's three scales sit at e^-5; at Pyro's start and on data with sds near 0.1 none do."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(30, 3, generator=generator)
    targets = features @ torch.tensor([0.5, -1.0, 0.3]) + 0.001 * torch.randn(30, generator=generator)
    narrow = torch.cat([features, targets[:, None]], 1)
    counts = {}
    for label, data, sigma in (("narrow", narrow, 0.001), ("wide", regression["data"], SIGMA)):
        model = GlobalLatentModel(truth.regression_model(ALPHA, sigma), data, "regression")
        guide = GlobalAutoGuide("AutoIAFNormal", model, data)
        counts[f"{label} at start"] = guide.scales_at_bound(seed=0)
        with intra_op_threads(GLOBAL.threads):
            Trainer(model, guide, data, batch_size=len(data), lr=0.03, jit=False).run(1500)
        counts[label] = guide.scales_at_bound(seed=0)
    assert counts == {"narrow at start": 0, "narrow": 3, "wide at start": 0, "wide": 0}
    normal = GlobalAutoGuide("AutoNormal", model, regression["data"])
    assert normal.scales_at_bound(seed=0) == 0


def test_the_iaf_is_autoregressive_in_the_programs_sampling_order():
    """mu, tau, then b (a centred hierarchy): the flat vector is in that order, and the IAF's network lets each
    output's location and log scale read only the latents before it in that order (its Jacobian lower triangular)."""
    def program(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfNormal(1.0))
        with pyro.plate("groups", 3):
            b = pyro.sample("b", dist.Normal(mu, tau))
        with pyro.plate("rows", len(data)):
            pyro.sample("y", dist.Normal(b[data[:, 0].long()], 1.0), obs=data[:, 1])

    data = torch.tensor([[0.0, 0.3], [1.0, -0.2], [2.0, 1.5]])
    guide = GlobalAutoGuide("AutoIAFNormal", GlobalLatentModel(program, data, "hierarchy"), data)
    (part,) = guide.auto.transform.parts
    assert torch.equal(part.arn.permutation, torch.arange(5))
    x = torch.randn(5)
    jacobian = torch.autograd.functional.jacobian(lambda v: torch.cat(part.arn(v)), x)
    for output in (jacobian[:5], jacobian[5:]):  # the locations, then the log scales
        assert torch.all(output.triu() == 0)  # output i reads inputs before i only
