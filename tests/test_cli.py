"""The command line end to end, as a user runs it: its real worker processes, real files (``main`` is called in this
process, where a traceback fails the test)."""

import json
import shutil

import numpy as np
import pytest
from matplotlib.image import imread

from elbogap.cli import main
from elbogap.points import load_points
from elbogap.records import SHARED_METRICS
from tests.results_reference import undocumented

QUICK = ["--jobs", "1", "--steps", "40", "--batch-size", "64", "--train-size", "400", "--test-size", "100",
         "--eval-samples", "16", "--quadrature-points", "16",
         "--hidden-dims", "16", "--curve-points", "32", "--gap-points", "8", "--ais-steps", "20", "--ais-chains", "4",
         "--leapfrog-steps", "2", "--eval-every", "20", "--quiet", "--no-figures"]


def test_compare_writes_results_with_every_metric(tmp_path, capfd):
    """The default path: one worker process per core (at most one per run), each serving run after run;
    --quiet shows no phase of any run, and no run writes where it is."""
    from elbogap.backends import local_jobs
    from elbogap.config import Config

    out = tmp_path / "results"
    args = ["--guides", "diag,local", "--seeds", "0,1", "--out", str(out), *QUICK, "--jobs", "0",
            "--train-eval-points", "300"]
    assert main(["compare", *args]) == 0
    shown = capfd.readouterr()
    assert shown.out == "" and "evaluate" not in shown.err and "training" not in shown.err and "\r" not in shown.err
    assert not list(out.glob("runs/*/progress.json"))
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "versions", "runs", "summary", "seconds", "workers", "complete"}
    assert undocumented(results) == set()  # every key is in docs/results.md
    start = (out / "runs" / "local-seed1" / "train.log").read_text().splitlines()[0]
    assert '"guide": "local"' in start and '"seed": 1' in start  # the run's own settings (it read diag, 0)
    workers = local_jobs(Config(guides=["diag", "local"], seeds=[0, 1]))
    assert results["workers"] == workers and len({run["where"]["pid"] for run in results["runs"]}) == workers
    assert set(results["seconds"]) == {"runs", "total"} and results["seconds"]["total"] > results["seconds"]["runs"]
    assert results["config"]["guides"] == ["diag", "local"] and results["versions"]["pyro"]
    assert [(run["guide"], run["seed"]) for run in results["runs"]] == [
        ("diag", 0), ("diag", 1), ("local", 0), ("local", 1)]
    for run in results["runs"]:
        assert run["train_seconds"] > 0 and run["compiled_loss"]
        assert {"train", "curve_evaluations", "evaluate_train", "gaps_train", "evaluate_test", "gaps_test"} <= set(
            run["seconds"])
        assert (run["train"]["num_points"], run["train"]["split_points"]) == (
            (300, 400) if run["guide"] == "diag" else (400, 400))  # a per-datapoint guide is evaluated whole
        for split in ("train", "test"):
            metrics = run[split]
            assert SHARED_METRICS <= set(metrics) and metrics["units"] == metrics["num_points"]  # one schema
            for key in ("log_px", "log_px_stderr", "elbo", "elbo_stderr", "recon", "kl_prior", "kl_gap"):
                assert np.isfinite(metrics[key]), key
            assert metrics["log_px_method"] == "quadrature"
            assert metrics["kl_gap"] == pytest.approx(metrics["log_px"] - metrics["elbo"])
    assert (out / "results.csv").read_text().count("\n") == 1 + 4 * 2
    assert (out / "runs" / "diag-seed1" / "checkpoint.pt").is_file()
    log = (out / "runs" / "local-seed0" / "train.log").read_text()
    assert log.count("step 40 ") == 1 and "seconds train=" in log
    assert "model vae: latent site z (2 per data point)" in log  # the model that ran
    assert "test_log_px_points=100 test_log_px=" in log and "test_elbo_log_px_points=" in log
    table = (out / "results.md").read_text()
    assert "| diag |" in table and "| local |" in table and "±" in table and "quadrature" in table
    assert "Total time" in table and "Summed over runs: training" in table
    for run in results["runs"]:  # the gradient's signal-to-noise at the end and at each evaluation during training
        assert run["snr_encoder"] > 0 and run["snr_decoder"] > 0 and run["snr_draws"] == 16
        assert all(point["snr_encoder"] > 0 for point in run["curve_eval"]) and "gradient_snr" in run["seconds"]
    assert {row["guide"] for row in results["summary"]["gradient_snr"]} == {"diag", "local"}
    assert "## Gradient signal-to-noise at the end of training" in table and "gradient SNR" in table


