"""elbogap calibrate end to end on a conjugate regression, whose every family's calibration is known in closed form."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

import elbogap
from elbogap.global_latents.autoguides import AUTOGUIDES
from tests.global_latents import truth
from tests.global_latents.truth import BREAKS_IN_TRAINING, REGRESSION

SIMULATIONS = 16
#: the tests that read :func:`regression_calibration` share one xdist worker, so the study is run once
ON_THE_STUDY = pytest.mark.xdist_group("calibration-study")


@pytest.fixture(scope="module")
def regression_calibration(tmp_path_factory):
    """Three correlated features (0.9): the covariates stay, y is drawn anew with the weights in each simulation."""
    out = tmp_path_factory.mktemp("calibrate")
    data = truth.regression_data(20, 3, seed=2, correlation=0.9)
    result = elbogap.calibrate(truth.regression_model(1.0, 1.0), ["auto:AutoNormal", "auto:AutoMultivariateNormal"],
                               data.numpy(), out=out, simulations=SIMULATIONS, calibration_draws=400)
    _, cov, precision = truth.regression_posterior(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    return result, data, cov, precision


@ON_THE_STUDY
def test_the_full_rank_family_holds_the_posterior_and_covers_ninety_percent(regression_calibration):
    result, _, _, _ = regression_calibration
    row = result.results["summary"]["auto-AutoMultivariateNormal"]
    assert row["fits"] == SIMULATIONS and row["converged"] == SIMULATIONS
    assert abs(row["coverage_90"] - 0.9) < 3 * row["coverage_90_stderr"] + 0.02
    assert row["sites"]["w"]["sbc_p_min"] > 1e-3  # a calibrated q fails this at most 0.3% of the time


@ON_THE_STUDY
def test_mean_field_covers_what_its_too_narrow_marginals_cover_in_closed_form(regression_calibration):
    """The best factorized Gaussian has the posterior's mean and sd 1/sqrt(Lambda_ii), below the marginal sd
    sqrt(Sigma_ii) here: its 90% interval holds the truth with probability 2 Phi(1.645 ratio) - 1 per element."""
    result, _, cov, precision = regression_calibration
    ratio = (1 / precision.diagonal().sqrt() / cov.diagonal().sqrt()).numpy()
    expected = float(np.mean(2 * norm.cdf(1.645 * ratio) - 1))
    row = result.results["summary"]["auto-AutoNormal"]
    assert expected < 0.6
    assert abs(row["coverage_90"] - expected) < 3 * row["coverage_90_stderr"] + 0.02
    assert row["sites"]["w"]["edge_share"] > 0.2  # ranks piled at the ends: q too narrow


@ON_THE_STUDY
def test_the_study_writes_its_records_and_figures(regression_calibration):
    result, data, _, _ = regression_calibration
    written = {path.name for path in result.out.iterdir()}
    assert {"results.json", "results.md", "ranks.png", "pvalues.png", "config.toml"} <= written
    saved = json.loads((result.out / "results.json").read_text())
    first = saved["simulations"][0]
    assert len(saved["simulations"]) == SIMULATIONS and len(first["truth"]["w"]) == 3
    assert len(first["fits"]["auto-AutoNormal"]["shares"]["w"]) == 3
    assert math.isfinite(first["fits"]["auto-AutoNormal"]["elbo"])
    assert [row["site"] for row in result.table()] == ["w", "w"]
    # each simulation draws its own weights from the prior N(0, 1): over 16 x 3 of them, mean 0 and sd 1
    weights = torch.tensor([simulation["truth"]["w"] for simulation in saved["simulations"]]).reshape(-1)
    assert abs(float(weights.mean())) < 3 / math.sqrt(len(weights)) and 0.6 < float(weights.std()) < 1.5


@ON_THE_STUDY
def test_elbogap_plot_redraws_the_studys_figures(regression_calibration, elbogap):
    """From results.json alone; it read the study as a compare study with no finished run (tester)."""
    result, *_ = regression_calibration
    for name in ("ranks.png", "pvalues.png"):
        (result.out / name).unlink()
    code, stderr = elbogap("plot", result.out)
    assert code == 0, stderr
    assert (result.out / "ranks.png").is_file() and (result.out / "pvalues.png").is_file()


@pytest.mark.slow  # about 35 s; in CI test_stacked_fits_and_worker_processes_share_a_study_with_gaps: gaps
def test_each_simulations_gap_is_sandwiched_and_mean_field_pays_its_closed_form_kl(tmp_path):
    """--calibration-gaps: the covariates are fixed, so every simulated posterior has one precision Lambda and the
    best factorized Gaussian's KL is the same closed form on each; the full-rank family's is 0."""
    data = truth.regression_data(20, 3, seed=2, correlation=0.9)
    result = elbogap.calibrate(truth.regression_model(1.0, 1.0), ["auto:AutoNormal", "auto:AutoMultivariateNormal"],
                               data.numpy(), out=tmp_path, simulations=4, calibration_draws=400,
                               calibration_gaps=True, evidence_steps=100)  # under the 400-temperature floor
    _, _, precision = truth.regression_posterior(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    mean_field_kl = truth.best_factorized_gaussian_kl(precision)
    summary = result.results["summary"]
    for guide, kl in (("auto-AutoNormal", mean_field_kl), ("auto-AutoMultivariateNormal", 0.0)):
        fits = [simulation["fits"][guide] for simulation in result.results["simulations"]]
        stderr = math.sqrt(sum(fit["kl_gap_stderr"] ** 2 for fit in fits)) / len(fits)
        assert abs(summary[guide]["mean_kl_gap"] - kl) < 3 * stderr + 0.05  # + what a converged fit may leave
    for simulation in result.results["simulations"]:  # the sandwich is tight: the reverse chains start exactly
        evidence = simulation["evidence"]
        assert evidence["upper"] - evidence["lower"] < 0.05 + 4 * evidence["lower_stderr"]
    assert (tmp_path / "gaps.png").is_file() and "mean KL gap" in (tmp_path / "results.md").read_text()


@pytest.mark.slow  # about 13 s; in CI test_stacked_fits_and_worker_processes_share_a_study_with_gaps: workers
def test_simulations_in_worker_processes_give_what_one_process_gives(elbogap, tmp_path):
    """Each simulation is seeded by its index alone: --jobs 2 (spawned workers, the user's file loaded in each)
    and --jobs 1 give the same truths, draws' ranks and ELBOs, fitting one at a time (--stacked-fits off)."""
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    saved = []
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        code, err = elbogap("calibrate", "--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv",
                            "--guides", "auto:AutoNormal", "--simulations", "3", "--calibration-draws", "200",
                            "--jobs", jobs, "--stacked-fits", "off", "--no-figures", "--out", out, "-q")
        assert code == 0, err
        saved.append(json.loads((out / "results.json").read_text()))
    assert [saved[0]["workers"], saved[1]["workers"]] == [1, 2]
    assert saved[0]["simulations"] == saved[1]["simulations"]


def test_an_amortized_encoder_is_calibrated_against_its_own_trained_model(tmp_path):
    """Per-point latents: each guide trains once, its trained linear-Gaussian model simulates 400 points, and the
    encoder's q(z | x) ranks each z*. The exact posterior is calibrated by construction (coverage 90% within 3
    s.e., uniform ranks); a diagonal q of a correlated posterior is too narrow, which SBC sees."""
    result = elbogap.calibrate("linear", ["exact", "diag"], "linear-gaussian", out=tmp_path, simulations=400,
                               steps=300, calibration_draws=400, jobs=1)
    rows = {row["guide"]: row for row in result.table()}
    exact = result.results["summary"]["exact"]
    assert abs(exact["coverage_90"] - 0.9) < 3 * exact["coverage_90_stderr"]
    assert rows["exact"]["sbc_calibrated"] and rows["exact"]["vsbc_symmetric"]
    assert not rows["diag"]["sbc_calibrated"] and rows["diag"]["vsbc_symmetric"]
    assert result.results["latents"] == "per point" and len(result.results["simulations"]) == 400
    assert "points simulated from its own trained model" in (tmp_path / "results.md").read_text()
    assert all("convergence" in run for run in result.results["runs"])  # its verdict's evidence, as compare keeps it


TWO_SITES = '''
import pyro
import pyro.distributions as dist


def model(x):
    with pyro.plate("data", x.shape[0]):
        rate = pyro.sample("rate", dist.Gamma(x.new_tensor(2.0), 1.0))
        weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(3)))
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(shift + rate[:, None] + weights[:, :2], 0.5).to_event(1), obs=x)
'''


def test_a_per_point_program_is_calibrated_per_latent_site_by_its_own_names(tmp_path):
    """A positive scalar site, a simplex of 3 and a 2-D real one: the table, the records and the export name each
    site, with its own elements (they read "z", all elements as one site, before); the simplex is ranked by its 3
    proportions, not the 2 numbers q is fitted in."""
    (tmp_path / "two.py").write_text(TWO_SITES)
    rates = np.random.default_rng(0).gamma(2.0, size=(200, 1))
    np.save(tmp_path / "two.npy", (rates + np.random.default_rng(1).normal(size=(200, 2))).astype("float32"))
    result = elbogap.calibrate(f"{tmp_path}/two.py:model", ["diag"], str(tmp_path / "two.npy"), out=tmp_path / "out",
                               simulations=40, steps=100, calibration_draws=100, jobs=1, gap_points=0, log_px="iwae",
                               snr_draws=0, eval_samples=16, iw_samples=16)
    sites = result.results["summary"]["diag"]["sites"]
    assert list(sites) == ["rate", "weights", "shift"] and [row["site"] for row in result.table()] == list(sites)
    assert [row["elements"] for row in result.table()] == [1, 3, 2]
    truths = np.array([simulation["fits"]["diag"]["truth"]["weights"] for simulation in result.results["simulations"]])
    np.testing.assert_allclose(truths.sum(-1), 1.0, atol=1e-5)
    exported = elbogap.load(result.out)["calibration-diag"]
    assert exported.sample_stats["u_shift"].shape == (1, 40, 2) and exported.prior["rate"].shape == (1, 40, 1)
    assert exported.prior["weights"].shape == (1, 40, 3)


def test_gaps_per_simulation_are_refused_for_per_point_latents(elbogap, tmp_path):
    code, err = elbogap("calibrate", "--model", "linear", "--data", "linear-gaussian", "--calibration-gaps",
                        "--simulations", "4", "--out", tmp_path / "out", "-q")
    assert code == 2 and "--calibration-gaps applies to models with global latents" in err


SUMMED = '''
import pyro
import pyro.distributions as dist


def model(data):
    b = pyro.sample("b", dist.Normal(data.new_tensor(0.0), 1.0))
    pyro.sample("total", dist.Normal(b * data.shape[0], 10.0), obs=data[:, -1].sum())
'''


def test_an_observation_that_is_not_one_value_per_row_is_refused_in_one_line(elbogap, tmp_path):
    (tmp_path / "summed.py").write_text(SUMMED)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    code, err = elbogap("calibrate", "--model", tmp_path / "summed.py:model", "--data", tmp_path / "rows.csv",
                        "--guides", "auto:AutoNormal", "--simulations", "3", "--jobs", "1", "--out", tmp_path / "out",
                        "-q")
    assert code == 2 and "not one value per row" in err and len(err.strip().splitlines()) == 1


def test_a_study_in_out_is_kept_unless_resumed_and_resuming_adds_the_rest(elbogap, tmp_path):
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    common = ["--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv", "--guides",
              "auto:AutoNormal", "--steps", "100", "--calibration-draws", "200", "--jobs", "1", "--no-figures", "--out",
              tmp_path / "out", "-q"]
    assert elbogap("calibrate", "--simulations", "2", *common)[0] == 0
    first = json.loads((tmp_path / "out" / "results.json").read_text())
    code, err = elbogap("calibrate", "--simulations", "3", *common)
    assert code == 2 and "pass --resume" in err
    assert elbogap("calibrate", "--simulations", "3", "--resume", *common)[0] == 0
    resumed = json.loads((tmp_path / "out" / "results.json").read_text())
    assert resumed["complete"] and resumed["planned"] == 3 and len(resumed["simulations"]) == 3
    assert resumed["simulations"][:2] == first["simulations"]  # seeded by index: the same as before the stop


def test_a_default_calibration_leaves_out_a_family_the_models_size_prices_out(elbogap, tmp_path, monkeypatch):
    """As compare does (tests/global_latents/test_autoguides.py): the IAF above its size (lowered here to 1 latent, the
    default being 1,000) is left out of the default guides, said on stderr, in results.json and in the Warnings."""
    iaf = AUTOGUIDES["AutoIAFNormal"]
    monkeypatch.setitem(AUTOGUIDES, "AutoIAFNormal", dataclasses.replace(iaf, default_up_to=1))
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    code, err = elbogap("calibrate", "--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv",
                        "--simulations", "2", "--steps", "100", "--calibration-draws", "200", "--jobs", "1",
                        "--no-figures", "--out", tmp_path / "out")
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["guides"] == ["auto-AutoNormal", "auto-AutoMultivariateNormal", "auto-AutoLowRankMultivariateNormal"]
    assert set(results["guides_left_out"]) == {"auto:AutoIAFNormal"}
    assert "auto:AutoIAFNormal is left out of the default guides: 2 latents are more than the 1 " in err
    assert "- auto:AutoIAFNormal is left out of the default guides" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.slow  # about 14 s; in CI test_sigterm_in_stacked_fits_keeps_each_fit_and_resume_goes_on_from_it stops one
@pytest.mark.parametrize("group", [False, True])  # True: a scheduler's SIGTERM to every process of the study
def test_sigterm_stops_the_study_keeps_what_it_did_and_leaves_no_worker(group, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "elbogap.cli", "calibrate", "--model",
                                str(tmp_path / "regression.py:model"), "--data", str(tmp_path / "rows.csv"), "--guides",
                                "auto:AutoNormal", "--simulations", "200", "--jobs", "2", "--calibration-draws", "200",
                                "--stacked-fits", "off",
                                "--no-figures", "--out", str(out), "-q"], stderr=subprocess.PIPE, text=True,
                               start_new_session=group)
    def one_done() -> bool:  # results.json is written atomically after each simulation
        return (out / "results.json").is_file() and bool(json.loads((out / "results.json").read_text())["simulations"])

    while not one_done():  # the study runs until stopped: 200 simulations take minutes
        if process.poll() is not None:
            pytest.fail(f"the study ended before it was stopped: {process.stderr.read()}")
        time.sleep(0.5)
    children = [int(pid) for path in Path(f"/proc/{process.pid}/task").glob("*/children")
                for pid in path.read_text().split()]
    assert children  # the workers
    if group:  # the pool's workers die at once: the study still ends as stopped, not as a broken pool
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "with --resume to finish" in err, err
    saved = json.loads((out / "results.json").read_text())
    assert 0 < len(saved["simulations"]) < 200 and not saved["complete"]
    time.sleep(1)
    alive = []
    for pid in children:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if state != "Z":
                alive.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    assert not alive


