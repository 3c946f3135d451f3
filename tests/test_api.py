"""The notebook API: the same numbers as the command line, from Python objects."""

import json

import pyro
import pytest
import torch

import elbogap
from elbogap.cli import main
from elbogap.config import Config
from elbogap.data import load_data
from elbogap.errors import UsageError
from elbogap.runs import load_run
from tests.conftest import optimal_diag_guide
from tests.test_programs import TUTORIAL_VAE

QUICK = {"steps": 40, "eval_samples": 8, "iw_samples": 16, "quadrature_points": 12, "gap_points": 4,
         "curve_points": 16, "hidden_dims": [16], "figures": False, "jobs": 1}
FLAGS = ["--steps", "40", "--eval-samples", "8", "--iw-samples", "16", "--quadrature-points", "12", "--gap-points",
         "4", "--curve-points", "16", "--hidden-dims", "16", "--no-figures", "--quiet", "--jobs", "1"]


def user_module(tmp_path):
    (tmp_path / "tutorial.py").write_text(TUTORIAL_VAE)
    import importlib.util

    loader = importlib.util.spec_from_file_location("tutorial_for_api", tmp_path / "tutorial.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def test_compare_returns_the_numbers_the_cli_writes(tmp_path, capfd):
    module = user_module(tmp_path)
    data = load_data("digits", train_size=150, test_size=40)
    x = torch.cat([data.train, data.test])
    capfd.readouterr()
    result = elbogap.compare(module.VAE, {"tutorial.VAE": module.VAE, "diag": "diag"}, (data.train, data.test),
                             out=tmp_path / "api", seeds=[0], **QUICK)
    assert capfd.readouterr() == ("", "")  # quiet unless asked (progress=True)
    assert [run["guide"] for run in result.runs] == ["tutorial.VAE", "diag"]
    saved = json.loads((tmp_path / "api" / "results.json").read_text())
    assert set(result.results) == set(saved) and "summary" in saved  # results.json's content (it lacked summary)
    assert len(x) == 190 and (tmp_path / "api" / "data.npz").is_file()

    cli_out = tmp_path / "cli"
    spec = f"{tmp_path}/tutorial.py:VAE"
    assert main(["compare", "--model", spec, "--guides", f"{spec},diag", "--data", str(tmp_path / "api" / "data.npz"),
                 "--seeds", "0", "--out", str(cli_out), *FLAGS]) == 0
    cli_runs = json.loads((cli_out / "results.json").read_text())["runs"]
    for api_run, cli_run in zip(result.runs, cli_runs, strict=True):
        for split in ("train", "test"):
            for key in ("elbo", "log_px", "kl_gap", "recon"):
                assert api_run[split][key] == cli_run[split][key], (api_run["guide"], split, key)

    rows = result.table()
    assert [row["elbo"] for row in rows] == sorted((row["elbo"] for row in rows), reverse=True)
    for row in rows:  # a row subtracts within itself, each mean with its Monte-Carlo standard error
        assert row["log_px"] - row["elbo_log_px_points"] == pytest.approx(row["kl_gap"])
        assert row["kl_gap_mc_stderr"] > 0 and row["log_px_points"] == row["num_points"] == 40
        assert row["log_px_total"] == pytest.approx(40 * row["log_px"])  # log p(x) of the 40 points together
    diag = next(row for row in rows if row["guide"] == "diag")
    assert diag["approx_gap_mc_stderr"] > 0 and diag["amort_gap_mc_stderr"] > 0 and diag["gap_points"] == 4
    assert result.runs[0]["model"]["sites"]["latent"] == {"latent": [2]}
    assert ": latent site latent (2 per data point); observed obs" in result._repr_markdown_()
    assert {row["guide"] for row in rows} == {"tutorial.VAE", "diag"} and rows[0]["log_px_method"] == "quadrature"
    for row in rows:  # the training gradient's signal-to-noise, for the user's class as for a built-in guide
        assert row["snr_encoder"] > 0 and row["snr_decoder"] > 0 and row["snr_draws"] == 16
    assert "## test split" in result._repr_markdown_() and "Comparison(2 runs" in repr(result)
    saved = result.to_json(tmp_path / "copy.json")
    assert json.loads(saved.read_text())["runs"][0]["guide"] == "tutorial.VAE"


def test_evaluate_takes_a_trained_pair_of_programs(tmp_path):
    module = user_module(tmp_path)
    data = load_data("digits", train_size=150, test_size=40)
    result = elbogap.compare("vae", ["diag"], (data.train, data.test), out=tmp_path / "api", seeds=[0], **QUICK)
    _, loaded, model, guide, _ = load_run(result.out / "runs" / "diag-seed0")
    evaluation = elbogap.evaluate(model, guide, loaded.test, elbo_samples=8, iw_samples=16, quadrature_points=12)
    assert abs(evaluation.metrics["elbo"] - result.runs[0]["test"]["elbo"]) < 6 * evaluation.metrics["elbo_stderr"]

    vae = module.VAE()  # untrained, as a user holds it: bound methods in, metrics out
    pyro.clear_param_store()
    evaluation = elbogap.evaluate(vae.model, vae.guide, loaded.test, elbo_samples=8, iw_samples=16,
                                  quadrature_points=12)
    assert evaluation.metrics["log_px_method"] == "quadrature" and evaluation.metrics["kl_gap"] > 0
    assert evaluation.per_point["elbo"].shape == (40,)
    low, high = evaluation.interval("log_px_iwae")  # 16 draws: about 6 degrees of freedom, +- 2.47 s.e.
    assert low.shape == (40,) and evaluation.dof["log_px_iwae"] == pytest.approx(5.76, abs=0.01)


@pytest.mark.parametrize("settings", [{"jobs": 2}, {"backend": "ray"}])
def test_python_objects_are_refused_on_backends_that_run_elsewhere(tmp_path, settings):
    module = user_module(tmp_path)
    with pytest.raises(UsageError, match="lives in this process only.*file.py:name"):
        elbogap.compare(module.VAE, {"mine": module.VAE}, "digits", out=tmp_path / "o", **{**QUICK, **settings})
    assert not (tmp_path / "o" / "runs").exists()


def test_the_gradient_estimator_is_a_keyword_checked_before_any_training(tmp_path):
    with pytest.raises(UsageError, match="use --gradient dreg with iwae"):
        elbogap.compare("vae", ["diag"], out=tmp_path / "o", objective="iwae", gradient="stl", **QUICK)
    assert not (tmp_path / "o" / "runs").exists()


def test_evaluate_anneals_as_the_command_line_does_by_default(linear_model, linear_data):
    """The notebook's ``evaluate`` takes the command line's AIS settings (from each point's posterior modes, 500
    temperatures x 16 chains), not the library's ``AISSettings()`` (from the prior), and lands on the exact log p(x)."""
    guide = optimal_diag_guide(linear_model)
    evaluation = elbogap.evaluate(linear_model, guide, linear_data[:1], log_px="ais", elbo_samples=16, iw_samples=16)
    metrics = evaluation.metrics
    assert metrics["ais"]["init"] == "laplace" and metrics["ais"]["steps"] == Config.ais_steps
    exact = float(linear_model.log_px(linear_data[:1]).mean())
    assert abs(metrics["log_px"] - exact) < 4 * metrics["log_px_stderr"]


def test_evaluate_refuses_a_model_with_global_latents_naming_what_judges_it():
    """Before, a regression's weight was refused as a per-point model's site outside its plate ("make it a
    parameter"), which contradicts the rest of the tool."""
    def regression(data):
        weight = pyro.sample("weight", pyro.distributions.Normal(data.new_tensor(0.0), 1.0))
        with pyro.plate("rows", data.shape[0]):
            pyro.sample("y", pyro.distributions.Normal(weight * data[:, 0], 1.0), obs=data[:, 1])

    def guide(data):
        pyro.sample("weight", pyro.distributions.Normal(data.new_tensor(0.0), 1.0))

    with pytest.raises(UsageError, match=r"global latents.*elbogap\.compare") as refused:
        elbogap.evaluate(regression, guide, torch.randn(20, 2))
    assert "make it a parameter" not in str(refused.value)