def test_compare_on_linear_gaussian_reports_exact_numbers(tmp_path):
    out = tmp_path / "linear"
    code = main(["compare", "--data", "linear-gaussian", "--model", "linear", "--guides", "diag,exact",
                 "--seeds", "3", "--out", str(out), *QUICK])
    assert code == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    exact = runs[1]["test"]
    assert exact["log_px_method"] == "exact" and exact["kl_exact"] == pytest.approx(0.0, abs=1e-5)
    assert runs[0]["test"]["kl_gap"] == pytest.approx(runs[0]["test"]["kl_exact"],
                                                      abs=4 * runs[0]["test"]["kl_gap_stderr"])


def test_compare_reads_a_users_npz_with_its_own_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", train=rng.normal(size=(60, 3)), test=rng.normal(size=(20, 3)))
    out = tmp_path / "out"
    assert main(["compare", "--data", str(tmp_path / "data.npz"), "--guides", "full", "--seeds", "0",
                 "--latent-dim", "3", "--iw-samples", "32", "--out", str(out), *QUICK]) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    test = run["test"]
    assert test["num_points"] == 20 and test["log_px_method"] == "ais" and test["log_px_points"] == 20
    assert test["log_px_iwae_samples"] == 32 and test["gap_log_px_method"] == "ais"


@pytest.mark.parametrize(("args", "message"), [
    (["--guides", "diag,gaussian"], "unknown guide 'gaussian'; choose from diag, exact, full"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--model", "mine.py"], "the model 'mine.py' names a file but not the program in it; write mine.py:NAME"),
    (["--data", "nothere.npy"], "does not exist"),
    (["--data", "mnist"], "--data mnist needs --data-dir"),
    (["--data", "cifar"], "unknown data 'cifar'"),
    (["--binarize", "sometimes"], "unknown --binarize"),
    (["--config", "missing.toml"], "does not exist"),
    (["--guides", "exact"], "closed-form posterior"),
    (["--latent-dim", "0"], "--latent-dim must be at least 1"),
    (["--seeds", "0,,1"], "'0,,1' has an empty item"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--likelihood", "gaussian", "--model", "linear", "--data", "digits", "--guides", "diag",
      "--latent-dim", "0"], "--latent-dim"),
    (["--gradient", "stl", "--objective", "iwae"], "use --gradient dreg with iwae"),
    (["--gradient", "dreg"], "use --objective iwae with dreg"),
    (["--gradient", "dreg", "--objective", "meanfield"], "use --objective iwae with dreg"),
    (["--gradient", "stl", "--guides", "diag,planar"], "the planar flow has no inverse"),
    (["--gradient", "stl", "--guides", "sylvester"], "the sylvester flow has no inverse"),
    (["--gradient", "dreg", "--objective", "iwae", "--guides", "mixture"], "summed over components"),
])
def test_bad_input_gets_one_line_and_exit_status_2(args, message, tmp_path, elbogap):
    code, stderr = elbogap("compare", *args, "--out", tmp_path / "o", *QUICK)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1


GUIDE_PROGRAM = """
import pyro
import pyro.distributions as dist
import torch


def guide(x):
    loc = pyro.param("program_loc", torch.zeros(2))
    with pyro.plate("data", len(x)):
        return pyro.sample("z", dist.Normal(loc, 1.0).expand([len(x), 2]).to_event(1))
"""


def test_a_guide_program_is_refused_sticking_the_landing_in_one_line(tmp_path, elbogap):
    (tmp_path / "mine.py").write_text(GUIDE_PROGRAM)
    code, stderr = elbogap("compare", "--gradient", "stl", "--guides", f"diag,{tmp_path}/mine.py:guide",
                           "--out", tmp_path / "o", *QUICK)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "elbogap cannot detach a guide program's parameters" in stderr and "--gradient reparam" in stderr
    assert not (tmp_path / "o" / "runs").exists()  # refused before any training


