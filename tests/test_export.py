"""A study's posteriors as ArviZ InferenceData: written beside the results, loaded by elbogap.load, right in numbers."""

import math
import sys

import arviz as az
import numpy as np
import pytest
import torch

import elbogap
from elbogap.errors import UsageError
from elbogap.export import FOLDER, arviz, site_arrays, systematic_resample
from tests.global_latents import truth


@pytest.fixture(scope="module")
def regression_study(tmp_path_factory):
    """A conjugate regression (3 correlated features, exact Gaussian posterior) fitted by two autoguides."""
    out = tmp_path_factory.mktemp("export") / "out"
    data = truth.regression_data(60, 3, seed=2, correlation=0.8)
    result = elbogap.compare(truth.regression_model(1.0, 1.0), ["auto:AutoNormal", "auto:AutoMultivariateNormal"],
                             data.numpy(), out=out, seeds=[0], jobs=1)
    mean, _, precision = truth.regression_posterior(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    return result, mean, precision


def test_every_run_and_its_reference_are_written_as_netcdf_and_load_in_arviz(regression_study):
    result, _, _ = regression_study
    files = sorted(path.name for path in (result.out / FOLDER).glob("*.nc"))
    assert files == ["auto-AutoMultivariateNormal-seed0.nc", "auto-AutoNormal-seed0.nc", "reference-seed0.nc"]
    loaded = elbogap.load(result.out)
    assert set(loaded) == {name.removesuffix(".nc") for name in files}
    for run in result.runs:
        posterior = az.from_netcdf(str(result.out / FOLDER / f"{run['guide']}-seed0.nc")).posterior
        assert posterior["w"].shape == (1, run["data"]["samples"], 3)  # one chain, the site's own shape
        assert posterior.attrs["kl_gap"] == pytest.approx(run["data"]["kl_gap"])
        assert posterior.attrs["converged"] == str(run["converged"])
    summary = az.summary(loaded["auto-AutoNormal-seed0"], kind="stats")
    assert list(summary.index) == ["w[0]", "w[1]", "w[2]"]


def test_the_exported_draws_have_the_closed_form_moments(regression_study):
    result, mean, precision = regression_study
    loaded = elbogap.load(result.out)
    exact_sd = torch.linalg.inv(precision).diagonal().sqrt().numpy()
    # the reference: AIS states resampled by weight; its mean's error from both the weights and the resampling
    reference = loaded["reference-seed0"].posterior
    draws = reference["w"].values.reshape(-1, 3)
    effective = reference.attrs["effective_draws"]
    assert reference.attrs["method"] == "ais" and effective > 100
    tolerance = 4 * exact_sd * math.sqrt(1 / effective + 1 / len(draws))
    assert np.all(np.abs(draws.mean(0) - mean.numpy()) < tolerance)
    # the best factorized Gaussian has precision diag(Lambda): sd 1/sqrt(Lambda_ii), below the marginal sd here
    mean_field = loaded["auto-AutoNormal-seed0"].posterior["w"].values.reshape(-1, 3)
    best_sd = 1 / precision.diagonal().sqrt().numpy()
    sd_error = best_sd / math.sqrt(2 * (len(mean_field) - 1))  # the sample sd's standard error for a Gaussian
    assert np.all(np.abs(mean_field.std(0, ddof=1) - best_sd) < 4 * sd_error + 0.03 * best_sd)
    assert np.all(best_sd < exact_sd)


def test_draws_are_shaped_by_site_and_chain():
    values = {"scalar": torch.arange(6.0).reshape(6, 1), "matrix": torch.arange(24.0).reshape(6, 4)}
    arrays = site_arrays(values, {"scalar": [], "matrix": [2, 2]}, chains=2)
    assert arrays["scalar"].shape == (2, 3) and arrays["matrix"].shape == (2, 3, 2, 2)
    assert arrays["matrix"][1, 0].tolist() == [[12.0, 13.0], [14.0, 15.0]]  # the chains' draws, in order


def test_systematic_resampling_keeps_each_draws_share():
    assert systematic_resample(torch.tensor([0.0, 1.0, 0.0]), 5).tolist() == [1] * 5
    assert sorted(systematic_resample(torch.full((4,), 0.25), 4).tolist()) == [0, 1, 2, 3]
    counts = np.bincount(systematic_resample(torch.tensor([0.5, 0.3, 0.2]), 1000), minlength=3)
    assert np.all(np.abs(counts - [500, 300, 200]) <= 1)  # systematic: within one draw of the expected count


def test_without_arviz_the_export_says_which_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "arviz", None)  # as if it were not installed
    with pytest.raises(UsageError, match=r"pip install 'elbogap\[arviz\]'"):
        arviz()
    monkeypatch.undo()
    with pytest.raises(UsageError, match="no results.json"):
        elbogap.load(tmp_path)
