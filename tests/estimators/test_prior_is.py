"""Importance sampling from the prior, one file in elbogap/estimators, on both kinds of target: the points of the
linear-Gaussian model (exact log p(x)) and the whole data set of a conjugate regression (exact log p(D))."""

import json

import numpy as np
import pyro
import torch

from elbogap.config import Config
from elbogap.estimators import EstimatorSettings, estimators
from elbogap.factory import build, load_dataset
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.protocol import evidence_check
from elbogap.inference import evaluate
from elbogap.inference.log_px import settings
from elbogap.model.target import DataSetTarget
from tests.global_latents import truth


def conjugate(rows: int = 5):
    """A conjugate regression whose data say little (5 rows, 3 weights): the prior is a fine proposal there."""
    data = truth.regression_data(rows, 3, seed=2)
    exact = truth.regression_log_evidence(data[:, :3], data[:, 3], 1.0, 1.0)
    return data, exact


def test_the_file_is_registered_for_both_kinds():
    assert "prior-is" in estimators() and "prior-is" in settings()
    assert "prior-is" in Config.__dataclass_fields__["log_px"].metadata["choices"]


def test_on_the_points_of_a_per_point_model_it_is_the_exact_log_px():
    """--log-px prior-is on 50 test points of the linear-Gaussian model: each point's estimate within its own error
    of the exact value, and their mean within 4 combined errors. The mean squared z-score measured 0.6-1.8 over six
    seeds (1.4 on average: one point's error is about 1.2 times too small under these weights' tails, as the docs
    say), so the bound is 2.5."""
    config = Config(model="linear", guides=["diag"])
    data = load_dataset(config)
    model, guide = build(config, data, "diag")
    x = data.test[:50]
    torch.manual_seed(0)
    exact = evaluate(model, guide, x, log_px_method="exact").per_point["log_px"].double()
    estimate = evaluate(model, guide, x, log_px_method="prior-is", iw_samples=2000)
    assert estimate.metrics["log_px_method"] == "prior-is" and estimate.metrics["log_px_guide_independent"]
    values, errors = estimate.per_point["log_px"].double(), estimate.per_point["log_px_stderr"].double()
    z = (values - exact) / errors
    assert 0.4 < float(z.pow(2).mean()) < 2.5, z
    assert abs(float((values - exact).mean())) < 4 * float(errors.pow(2).sum().sqrt()) / len(x)


def test_on_a_whole_data_set_its_error_bar_matches_its_spread_over_repeats():
    """Forty repeats of 1000 draws on a 5-row conjugate regression (3 weights): the estimates scatter about the exact
    log p(D) as their reported standard error says (the ratio within 0.65-1.5: about 3 standard errors of a ratio read
    off 40 repeats; pooled over 200 repeats it is 0.94, and 95% of the 1.96 s.e. intervals cover), and their mean is
    within 4 standard errors of the mean of the exact value."""
    data, exact = conjugate()
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    estimator = estimators()["prior-is"]
    values, errors = [], []
    for seed in range(40):
        pyro.set_rng_seed(seed)
        estimate = estimator.estimate(DataSetTarget(model, data), EstimatorSettings(samples=1000))
        values.append(float(estimate.values[0]))
        errors.append(float(estimate.stderr[0]))
    values, errors = np.array(values), np.array(errors)
    assert 0.65 < values.std(ddof=1) / errors.mean() < 1.5, (values.std(ddof=1), errors.mean())
    assert abs(values.mean() - exact) < 4 * errors.mean() / np.sqrt(len(values)), (values.mean(), exact)


def test_a_study_of_a_model_with_global_latents_takes_it_as_its_evidence(tmp_path, elbogap):
    data, exact = conjugate()
    truth.write_regression_study(tmp_path, data)
    out = tmp_path / "out"
    code, err = elbogap("compare", "--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv",
                        "--guides", "auto:AutoMultivariateNormal", "--seeds", "0", "--jobs", "1", "--log-px",
                        "prior-is", "--iw-samples", "4000", "--out", out, "-q")
    assert code == 0, err
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["train"]["log_px_method"] == "prior-is" and run["reference"]["method"] == "prior-is"
    assert abs(run["train"]["log_px"] - exact) < 4 * run["train"]["log_px_stderr"] + 0.01
    assert abs(run["train"]["kl_gap"]) < 4 * run["train"]["kl_gap_stderr"] + 0.02  # full rank holds this posterior
    assert "importance sampling from the prior" in (out / "results.md").read_text()
    code, err = elbogap("compare", "--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv",
                        "--log-px", "iwae", "--out", tmp_path / "refused", "-q")
    assert code == 2 and "--log-px iwae is for models whose latents are per data point" in err
    assert len(err.strip().splitlines()) == 1


def test_an_evidence_without_an_error_bar_is_a_warning_not_a_silent_gap():
    """Prior-IS whose weights have an infinite variance has no standard error: the study warns, naming the fix."""
    metrics = {"log_px": -31.3, "log_px_stderr": float("nan"), "log_px_iwae": -31.07,
               "log_px_iwae_stderr": 0.003, "log_px_method": "prior-is"}
    warning = evidence_check(metrics)["log_px_warning"]
    assert "by prior-is has no standard error" in warning and "--iw-samples" in warning


def test_the_draws_are_scored_in_chunks_within_the_budget():
    """The chunk of draws counts every row a draw scores (the whole data set, for one unit), and the chunked
    estimate is the one-chunk estimate."""
    data, _ = conjugate()
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    values = []
    for budget in (2**24, 4 * data.numel()):
        pyro.set_rng_seed(0)
        estimate = estimators()["prior-is"].estimate(DataSetTarget(model, data),
                                                     EstimatorSettings(samples=64, element_budget=budget))
        values.append(float(estimate.values[0]))
    assert values[0] == values[1]
