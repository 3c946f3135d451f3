"""What a run of a model with global latents shares with the other runs of its seed, and the streams it draws from."""

import math
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch

from elbogap.config import Config
from elbogap.estimators import estimators
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.protocol import estimated_evidence, evidence_check
from elbogap.global_latents.shared import shared_path, study_cache
from tests.global_latents import truth


def _compute_once(run_dir: str, counter: str):
    data = truth.regression_data(8, 2, seed=3)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")

    def compute():
        with open(counter, "a") as file:
            file.write("computed\n")
        time.sleep(1.0)  # long enough that the other process asks while this one computes
        return {"value": torch.tensor(1.0)}

    return float(study_cache(Path(run_dir), "evidence", model, data, {"a": 1}, 0, compute)["value"])


def test_the_evidence_of_a_seed_is_computed_once_when_two_workers_ask_at_once(tmp_path):
    """Two processes (as --jobs 2 runs two guides of a seed) ask for one shared result: one computes, the other waits
    on the lock and reads it (before, each computed its own: AIS ran twice, 702 s summed for 350 s of work)."""
    counter = tmp_path / "counter.txt"
    runs = [tmp_path / "out" / "runs" / name for name in ("a-seed0", "b-seed0")]
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        values = pool.starmap(_compute_once, [(str(run), str(counter)) for run in runs])
    assert values == [1.0, 1.0]
    assert counter.read_text().splitlines() == ["computed"]
    assert len(list((tmp_path / "out" / "shared").glob("evidence-*.pt"))) == 1



def test_a_study_shares_beside_its_runs_and_a_lone_run_keeps_its_own():
    """OUT/runs/NAME shares OUT/shared/; the directory of ``elbogap train --out RUN_DIR`` keeps RUN_DIR/shared/, so
    nothing is written outside the folder the user named."""
    data = truth.regression_data(8, 2, seed=3)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    with tempfile.TemporaryDirectory() as folder:
        study = shared_path(Path(folder) / "out" / "runs" / "a-seed0", "evidence", model, data, {}, 0)
        lone = shared_path(Path(folder) / "mine", "evidence", model, data, {}, 0)
        assert study.parent == Path(folder) / "out" / "shared" and lone.parent == Path(folder) / "mine" / "shared"


def test_q_above_ais_is_warned_beyond_its_noise_and_a_twentieth_of_a_nat_naming_the_evidences_flags():
    """A tester's conjugate regression: q's estimate 0.018 above AIS at 3.3 s.e. was read as AIS unconverged (AIS was
    0.002 from exact) and named --ais-steps, the per-point flag; now 0.05 nats are needed, and the flags are the
    evidence's."""
    metrics = {"log_px": -226.148, "log_px_stderr": 0.002, "log_px_iwae": -226.130,
               "log_px_iwae_stderr": 0.0051}
    assert "log_px_warning" not in evidence_check(metrics)
    metrics["log_px_iwae"] = -226.07
    warning = evidence_check(metrics)["log_px_warning"]
    assert "0.078 nats above AIS's" in warning and "--evidence-steps" in warning and "--ais-steps" not in warning


def test_q_far_below_the_evidence_is_noted_under_the_estimator_that_gave_it():
    """A tester's two-mode mixture with --log-px quadrature: the note read "below AIS", and no AIS had run."""
    metrics = {"log_px": -408.978, "log_px_stderr": 0.22, "log_px_iwae": -409.78, "log_px_iwae_stderr": 0.004,
               "log_px_method": "quadrature"}
    note = evidence_check(metrics)["log_px_note"]
    assert "0.802 nats below quadrature's" in note and "AIS" not in note


def test_q_far_below_the_evidence_without_an_error_bar_is_noted_too_and_above_it_is_not():
    """A tester's bimodal program: every guide's estimate sat 0.72 below AIS, and only the one with an error bar was
    noted; above AIS, an estimate with no error bar may be an outlier (a centred eight schools' read 0.69 above the
    exact value at k-hat 1.06), and is not said."""
    metrics = {"log_px": -40.872, "log_px_stderr": 0.025, "log_px_iwae": -41.590, "log_px_iwae_stderr": math.nan,
               "khat_mean": 2.21}
    note = evidence_check(metrics)["log_px_note"]
    assert "0.718 nats below AIS's, with no error bar (k-hat 2.21)" in note
    metrics["log_px_iwae"] = -40.18
    assert "log_px_note" not in evidence_check(metrics) and "log_px_warning" not in evidence_check(metrics)
    metrics.update(log_px_iwae=-40.922, khat_mean=0.56)  # eight schools' IAF, its best family: 0.050 below
    assert "log_px_note" not in evidence_check(metrics)


def test_q_below_the_evidence_with_a_k_hat_that_reads_well_is_said_to_miss_part_of_the_posterior():
    """A tester's two mirror modes: q in one of them, 0.7 below AIS at k-hat -0.31, was called "a poor importance
    proposal (see k-hat)", where k-hat looked excellent; it cannot see the mode q never draws from."""
    metrics = {"log_px": -39.47, "log_px_stderr": 0.01, "log_px_iwae": -40.17, "log_px_iwae_stderr": 0.01,
               "khat_mean": -0.31}
    note = evidence_check(metrics)["log_px_note"]
    assert "q misses part of the posterior that its own draws cannot show (k-hat -0.31 reads well" in note
    metrics["khat_mean"] = 0.8
    assert "q is a poor importance proposal for this posterior (k-hat 0.80)" in evidence_check(metrics)["log_px_note"]
    metrics["khat_mean"] = None  # fewer than 25 draws of q: no tail to fit
    assert evidence_check(metrics)["log_px_note"].endswith("q is a poor importance proposal for this posterior; "
                                                           "AIS's value is the one to read")


def test_q_a_few_thousandths_below_the_evidence_is_no_finding():
    """A Gamma-Poisson rate, one latent: q's estimate 0.0025 below an exact AIS at 3.4 s.e., with q 0.003 nats from the
    posterior, was noted as "a poor importance proposal"; below a twentieth of a nat it is within what the gaps are
    read to, as above."""
    metrics = {"log_px": -96.8131, "log_px_stderr": 0.0002, "log_px_iwae": -96.8156, "log_px_iwae_stderr": 0.0007}
    assert "log_px_note" not in evidence_check(metrics) and "log_px_warning" not in evidence_check(metrics)
    metrics["log_px_iwae"] = -96.8751
    assert "0.062 nats below AIS's" in evidence_check(metrics)["log_px_note"]


def test_an_estimators_evidence_is_kept_per_grid_so_another_grid_computes_anew(tmp_path):
    """The quadrature's log p(D) was kept under its name and draws alone: a study resumed with another
    --quadrature-points read the first grid's value."""
    data = truth.regression_data(8, 2, seed=3)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    run_dir = tmp_path / "runs" / "run"
    quadrature = estimators()["quadrature"]
    grids = [estimated_evidence(quadrature, model, data, Config(log_px="quadrature", quadrature_points=points), 0,
                                run_dir, "evidence")["summary"]["samples"] for points in (16, 24)]
    assert grids[0] != grids[1] and len(list((tmp_path / "shared").glob("evidence-*.pt"))) == 2
