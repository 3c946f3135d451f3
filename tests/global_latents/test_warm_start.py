"""The seed's mean-field fit, and the families that contain it started from it (a conjugate regression: every
Gaussian q's KL to the posterior is a closed form)."""

import json

import pyro
import torch

from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.config import Config
from elbogap.data import Dataset
from elbogap.factory import for_data, make_trainer, warm_start
from elbogap.global_latents import curvature
from elbogap.global_latents.guides import GlobalAutoGuide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.stacked import flat_posterior
from elbogap.global_latents.warm_start import mean_field_fits, mean_field_settings, start_at
from elbogap.progress import as_progress
from tests.global_latents import truth
from tests.inference.test_convergence import conjugate_study


def family_kl(guide, mean, cov) -> float:
    q = flat_posterior(guide.auto)
    return truth.gaussian_kl(q.mean.detach().double(), q.covariance_matrix.detach().double(), mean, cov)


def started(name: str, tmp_path, data, setting: str = "mean-field"):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    guide = GlobalAutoGuide(name, model, data)
    config = Config(model="regression.py:model", guides=[f"auto:{name}"], warm_start=setting).validate()
    dataset = Dataset("regression", data, data[:0], kind="global")
    record, = warm_start(config, dataset, [(model, guide)], [0], [tmp_path / "out" / "runs" / name])
    return config, model, guide, dataset, record


def test_a_containing_family_starts_at_the_mean_field_optimum_and_ends_at_its_own(tmp_path):
    """Full rank and low rank (rank 2 of 3) start at the seed's AutoNormal fit's mean, full rank with the covariance of
    the expected curvature and low rank with its family's closest member of it: on this Gaussian posterior, which both
    hold, the posterior (KL near 0, the gain on the mean field recorded). Trained from there, each ends at its own
    optimum, and the fit is shared (one AutoNormal fit in OUT/shared for both)."""
    data, mean, cov, precision = conjugate_study()
    best_mean_field = truth.best_factorized_gaussian_kl(precision)
    assert best_mean_field > 0.5  # correlated features: the start is far from the end
    for name in ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal"):
        config, model, guide, dataset, record = started(name, tmp_path, data)
        assert record["from"] == "auto:AutoNormal" and record["check"]["converged"]
        start = family_kl(guide, mean, cov)
        assert record["covariance"] == "expected curvature" and start < 0.01, (record, start)
        assert abs(record["elbo_gain"] - best_mean_field) < 0.05 + 4 * record["elbo_gain_stderr"], record
        trainer = make_trainer(config, model, guide, dataset, seed=0, keep_start=True)
        trainer.run(20000)
        verdict = trainer.convergence(20000)
        assert verdict["converged"] and verdict["start_level"] is not None
        assert family_kl(guide, mean, cov) < 0.05, name
    assert len(list((tmp_path / "out" / "shared").glob("mean_field-*.pt"))) == 1
    assert len(list((tmp_path / "out" / "shared").glob("curvature-*.pt"))) == 1


def test_full_and_low_rank_of_a_seed_compute_one_curvature_and_start_as_each_would_alone(tmp_path, monkeypatch):
    """The expected curvature (16 d gradients of the whole data set's log joint; 4.5 s at 1,201 latents) is computed
    once per seed and kept in OUT/shared: low rank's start reads full rank's. Each start, the draws of its score
    included, is the one computed without the cache."""
    real, calls = curvature.precision_at, []
    monkeypatch.setattr(curvature, "precision_at", lambda *args: calls.append(args) or real(*args))
    data, *_ = conjugate_study()
    started_here = {name: started(name, tmp_path, data) for name in ("AutoMultivariateNormal",
                                                                      "AutoLowRankMultivariateNormal")}
    assert len(calls) == 1
    for name, (config, model, guide, dataset, record) in started_here.items():
        fit, = mean_field_fits(model, dataset, for_data(config, dataset), [0], [tmp_path / "out" / "runs" / name],
                               as_progress(False)).values()
        alone = GlobalAutoGuide(name, model, data)
        assert start_at(model, data, alone, fit, 0) == record  # no run directory: computed here
        for key, value in alone.auto.state_dict().items():
            assert torch.equal(value, guide.auto.state_dict()[key]), (name, key)
    assert len(calls) == 3


