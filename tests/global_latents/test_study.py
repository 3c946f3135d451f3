"""A model with global and per-point latents end to end: the command line, BDMC, NUTS, figures, the notebook API."""

import json

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import elbogap
from elbogap.config import Config
from elbogap.errors import UsageError
from elbogap.global_latents.data import held_out, study_data
from elbogap.global_latents.second_start import STARTS
from elbogap.inference.weights import group_spread_dof, interval_halfwidth
from elbogap.records import SHARED_METRICS
from tests.global_latents import truth
from tests.results_reference import undocumented

PROGRAM = '''
import pyro
import pyro.distributions as dist


def model(data):
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 1.0))
    with pyro.plate("data", data.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, 0.3))
        pyro.sample("y", dist.Normal(z, 0.5), obs=data[:, 0])
'''

FAST = ["--steps", "600", "--lr", "0.05", "--evidence-steps", "100", "--evidence-chains", "256", "--iw-samples",
        "500", "--jobs", "1", "--seeds", "0", "-q"]


@pytest.fixture
def study(tmp_path):
    (tmp_path / "mixed.py").write_text(PROGRAM)
    data = truth.mixed_data(6, seed=5, z_scale=0.3)
    np.savetxt(tmp_path / "y.csv", data.numpy(), delimiter=",")
    _, cov = truth.mixed_posterior(data[:, 0].double(), 1.0, 0.3, 0.5)
    # z_i stays close to mu: the posterior couples them, and the factorized family pays 0.64 nats for it
    mean_field_kl = truth.best_factorized_gaussian_kl(torch.linalg.inv(cov))
    return tmp_path, truth.mixed_log_evidence(data[:, 0].double(), 1.0, 0.3, 0.5), mean_field_kl


@pytest.mark.slow  # about 30 s; in CI test_the_notebook_api_takes_a_pyro_function_and_a_tensor: this model
def test_a_model_with_global_and_per_point_latents_end_to_end_with_bdmc_and_nuts(study, elbogap):
    folder, exact, mean_field_kl = study
    out = folder / "out"
    code, err = elbogap("compare", "--model", folder / "mixed.py:model", "--data", folder / "y.csv", "--guides",
                        "auto:AutoNormal,auto:AutoMultivariateNormal", "--bdmc", "1", "--reference", "nuts",
                        "--nuts-warmup", "60", "--nuts-samples", "100", "--out", out, *FAST)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    mean_field, full = (run for run in results["runs"])
    for run in (mean_field, full):
        data = run["train"]
        assert run["kind"] == "global" and data["num_points"] == 6 and data["rows"] == "every row of y.csv"
        assert abs(data["log_px"] - exact) < 4 * data["log_px_stderr"] + 0.05
        assert data["log_px_dof"] == pytest.approx(group_spread_dof(run["evidence"]["chains"]))
        assert data["kl_gap"] == pytest.approx(data["log_px"] - data["elbo"])
        assert run["sites"] == {"global": ["mu"], "local": ["z"], "shapes": {"mu": [], "z": [6]}, "latent_dim": 7}
        assert run["reference"]["method"] == "nuts" and set(run["reference"]["sites"]) == {"mu", "z"}
        assert run["reference"]["coordinates"] == "unconstrained" and "sites_constrained" in run["reference"]
        assert run["bdmc"]["datasets"] == 1 and len(run["bdmc"]["per_dataset"]["upper"]) == 1
    # the full-rank family holds the Gaussian posterior; the factorized one pays the closed-form KL
    assert full["train"]["kl_gap"] < mean_field["train"]["kl_gap"] - 3 * mean_field["train"]["kl_gap_stderr"]
    assert abs(full["train"]["kl_gap"]) < 4 * full["train"]["kl_gap_stderr"] + 0.05
    assert abs(mean_field["train"]["kl_gap"] - mean_field_kl) < 4 * mean_field["train"]["kl_gap_stderr"] + 0.05
    assert mean_field["evidence"] == full["evidence"]  # one evidence per study, shared by the guides
    for figure in ("marginals.png", "gaps.png", "evidence.png", "training.png"):
        assert (out / figure).is_file()
    table = (out / "results.md").read_text()
    assert "The evidence and each guide's KL gap" in table and "BDMC" in table
    data = mean_field["train"]
    halfwidth = float(interval_halfwidth(data["log_px_stderr"], data["log_px_dof"]))
    assert halfwidth > 1.96 * data["log_px_stderr"]  # AIS's error has few degrees of freedom
    assert f"| {data['log_px'] - halfwidth:.3f}, {data['log_px'] + halfwidth:.3f} |" in table


def prior_guide(data):
    """A guide program with no parameters: the model's prior."""
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 1.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("z", dist.Normal(mu, 1.0))


