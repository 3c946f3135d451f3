"""IWAE and AIS, the two estimators of elbogap/estimators that read the guide judged: files of the registry like the
others, run from it on the points of the linear-Gaussian model (exact log p(x)), and never the evidence of a model
with global latents, which is the same for every guide."""

import importlib

import pytest
import torch

from elbogap.estimators import EstimatorSettings, Judged, estimators, without_guide
from elbogap.inference import evaluate
from elbogap.inference.ais import AISSettings
from elbogap.inference.log_px import plan
from elbogap.model import VAE
from elbogap.model.target import PointsTarget
from tests.conftest import optimal_diag_guide


@pytest.mark.parametrize("name", ["iwae", "ais"])
def test_each_is_one_registered_file_that_needs_the_guide(name):
    estimator = estimators()[name]
    module = importlib.import_module(f"elbogap.estimators.{name}")
    assert estimator.estimate.__module__ == module.__name__ and estimator.needs_guide and estimator.uses_iw_draws
    assert name not in without_guide() and {"exact", "quadrature", "prior-is"} <= set(without_guide())


def test_ais_is_kept_beside_iwae_and_checked_against_it_and_auto_plans_it_on_a_subset():
    ais, iwae = estimators()["ais"], estimators()["iwae"]
    assert ais.guide_independent and not iwae.guide_independent
    assert ais.kept_as == "log_px_ais" and ais.check is not None and iwae.kept_as is None
    steps = plan("auto", VAE(4, 3)).steps  # no closed form, no 2-D grid: IWAE on every point, AIS on a subset
    assert [(step.method.name, step.rows) for step in steps] == [("iwae", "all"), ("ais", "subset")]


@pytest.mark.parametrize("name", ["iwae", "ais"])
def test_from_the_registry_with_the_judged_guide_each_recovers_the_exact_evidence(name, linear_model, linear_data):
    """Called as the registry's estimator on a target, the guide given as Judged: IWAE reads q's draws as they are,
    AIS (from its default start) lands within 4 of its errors, plus 0.05, of the closed form on every point."""
    x, index = linear_data[:6], torch.arange(6)
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)  # weights of finite variance: IWAE has an error bar
    draws = evaluate(linear_model, guide, x, elbo_samples=1, iw_samples=500, log_px_method="iwae").per_point
    settings = EstimatorSettings(ais=AISSettings(steps=50, chains=8, leapfrog_steps=2),
                                 judged=Judged(guide, index, draws, 500))
    estimate = estimators()[name].estimate(PointsTarget(linear_model, x), settings)
    assert estimate.values.shape == estimate.stderr.shape == (6,)
    if name == "iwae":
        assert torch.equal(estimate.values, draws["log_px_iwae"]) and estimate.info["samples"] == 500
    else:
        assert estimate.info["samples"] == 8 and estimate.info["ais"]["points"] == 6
    assert (estimate.values - linear_model.log_px(x)).abs().max() < 0.05 + 4 * estimate.stderr.max()