def test_low_rank_ends_at_its_familys_optimum_on_a_posterior_it_does_not_hold(tmp_path):
    """A 10-D Gaussian posterior of strongly correlated features, which rank 3 (Pyro's default for 10 latents) cannot
    hold: the fit, started at its family's closest member of the curvature's covariance and trained at the defaults,
    is called converged and ends within 0.05 nats of the family's optimum (its exact KL, no Monte Carlo: the plateau
    rule stops where a drop of the rate moves the ELBO's level by less than its tolerance, 0.02 nats, and the
    start's floor costs up to 0.003). From a small random factor beside the mean field it stopped 0.39 nats above
    the optimum, called converged (0.0082 from this start)."""
    data = truth.regression_data(300, 10, seed=1, correlation=0.9)
    features, targets = data[:, :-1].double(), data[:, -1].double()
    mean, cov, precision = truth.regression_posterior(features, targets, 1.0, 1.0)
    optimum = truth.best_low_rank_kl(precision, 3, starts=4)  # the 16 starts reach the same here
    assert truth.best_factorized_gaussian_kl(precision) - optimum > 2.0
    config, model, guide, dataset, record = started("AutoLowRankMultivariateNormal", tmp_path, data)
    assert record["covariance"] == "expected curvature"
    config = for_data(config, dataset)  # the defaults of a model with global latents
    cap = config.total_steps(len(data))
    trainer = make_trainer(config, model, guide, dataset, seed=0, keep_start=True)
    trainer.run(cap)
    assert trainer.convergence(cap)["converged"]
    assert family_kl(guide, mean, cov) < optimum + 0.05, (family_kl(guide, mean, cov), optimum)


def test_other_families_and_warm_start_off_start_where_pyro_starts_them(tmp_path):
    data, *_ = conjugate_study()
    for name, setting in (("AutoNormal", "mean-field"), ("AutoIAFNormal", "mean-field"),
                          ("AutoMultivariateNormal", "off")):
        _, _, guide, _, record = started(name, tmp_path, data, setting)
        assert record is None
    assert not (tmp_path / "out" / "shared").exists()


def test_the_seeds_mean_field_fits_train_at_once_and_each_reaches_the_closed_form_optimum(tmp_path):
    """Three seeds' AutoNormal fits, none in OUT/shared yet, train as one stacked program; each ends at the closed-form
    mean-field optimum, ELBO = log p(D) - KL* (within max(0.05, 4 s.e.)), and is kept for the runs of its seed; the
    caller's random state is left as it was."""
    data, mean, cov, precision = conjugate_study()
    optimum = truth.regression_log_evidence(data[:, :3].double(), data[:, 3].double(), 1.0, 1.0) \
        - truth.best_factorized_gaussian_kl(precision)
    pyro.clear_param_store()
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    config = Config(model="regression.py:model", guides=["auto:AutoMultivariateNormal"]).validate()
    dataset = Dataset("regression", data, data[:0], kind="global")
    runs = [tmp_path / "out" / "runs" / f"seed{seed}" for seed in range(3)]
    torch.manual_seed(7)
    before = torch.get_rng_state()
    fits = mean_field_fits(model, dataset, for_data(config, dataset), [0, 1, 2], runs, as_progress(False))
    assert torch.equal(torch.get_rng_state(), before)
    for seed, fit in fits.items():
        check = fit["check"]
        assert check["fits_at_once"] == 3 and check["converged"], check
        assert abs(check["elbo"] - optimum) < max(0.05, 4 * check["elbo_stderr"]), (seed, check, optimum)
    again = mean_field_fits(model, dataset, for_data(config, dataset), [1], runs[1:2], as_progress(False))
    assert torch.equal(again[1]["loc"], fits[1]["loc"])  # read from OUT/shared, not refitted