def test_the_notebook_api_takes_a_pyro_function_and_a_tensor(tmp_path):
    """Beside an autoguide, a guide program with no parameters (it raised in training: nothing asked for a
    gradient) is evaluated as it is."""
    data = truth.mixed_data(6, seed=5)
    result = elbogap.compare(truth.mixed_model(), {"auto:AutoNormal": "auto:AutoNormal", "prior": prior_guide},
                             data, out=tmp_path, steps=300, lr=0.05, evidence_start="prior", evidence_steps=100,
                             evidence_chains=128, iw_samples=200, reference="none", jobs=1)  # log p(D): its quickest
    row, prior = result.table()
    assert row["guide"] == "auto-AutoNormal" and row["kl_gap"] > 0 and "log_px" in row
    assert prior["guide"] == "prior" and prior["log_px"] == row["log_px"] and prior["kl_gap"] > row["kl_gap"]
    fixed = result.runs[1]  # nothing to fit: no step taken, and said converged by no rule rather than judged
    assert fixed["steps"] == 0 and fixed["converged"] is True and fixed["convergence"]["rule"] == "none"
    assert (row["log_px_total"], row["kl_gap_total"]) == (row["log_px"], row["kl_gap"])  # D is one unit
    assert "KL gap" in result._repr_markdown_()
    with pytest.raises(UsageError, match="no per-point numbers"):  # its records hold no split over points
        result.points()
    given = elbogap.load(tmp_path)["auto-AutoNormal-seed0"].log_likelihood.attrs["given"]
    assert "each row's own latents (z)" in given  # a tester's az.loo read 9 nats above the exact one, unsaid
    results = json.loads((tmp_path / "results.json").read_text())
    assert undocumented(results) == set()  # docs/results.md has each
    run = results["runs"][0]
    assert SHARED_METRICS <= set(run["train"]) and run["train"]["units"] == 1  # a per-point split's names, one unit
    assert "data" not in run and "train" in results["summary"] and "data" not in results["summary"]


@pytest.mark.slow  # about 25 s
def test_held_out_rows_get_their_exact_log_predictive_density(tmp_path, monkeypatch):
    """Both evidences it subtracts draw from their own streams (before, one stream: their errors were not
    independent, as the held-out error assumes)."""
    from elbogap import streams

    seeded, real = [], streams.seeded
    monkeypatch.setattr(streams, "seeded", lambda name, seed: (seeded.append(name), real(name, seed))[1])
    data = truth.regression_data(16, 2, seed=6)
    result = elbogap.compare(truth.regression_model(), ["auto:AutoMultivariateNormal"], data, out=tmp_path,
                             steps=800, lr=0.05, holdout=0.25, evidence_steps=100, evidence_chains=256,
                             iw_samples=1000, reference="none", jobs=1)
    held = held_out(16, 0.25, 0)
    kept = torch.ones(16, dtype=torch.bool)
    kept[held] = False
    train, test = data[kept].double(), data[held].double()
    both = torch.cat([train, test])
    exact = (truth.regression_log_evidence(both[:, :-1], both[:, -1], 1.0, 1.0)
             - truth.regression_log_evidence(train[:, :-1], train[:, -1], 1.0, 1.0))
    run = result.runs[0]
    assert run["train"]["num_points"] == 12 and run["test"]["num_points"] == 4
    assert run["train"]["held_out_rows"] == held.tolist()  # which rows, not only how many
    assert abs(run["test"]["log_predictive"] - exact) < 4 * run["test"]["log_predictive_stderr"] + 0.05
    assert abs(run["test"]["log_predictive_q"] - exact) < 4 * run["test"]["log_predictive_q_stderr"] + 0.05
    assert "Held-out rows" in result._repr_markdown_()
    assert "; train KL gap by guide: auto-AutoMultivariateNormal" in repr(result)  # the split the table reads
    start = run["warm_start"]  # from the mean-field fit, with the curvature's covariance: it raised the ELBO
    assert start["covariance"] == "expected curvature" and start["elbo_gain"] > 2 * start["elbo_gain_stderr"], start
    assert "with the covariance of q's expected curvature there" in (tmp_path / "results.md").read_text()
    assert undocumented(json.loads((tmp_path / "results.json").read_text())) == set()  # the held-out keys too
    assert "evidence" in seeded and "held_out_evidence" in seeded
    assert len(list((tmp_path / "shared").glob("evidence-*.pt"))) == 2