def test_compare_sticks_the_landing_with_compiled_losses(tmp_path):
    out = tmp_path / "stl"
    assert main(["compare", "--gradient", "stl", "--guides", "diag,full,iaf", "--seeds", "0", "--out", str(out),
                 *QUICK]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["gradient"] == "stl"
    for run in results["runs"]:
        assert run["compiled_loss"] is True, run["guide"]  # stl keeps Pyro's JitTrace_ELBO
        test = run["test"]
        assert test["kl_gap"] == pytest.approx(test["log_px"] - test["elbo"]) and "approx_gap" in test


def test_compare_trains_the_importance_weighted_bound_with_dreg(tmp_path):
    out = tmp_path / "dreg"
    assert main(["compare", "--objective", "iwae", "--particles", "10", "--gradient", "dreg", "--guides", "diag,iaf",
                 "--seeds", "0", "--out", str(out), *QUICK]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    for run in runs:
        assert run["compiled_loss"] is False  # a traced graph would not keep DReG's hooks
        assert run["test"]["kl_gap"] == pytest.approx(run["test"]["log_px"] - run["test"]["elbo"])
    assert "(iwae objective, K = 10, dreg gradient)" in (out / "results.md").read_text()


def test_non_binary_data_with_a_bernoulli_likelihood_suggests_the_fix(tmp_path, elbogap):
    np.save(tmp_path / "real.npy", np.random.default_rng(0).normal(size=(30, 4)))
    code, stderr = elbogap("compare", "--data", tmp_path / "real.npy", "--likelihood", "bernoulli",
                           "--out", tmp_path / "o", *QUICK)
    assert code == 2 and "--likelihood gaussian" in stderr


def test_train_evaluate_and_plot_a_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    study = tmp_path / "study.toml"
    study.write_text('guide = "iaf"\nseed = 4\nsteps = 1000\nlatent_dim = 2\n')
    args = ["train", "--config", str(study), "--steps", "40", "--out", str(run_dir), *QUICK[4:-1], "--figures",
            "--eval-every", "0"]  # the default: a tenth of the steps
    assert main(args) == 0
    for name in ("checkpoint.pt", "run.json", "train.log", "results.json", "results.csv", "results.md",
                 "config.toml", "training.png", "gaps.png", "posteriors.png", "images.png"):
        assert (run_dir / name).is_file(), name
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["guide"] == "iaf" and record["config"]["steps"] == 40  # the flag beat the file
    report = (run_dir / "results.md").read_text()
    assert "; seeds 4." in report and report.startswith("# elbogap train: ")  # its seed; the command (was compare)
    assert json.loads((run_dir / "results.json").read_text())["complete"] is True
    assert record["run"]["steps"] == 40 and len(record["run"]["curve_eval"]) == 10
    assert "snr_encoder" in record["run"] and all("snr_decoder" in point for point in record["run"]["curve_eval"])
    assert imread(run_dir / "training.png").shape[1] == round(16.5 * 110)  # three panels: the third is the SNR

    capsys.readouterr()
    saved_points = (run_dir / "points.npz").read_bytes()
    assert main(["evaluate", str(run_dir), "--eval-samples", "32", "--quadrature-points", "16"]) == 0
    assert (run_dir / "points.npz").read_bytes() == saved_points  # the run's own, as run.json is
    assert len(load_points(run_dir / "evaluation-points.npz")["test"]["elbo"]) == record["run"]["test"]["num_points"]
    stdout = capsys.readouterr().out
    gap_split = stdout[stdout.index("## approximation vs amortization"):]
    assert "| approximation gap | amortization gap |" in gap_split and "±" in gap_split.split("\n### train")[0]
    printed = json.loads(stdout.strip().splitlines()[-1])["test"]
    assert {"approx_gap_stderr", "amort_gap_stderr", "elbo_log_px_points"} <= set(printed)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["test"]["elbo_samples"] == 32 and evaluation["guide"] == "iaf"
    assert "converged" in evaluation and evaluation["converged"] == record["run"]["converged"]  # the run's verdict
    assert "The quadrature's error of log p(x)" in stdout.split("## train")[0]  # the split's caveat, as compare's
    saved = record["run"]["test"]
    assert evaluation["test"]["log_px"] == pytest.approx(saved["log_px"], abs=1e-3)  # same model, exact quadrature

    (run_dir / "gaps.png").unlink()
    assert main(["plot", str(run_dir)]) == 0 and (run_dir / "gaps.png").is_file()


#: the tests that read :func:`trained_diag_run` share one xdist worker, so the run is trained once
ON_THE_TRAINED_RUN = pytest.mark.xdist_group("cli-trained-run")


@pytest.fixture(scope="module")
def trained_diag_run(tmp_path_factory):
    """``elbogap train`` with the default guide (diag) at the QUICK settings; tests that write into the run directory
    copy it first."""
    out = tmp_path_factory.mktemp("trained") / "first"
    assert main(["train", "--out", str(out), *QUICK]) == 0
    return out


@ON_THE_TRAINED_RUN
def test_saved_config_reruns_the_study(trained_diag_run, tmp_path):
    out = trained_diag_run
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.toml"), "--out", str(again), "--quiet"]) == 0
    first = json.loads((out / "results.json").read_text())["runs"][0]
    second = json.loads((again / "results.json").read_text())["runs"][0]
    assert first["test"]["elbo"] == second["test"]["elbo"]  # same seed, same configuration, same numbers


@pytest.mark.parametrize("command", [["evaluate", "no/such/run"], ["plot", "no/such/results"]])
def test_missing_directories_are_named(command, elbogap):
    """Run in this process, where a traceback would fail the test; the entry point is started as a subprocess, as
    users start it, in tests/calibration/test_study.py's SIGTERM tests."""
    code, stderr = elbogap(*command)
    assert code == 2 and "does not exist" in stderr and "Traceback" not in stderr


def test_fixed_model_mode_shares_log_px_across_guides_and_reports_the_gap_split(tmp_path):
    out = tmp_path / "fixed"
    assert main(["compare", "--mode", "fixed-model", "--guides", "diag,full", "--seeds", "0", "--gap-points", "8",
                 "--out", str(out), *QUICK[:-1], "--figures"]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert runs[0]["test"]["log_px"] == pytest.approx(runs[1]["test"]["log_px"], abs=1e-9)
    diag, full = (load_points(out / run["run_dir"])["test"] for run in runs)  # and each point's, so gaps pair
    assert np.array_equal(diag["log_px"], full["log_px"]) and not np.array_equal(diag["kl_gap"], full["kl_gap"])
    assert results["reference_runs"][0]["guide"] == "diag"
    for run in runs:
        curve = [p["test_log_px"] for p in run["curve_eval"]]
        assert max(curve) - min(curve) < 1e-9  # the model is frozen: its evidence does not move
        test = run["test"]
        assert test["approx_gap"] + test["amort_gap"] == pytest.approx(test["gap_kl"], abs=1e-9)
    assert "approximation vs amortization" in (out / "results.md").read_text()
    assert (out / "gap_over_training.png").is_file()


@ON_THE_TRAINED_RUN
def test_cross_evaluation_fits_another_family_to_a_saved_model(trained_diag_run, tmp_path, elbogap):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_diag_run, run_dir)  # trained with --guide diag, the default
    code, stderr = elbogap("evaluate", run_dir, "--guide", "iaf")
    assert code == 2 and "--refit" in stderr
    code, stderr = elbogap("evaluate", run_dir, "--guide", "iaf", "--refit", "--steps", "30", "--gap-points", "8",
                           "--eval-samples", "16", "--quadrature-points", "16", "--quiet")
    assert code == 0, stderr
    record = json.loads((run_dir / "evaluation-iaf.json").read_text())
    assert record["guide"] == "iaf" and record["trained_with"] == "diag" and "approx_gap" in record["test"]
    trained, refitted = load_points(run_dir), load_points(run_dir / "evaluation-points-iaf.npz")
    assert not np.array_equal(trained["test"]["elbo"], refitted["test"]["elbo"])  # its own file: diag's is kept
    assert np.array_equal(trained["test"]["log_px"], refitted["test"]["log_px"])  # quadrature: the same log p(x)


def test_no_jit_trains_uncompiled_and_a_resume_may_not_switch(tmp_path, elbogap):
    out = tmp_path / "eager"
    assert main(["train", "--guide", "diag", "--no-jit", "--out", str(out), *QUICK]) == 0
    assert json.loads((out / "results.json").read_text())["runs"][0]["compiled_loss"] is False
    code, stderr = elbogap("train", "--guide", "diag", "--resume", "--out", out, *QUICK)
    assert code == 2 and "jit" in stderr


def test_the_write_check_leaves_no_folder_it_made_and_keeps_one_that_was_there(tmp_path):
    from elbogap.cli import check_writable

    check_writable(tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()  # input refused after the check leaves no empty --out behind
    (tmp_path / "kept").mkdir()
    check_writable(tmp_path / "kept")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_a_study_in_out_is_not_written_over_without_resume_or_by_another_studys_resume(tmp_path, elbogap):
    """A tester's --resume with one guide of three, into an interrupted study's --out, exited 0 and rewrote its
    results.json and config.toml with that one run; without --resume, other guides than the study's would have done
    the same. Both are refused in one line, and the records stay."""
    out = tmp_path / "study"
    assert elbogap("compare", "--guides", "diag", "--seeds", "0", "--out", out, *QUICK)[0] == 0
    records = (out / "results.json").read_text()
    code, stderr = elbogap("compare", "--guides", "full", "--seeds", "0", "--out", out, *QUICK)
    assert code == 2 and "already holds a study's results; pass --resume" in stderr
    code, stderr = elbogap("compare", "--guides", "full", "--seeds", "0", "--resume", "--out", out, *QUICK)
    assert code == 2 and "has guides ['diag']; resume it with the same --guides" in stderr
    assert len(stderr.strip().splitlines()) == 1 and (out / "results.json").read_text() == records
    assert elbogap("compare", "--guides", "diag", "--seeds", "0", "--resume", "--out", out, *QUICK)[0] == 0