def test_the_fit_is_kept_per_training_setting_and_each_seed_trains_on_its_own_stream(tmp_path):
    """Two studies in one --out share a seed's fit only where every setting its trainer reads agrees; a seed's fit is
    the same whether it is asked for alone or with other seeds, one at a time (--stacked-fits off)."""
    base = mean_field_settings(Config(steps=1000), 100)
    for changed in ({"epochs": 3.0}, {"objective": "iwae"}, {"batch_size": 8}, {"lr_decay": 0.5}, {"lr": 0.01}):
        assert mean_field_settings(Config(steps=1000, **changed), 100) != base, changed
    assert mean_field_settings(Config(steps=1000, iw_samples=50, evidence_stderr=0.1), 100) == base  # evaluation
    data, *_ = conjugate_study()
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    config = Config(model="regression.py:model", guides=["auto:AutoMultivariateNormal"], stacked_fits="off",
                    steps=300).validate()  # short fits: the same fit or not is what is tested, not where they end
    dataset = Dataset("regression", data, data[:0], kind="global")
    resolved = for_data(config, dataset)
    together = mean_field_fits(model, dataset, resolved, [0, 1], [tmp_path / "a" / "runs" / f"s{s}" for s in (0, 1)],
                               as_progress(False))
    alone = mean_field_fits(model, dataset, resolved, [0], [tmp_path / "b" / "runs" / "s0"], as_progress(False))
    assert together[0]["check"]["fits_at_once"] == 1
    assert torch.equal(together[0]["loc"], alone[0]["loc"]) and not torch.equal(together[0]["loc"], together[1]["loc"])


def test_a_resumed_run_keeps_its_start_and_says_where_it_started(tmp_path):
    """The best state a kept start returns to is in the checkpoint; a checkpoint without a start (written before warm
    starts, or with --warm-start off) resumes as a run that was not started from one, whatever the setting now."""
    data, *_ = conjugate_study()
    config, model, guide, dataset, record = started("AutoMultivariateNormal", tmp_path, data)
    trainer = make_trainer(config, model, guide, dataset, seed=0, keep_start=True)
    trainer.run(120)
    state = trainer.state_dict()
    assert state["schedule_best"]["value"] >= trainer.schedule.start_level
    _, model2, guide2, _, _ = started("AutoMultivariateNormal", tmp_path, data)
    resumed = make_trainer(config, model2, guide2, dataset, seed=0, keep_start=True)
    resumed.load_state_dict(state)
    assert resumed.schedule.best_state()["value"] == state["schedule_best"]["value"]
    assert resumed.schedule.start_level == trainer.schedule.start_level


def test_a_checkpoint_from_before_warm_starts_resumes_as_a_run_that_did_not_start_from_one(tmp_path, elbogap):
    """A run saved before --warm-start existed (its config lacks the setting, its checkpoint the start) and
    re-evaluated now: its record says nothing of a warm start, as its guide never moved."""
    data, *_ = conjugate_study()
    truth.write_regression_study(tmp_path, data)
    out = tmp_path / "out"
    flags = ["compare", "--model", tmp_path / "regression.py:model", "--data", tmp_path / "rows.csv", "--guides",
             "auto:AutoMultivariateNormal", "--seeds", "0", "--jobs", "1", "--reference", "none", "--out", out, "-q",
             "--log-px", "prior-is", "--steps", "300", "--no-figures"]  # the evidence, the fit's length and the
    # figures play no part here: the quickest estimator, a short fit (the mean-field check's too), no figures
    assert elbogap(*flags, "--warm-start", "off")[0] == 0
    run_dir = out / "runs" / "auto-AutoMultivariateNormal-seed0"
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert "warm_start" not in state
    for saved in (state, json.loads((run_dir / "run.json").read_text())):  # as written before the setting existed
        config = json.loads(saved["config"]) if isinstance(saved["config"], str) else saved["config"]
        config.pop("warm_start")
        saved["config"] = json.dumps(config) if isinstance(saved["config"], str) else config
        if saved is state:
            save_checkpoint(run_dir / "checkpoint.pt", state)
        else:
            (run_dir / "run.json").write_text(json.dumps(saved))
    code, err = elbogap(*flags, "--resume", "--iw-samples", "600")
    assert code == 0, err
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert "warm_start" not in run and run["convergence"].get("start_level") is None