def test_a_fit_stopped_at_its_cap_is_flagged_in_the_table_the_warnings_and_the_csv(study, elbogap):
    """A cap of 30 steps stops the fit long before its ELBO settles: the run says it did not converge, in each place a
    reader looks; the evidence table labels its interval as covering AIS's mean, and the gap is against one log p(D)."""
    folder, *_ = study
    out = folder / "capped"
    code, err = elbogap("compare", "--model", folder / "mixed.py:model", "--data", folder / "y.csv", "--guides",
                        "auto:AutoNormal", "--steps", "30", "--reference", "none", "--jobs", "1", "--seeds", "0",
                        "--evidence-start", "prior", "--evidence-steps", "100", "--evidence-chains", "128",
                        "--iw-samples", "200", "--no-figures", "-q", "--out", out)  # AIS's quickest log p(D)
    assert code == 0, err
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["converged"] is False and run["convergence"]["rule"] == "plateau" and run["steps"] == 30
    table = (out / "results.md").read_text()
    assert "## Warnings" in table and "auto-AutoNormal seed 0 did not converge (plateau rule)" in table
    assert "| 1 | no |" in table  # the gap table's seeds and converged columns
    assert "covers what AIS gives on average" in table and "against one estimate of log p(D) per seed" in table
    header, row = (out / "results.csv").read_text().splitlines()[:2]
    assert dict(zip(header.split(","), row.split(","), strict=True))["converged"] == "False"


@pytest.mark.slow  # about 40 s; in CI tests/global_latents/test_stacked.py: stacked seeds at the closed form
def test_the_seeds_of_a_study_train_at_once_and_each_run_lands_on_its_familys_closed_form_gap(study, elbogap):
    """Two seeds of AutoNormal, AutoMultivariateNormal and the IAF, at the defaults (no training flag): each guide's
    seeds train as one program before the runs (seeds.py), the IAF's second fits too, each fit stops by its rule well
    before the cap, every run is evaluated as any run is and reaches its family's closed-form gap (0.64 nats for mean
    field, 0 for full rank and the IAF, which hold this Gaussian posterior). The full-rank runs start at their seed's
    AutoNormal fit (fitted once per seed, kept in the record): that fit's ELBO is the closed-form mean-field optimum's,
    log p(D) - KL*, the run says where it started, and the full-rank fit, at its own optimum above it, is not
    warned."""
    folder, exact, mean_field_kl = study
    out = folder / "seeds"
    code, err = elbogap("compare", "--model", folder / "mixed.py:model", "--data", folder / "y.csv", "--guides",
                        "auto:AutoNormal,auto:AutoMultivariateNormal,auto:AutoIAFNormal", "--reference", "none",
                        "--jobs", "2", "--seeds", "0,1", "--evidence-steps", "100", "--out", out)  # pilot's length
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["fits_at_once"] == {"auto-AutoNormal": 2, "auto-AutoMultivariateNormal": 2,
                                       "auto-AutoIAFNormal": 2}
    assert undocumented(results) == set()  # warm and second starts, stacked seeds: each key in docs/results.md
    for run in results["runs"]:
        best = mean_field_kl if run["guide"] == "auto-AutoNormal" else 0.0
        assert run["stacked_seeds"] == 2 and run["converged"] is True and run["steps"] < 20000
        if run["guide"] == "auto-AutoIAFNormal":  # its second fits trained at once as well
            assert run["second_start"]["fits_at_once"] == 2 and run["second_start"]["kept"] in STARTS
        assert abs(run["train"]["kl_gap"] - best) < max(0.05, 4 * run["train"]["kl_gap_stderr"]), run["train"]["kl_gap"]
        if run["guide"] == "auto-AutoMultivariateNormal":  # started at its seed's mean-field fit, the three at once
            assert run["warm_start"]["from"] == "auto:AutoNormal" and run["convergence"]["start_level"] is not None
            check = run["train"]["mean_field_check"]
            assert check["fits_at_once"] == 2 and check["family"] == "auto:AutoNormal" and check["converged"]
            assert abs(check["elbo"] - (exact - mean_field_kl)) < max(0.05, 4 * check["elbo_stderr"]), check
            assert "mean_field_fit" in run["seconds"]
    table = (out / "results.md").read_text()
    assert "auto-AutoMultivariateNormal started at each seed's AutoNormal fit" in table
    assert "mean-field fit" not in table
    assert elbogap("compare", "--model", folder / "mixed.py:model", "--data", folder / "y.csv", "--guides",
                   "auto:AutoNormal", "--seeds", "0,1", "--out", out, "-q")[0] == 2  # a finished study is kept


def test_held_out_rows_are_named_by_position(tmp_path):
    """``--holdout`` says which rows it kept out of D, not only how many: their positions among the rows read."""
    (tmp_path / "mean.py").write_text(
        "import pyro, pyro.distributions as dist\n"
        "def model(data):\n"
        "    mu = pyro.sample('mu', dist.Normal(data.new_tensor(0.0), 1.0))\n"
        "    with pyro.plate('rows', data.shape[0]):\n"
        "        pyro.sample('y', dist.Normal(mu, 1.0), obs=data[:, 0])\n")
    np.savetxt(tmp_path / "y.csv", np.arange(20.0)[:, None], delimiter=",")
    data = study_data(Config(model=f"{tmp_path / 'mean.py'}:model", data=str(tmp_path / "y.csv"), holdout=0.25))
    assert data.held_out == tuple(held_out(20, 0.25, 0).tolist()) and len(data.held_out) == 5
    assert data.test[:, 0].tolist() == [float(row) for row in data.held_out]  # the file's rows, in its order