def test_a_program_that_raises_in_a_simulation_stops_the_study_in_one_line_and_keeps_its_traceback(elbogap,
                                                                                                     tmp_path):
    (tmp_path / "breaks.py").write_text(BREAKS_IN_TRAINING)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    code, err = elbogap("calibrate", "--model", tmp_path / "breaks.py:model", "--data", tmp_path / "rows.csv",
                        "--guides", "auto:AutoNormal", "--simulations", "3", "--jobs", "1", "--out", tmp_path / "out",
                        "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "simulation 0" in err and "breaks.py:model raised RuntimeError: the likelihood broke" in err
    assert "Traceback" in (tmp_path / "out" / "calibrate.log").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["complete"] is False


BRANCHES = '''
import pyro
import pyro.distributions as dist


def model(data):
    w = pyro.sample("w", dist.Normal(data.new_zeros(data.shape[1] - 1), 1.0).to_event(1))
    if float(w.sum()) > 100:  # Python control flow on a latent's value: vmap cannot run it
        w = w / 2
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal((data[:, :-1] * w).sum(-1), 1.0), obs=data[:, -1])
'''


def test_fits_that_cannot_be_stacked_run_one_at_a_time_said_in_one_line(elbogap, tmp_path):
    (tmp_path / "branches.py").write_text(BRANCHES)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    code, err = elbogap("calibrate", "--model", tmp_path / "branches.py:model", "--data", tmp_path / "rows.csv",
                        "--guides", "auto:AutoNormal", "--simulations", "3", "--steps", "100", "--calibration-draws",
                        "200", "--jobs", "1", "--no-figures", "--out", tmp_path / "out")
    assert code == 0, err
    said = [line for line in err.splitlines() if "one fit at a time" in line]
    assert len(said) == 1 and "vmap cannot run the program" in said[0]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["fits_at_once"]["auto-AutoNormal"].startswith("one at a time: vmap cannot run the program")
    assert saved["complete"] and not any(fit.get("stacked") for simulation in saved["simulations"]
                                         for fit in simulation["fits"].values())


def test_sigterm_in_stacked_fits_keeps_each_fit_and_resume_goes_on_from_it(tmp_path):
    """Stopped while a guide's fits train at once: the stack's state (every fit's parameters, Adam, rate, schedule and
    generator) is kept in OUT/stacked-fits.pt, and --resume continues each fit from its step."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading

    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "elbogap.cli", "calibrate", "--model", str(tmp_path / "regression.py:model"),
               "--data", str(tmp_path / "rows.csv"), "--guides", "auto:AutoNormal", "--simulations", "10",
               "--calibration-draws", "200", "--jobs", "1", "--lr", "0.005", "--no-figures", "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,  # lr 0.005: a few thousand steps
                               env={**os.environ, "ELBOGAP_LOG_EVERY": "0.1"})  # bars into a pipe: redrawn at once
    seen, started = [], threading.Event()

    def read():  # the progress bar of the stacked fits counts their steps
        while chunk := process.stderr.read(64):
            seen.append(chunk)
            steps = re.findall(r"10 fits at once: (\d+)it", "".join(seen[-40:]))
            if steps and int(steps[-1]) >= 100:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "".join(seen)[-2000:]
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    reader.join(10)
    assert process.returncode == 128 + signal.SIGTERM, "".join(seen)[-2000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["simulations"] == [] and not saved["complete"] and (out / "stacked-fits.pt").is_file()
    resumed = subprocess.run([*command, "--resume", "-q"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    saved = json.loads((out / "results.json").read_text())
    fits = [simulation["fits"]["auto-AutoNormal"] for simulation in saved["simulations"]]
    assert saved["complete"] and len(fits) == 10 and not (out / "stacked-fits.pt").exists()
    assert all(fit["resumed_at_step"] >= 100 and fit["steps"] >= fit["resumed_at_step"] and fit["converged"]
               for fit in fits)


@ON_THE_STUDY
def test_the_study_exports_each_guides_ranks_and_true_latents_for_arviz(regression_calibration):
    """calibration-GUIDE.nc: the truths as prior draws (a draw per simulation), u per site in sample_stats."""
    import arviz as az

    result, _, _, _ = regression_calibration
    exported = elbogap.load(result.out)
    assert set(exported) == {"calibration-auto-AutoNormal", "calibration-auto-AutoMultivariateNormal"}
    data = exported["calibration-auto-AutoNormal"]
    saved = json.loads((result.out / "results.json").read_text())
    truths = np.array([simulation["truth"]["w"] for simulation in saved["simulations"]])
    shares = np.array([simulation["fits"]["auto-AutoNormal"]["shares"]["w"] for simulation in saved["simulations"]])
    assert np.allclose(data.prior["w"].values[0], truths) and np.allclose(data.sample_stats["u_w"].values[0], shares)
    assert data.sample_stats["elbo"].shape == (1, SIMULATIONS)
    assert float(data.sample_stats.attrs["coverage_90"]) == saved["summary"]["auto-AutoNormal"]["coverage_90"]
    assert az.summary(data, group="prior").shape[0] == 3


def test_stacked_fits_and_worker_processes_share_a_study_with_gaps(elbogap, tmp_path):
    """The guide's fits stack in the command's process; each simulation's evidence sandwich runs in a worker."""
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    out = tmp_path / "out"
    code, err = elbogap("calibrate", "--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv",
                        "--guides", "auto:AutoMultivariateNormal", "--simulations", "2", "--calibration-draws", "200",
                        "--calibration-gaps", "--evidence-steps", "100", "--jobs", "2", "--no-figures", "--out", out,
                        "-q")
    assert code == 0, err
    saved = json.loads((out / "results.json").read_text())
    assert saved["workers"] == 2 and saved["fits_at_once"] == {"auto-AutoMultivariateNormal": 2}
    for simulation in saved["simulations"]:  # full rank holds this Gaussian posterior: gap 0 within its error
        fit = simulation["fits"]["auto-AutoMultivariateNormal"]
        assert fit["stacked"] and abs(fit["kl_gap"]) < 4 * fit["kl_gap_stderr"] + 0.05
        # the reverse chains share one exact start, so the upper bound has no error bar of its own: 0.005 nats (a
        # quarter of the evidence's target s.e.) for its noise; at 400 temperatures one read 0.0014 under the lower
        assert simulation["evidence"]["upper"] >= simulation["evidence"]["lower"] - 4 * simulation["evidence"][
            "lower_stderr"] - 0.005


def test_a_fit_that_gave_up_on_nan_has_no_elbo_or_gap_and_the_summary_reads_the_others():
    from elbogap.calibration.study import fit_record, summarize

    verdict = {"converged": False, "reason": "a step's loss or parameters were not finite again"}
    draws = {"w": torch.zeros(50, 2)}
    broken = fit_record(draws, torch.full((50,), math.nan), {"w": np.zeros(2)}, verdict, 10)
    assert broken["elbo"] is None and broken["elbo_stderr"] is None and "not finite" in broken["convergence"]
    fine = [fit_record({"w": torch.randn(50, 2)}, torch.randn(50), {"w": np.zeros(2)}, {"converged": True}, 500)
            for _ in range(3)]
    for fit, gap in zip(fine, (0.1, 0.2, 0.3), strict=True):
        fit.update(kl_gap=gap, kl_gap_stderr=0.01, kl_gap_upper=gap + 0.05)
    summary = summarize([{"fits": {"g": fit}} for fit in [broken, *fine]])["g"]
    assert summary["mean_elbo"] is None and summary["gap_fits"] == 3 and summary["mean_kl_gap"] == pytest.approx(0.2)
    json.dumps(summary, allow_nan=False)
