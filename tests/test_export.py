"""A study's posteriors as ArviZ InferenceData: written beside the results, loaded by elbogap.load, right in numbers."""

import json
import math
import shutil
import sys

import arviz as az
import numpy as np
import pytest
import torch

import elbogap
from elbogap.errors import UsageError
from elbogap.export import FOLDER, arviz, export_study, site_arrays, systematic_resample
from elbogap.global_latents.reference import weighted_source
from elbogap.plots import make_figures
from elbogap.records import RENAMED
from tests.global_latents import truth

#: the tests that read :func:`regression_study` share one xdist worker, so the study is run once, not once per worker
ON_THE_STUDY = pytest.mark.xdist_group("export-study")


@pytest.fixture(scope="module")
def regression_study(tmp_path_factory):
    """A conjugate regression (3 correlated features, exact Gaussian posterior) fitted by two autoguides."""
    out = tmp_path_factory.mktemp("export") / "out"
    data = truth.regression_data(60, 3, seed=2, correlation=0.8)
    result = elbogap.compare(truth.regression_model(1.0, 1.0), ["auto:AutoNormal", "auto:AutoMultivariateNormal"],
                             data.numpy(), out=out, seeds=[0], jobs=1, evidence_steps=100, evidence_chains=160,
                             figures=False)
    mean, _, precision = truth.regression_posterior(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    return result, mean, precision


@ON_THE_STUDY
def test_every_run_and_its_reference_are_written_as_netcdf_and_load_in_arviz(regression_study):
    result, _, _ = regression_study
    files = sorted(path.name for path in (result.out / FOLDER).glob("*.nc"))
    assert files == ["auto-AutoMultivariateNormal-seed0.nc", "auto-AutoNormal-seed0.nc", "reference-seed0.nc"]
    loaded = elbogap.load(result.out)
    assert set(loaded) == {name.removesuffix(".nc") for name in files}
    for run in result.runs:
        posterior = az.from_netcdf(str(result.out / FOLDER / f"{run['guide']}-seed0.nc")).posterior
        assert posterior["w"].shape == (1, run["train"]["elbo_samples"], 3)  # one chain, the site's own shape
        assert posterior.attrs["kl_gap"] == pytest.approx(run["train"]["kl_gap"])
        assert posterior.attrs["converged"] == int(run["converged"])
    summary = az.summary(loaded["auto-AutoNormal-seed0"], kind="stats")
    assert list(summary.index) == ["w[0]", "w[1]", "w[2]"]


@ON_THE_STUDY
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


@ON_THE_STUDY
def test_the_log_likelihood_per_row_lets_arviz_compute_leave_one_out_as_the_closed_form_does(regression_study):
    """Each row's log p(y_n | w_s) at q's draws; with the full-rank q (the posterior's family) PSIS-LOO matches the
    exact leave-one-out predictive, N(y_n; x_n m_-n, 1 + x_n Sigma_-n x_n), and az.compare ranks the guides."""
    result, _, _ = regression_study
    loaded = elbogap.load(result.out)
    full = loaded["auto-AutoMultivariateNormal-seed0"]
    rows = torch.as_tensor(np.load(result.out / "data.npy")).double()
    features, targets = rows[:, :-1], rows[:, -1]
    w = torch.as_tensor(full.posterior["w"].values[0])
    pointwise = torch.as_tensor(full.log_likelihood["y"].values[0])
    assert pointwise.shape == (len(w), len(rows))
    assert full.log_likelihood.attrs["given"].startswith("the global latents: az.loo estimates")  # no latent per row
    direct = torch.distributions.Normal(w[:5] @ features.T, 1.0).log_prob(targets)
    assert torch.allclose(pointwise[:5], direct, atol=1e-4)
    exact = 0.0
    for n in range(len(rows)):
        keep = torch.arange(len(rows)) != n
        mean, cov, _ = truth.regression_posterior(features[keep], targets[keep], 1.0, 1.0)
        spread = 1.0 + features[n] @ cov @ features[n]
        exact += float(torch.distributions.Normal(features[n] @ mean, spread.sqrt()).log_prob(targets[n]))
    with np.errstate(all="ignore"):
        loo = az.loo(full)
        table = az.compare({name: data for name, data in loaded.items() if not name.startswith("reference")})
    assert abs(loo.elpd_loo - exact) < 0.2
    assert set(table.index) == {"auto-AutoNormal-seed0", "auto-AutoMultivariateNormal-seed0"}


@ON_THE_STUDY
def test_a_study_written_before_the_one_schema_is_redrawn_and_exported_as_now(regression_study, tmp_path):
    """Its results.json with the global kind's old names (``data``, ``log_evidence``, ...): ``elbogap plot`` and the
    export read it as one written today (``elbogap/records.py``)."""
    result, _, _ = regression_study
    out = tmp_path / "old"
    shutil.copytree(result.out, out)
    shutil.rmtree(out / FOLDER)
    results = json.loads((out / "results.json").read_text())
    before = {new: old for old, new in RENAMED.items()}
    for run in results["runs"]:
        metrics = run.pop("train")
        run["data"] = {before.get(key, key): value for key, value in metrics.items()
                       if key not in ("units", "log_px_iwae_samples")}
    (out / "results.json").write_text(json.dumps(results))
    assert {path.name for path in make_figures(out)} >= {"gaps.png", "evidence.png", "training.png"}
    export_study(out)
    for run in result.runs:
        posterior = az.from_netcdf(str(out / FOLDER / f"{run['guide']}-seed0.nc")).posterior
        assert posterior.attrs["log_px"] == pytest.approx(run["train"]["log_px"])
        assert posterior.attrs["kl_gap"] == pytest.approx(run["train"]["kl_gap"])


@ON_THE_STUDY
def test_a_run_is_loaded_by_the_guide_as_compare_took_it_or_as_the_table_shows_it(regression_study):
    result, _, _ = regression_study
    by_spec, by_label = result.load("auto:AutoNormal", seed=0), result.load("auto-AutoNormal", seed=0)
    assert [type(part) for part in by_spec] == [type(part) for part in by_label]
    assert torch.equal(by_spec[2].train, by_label[2].train)


def test_a_weighted_reference_says_which_draws_were_weighted():
    """A tester's export read "from weighted AIS states" where the reference was the fitted Gaussian's draws."""
    assert "fitted Gaussian reference" in weighted_source({"method": "ais", "source": "reference_draws", "draws": 2048})
    assert "AIS chains' final states" in weighted_source({"method": "ais", "source": "chains"})
    assert "grid points" in weighted_source({"method": "quadrature", "grid_points": 576})
