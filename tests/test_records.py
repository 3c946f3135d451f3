"""One record schema: a global model's numbers under a per-point split's names, and records written before it."""

import copy

import pytest
import torch

from elbogap.global_latents.report import gap_table
from elbogap.guides import build_guide
from elbogap.inference import evaluate
from elbogap.records import SHARED_METRICS, TOTALED, upgraded, upgraded_run, with_totals
from tests.results_reference import documented

#: a run's whole-data-set metrics as elbogap wrote them before the one schema (eight schools, AutoNormal, seed 0,
#: 300 steps: ``runs[0]["data"]`` of its results.json, verbatim)
WRITTEN_BEFORE = {
    "num_points": 8, "samples": 1000, "elbo": -31.58016998797655, "elbo_stderr": 0.01859391660305895,
    "expected_log_lik": -30.35965365934372, "kl_prior": 1.2205163286328315, "log_evidence_q": -31.390496681517455,
    "log_evidence_q_stderr": 0.022578991936800158, "log_evidence_q_dof": 5.761904761904761, "ess": 569.306477152486,
    "khat": 0.3496765461756196, "khat_threshold": 0.6666666666666667, "rows": "every row of es.csv",
    "log_evidence": -31.315513460112705, "log_evidence_stderr": 0.005650031846614593,
    "log_evidence_dof": 5.761904761904762, "log_evidence_method": "ais", "log_evidence_start": "gaussian",
    "log_evidence_guide_independent": True, "kl_gap": 0.2646565278638455, "kl_gap_stderr": 0.019433388652246687,
    "elbo_per_point": -3.9475212484970688, "elbo_stderr_per_point": 0.0023242395753823686,
    "log_evidence_per_point": -3.914439182514088, "kl_gap_per_point": 0.03308206598298069,
    "kl_gap_stderr_per_point": 0.002429173581530836, "log_evidence_q_per_point": -3.923812085189682,
    "q_above_ais": -0.07498322140475011, "q_above_ais_stderr": 0.023275174258205796,
    "evidence_note": "q's importance estimate of log p(D) is 0.075 nats below AIS: q is a poor importance proposal "
                     "for this posterior (see k-hat); AIS's value is the one to read",
}


def old_run() -> dict:
    return {"guide": "auto-AutoNormal", "seed": 0, "kind": "global", "converged": True,
            "data": copy.deepcopy(WRITTEN_BEFORE), "evidence": {"log_evidence": -31.3155, "stderr": 0.0057},
            "curve_eval": [{"step": 30, "data_elbo": -4.746, "snr_encoder": 11.2}]}


def test_a_global_record_written_before_reads_under_a_per_point_splits_names():
    run = upgraded_run(old_run())
    metrics = run["train"]
    assert "data" not in run and SHARED_METRICS <= set(metrics) and metrics["units"] == 1
    assert set(metrics) <= documented()  # every name it now has is in docs/results.md
    assert (metrics["log_px"], metrics["log_px_stderr"]) == (WRITTEN_BEFORE["log_evidence"],
                                                              WRITTEN_BEFORE["log_evidence_stderr"])
    assert metrics["log_px_iwae"] == WRITTEN_BEFORE["log_evidence_q"] and metrics["recon"] == -30.35965365934372
    assert metrics["elbo_samples"] == metrics["log_px_iwae_samples"] == 1000
    assert metrics["log_px_note"] == WRITTEN_BEFORE["evidence_note"] and metrics["khat_mean"] == WRITTEN_BEFORE["khat"]
    assert run["curve_eval"] == [{"step": 30, "train_elbo": -4.746, "snr_encoder": 11.2}]
    assert run["evidence"] == old_run()["evidence"]  # the evidence's own record keeps its names


def test_a_record_in_todays_schema_and_a_per_point_one_pass_as_they_are():
    today = upgraded_run(old_run())
    assert upgraded_run(today) is today
    per_point = {"guide": "diag", "seed": 0, "train": {"log_px": -20.0}, "test": {"log_px": -21.0}}
    assert upgraded({"runs": [per_point]})["runs"] == [per_point]


def test_the_table_of_an_old_record_is_the_table_of_todays():
    row = gap_table([upgraded_run(old_run())])[2]
    assert "| -31.316 ± 0.006 | 0.265 ± 0.019 | 0.033 | -31.390 ± 0.023 | 0.350 | 569.306 |" in row


def test_an_old_summary_over_seeds_reads_under_todays_names_with_its_spreads():
    row = {"guide": "auto-AutoNormal", "seeds": 2, "log_evidence": -31.3, "log_evidence_seed_sd": 0.004,
           "log_evidence_q_mc_stderr": 0.02, "khat": 0.35, "kl_gap": 0.26}
    summary = upgraded({"runs": [old_run()], "summary": {"data": [row], "gradient_snr": []}})["summary"]
    assert summary == {"train": [{"guide": "auto-AutoNormal", "seeds": 2, "log_px": -31.3, "log_px_seed_sd": 0.004,
                                  "log_px_iwae_mc_stderr": 0.02, "khat_mean": 0.35, "kl_gap": 0.26}],
                       "gradient_snr": []}


def test_a_per_point_split_sums_its_points_into_the_evidence_of_all_of_them(linear_model, linear_data):
    """The linear model's log p(x) is exact, so the split's total is log p(x_1, ..., x_N) = sum_n log p(x_n)."""
    guide = build_guide("diag", linear_model, len(linear_data), hidden_dims=(16,)).to(torch.float64)
    metrics = evaluate(linear_model, guide, linear_data, elbo_samples=64).metrics
    assert metrics["log_px_method"] == "exact" and metrics["units"] == len(linear_data)
    assert metrics["log_px_total"] == pytest.approx(float(linear_model.log_px(linear_data).sum()), abs=1e-8)
    for key in TOTALED:
        assert metrics[f"{key}_total"] == pytest.approx(len(linear_data) * metrics[key], rel=1e-12)
        assert metrics[f"{key}_total_stderr"] == pytest.approx(len(linear_data) * metrics[f"{key}_stderr"], rel=1e-12)
    assert metrics["kl_gap_total"] == pytest.approx(metrics["log_px_total"] - metrics["elbo_total"], abs=1e-8)
    run = {"guide": "diag", "seed": 0, "test": metrics}
    assert upgraded_run(run) is run  # written today: read as it is


def test_where_log_px_covers_some_points_only_the_elbo_is_summed():
    """Averaged over AIS's subset, log p(x) times every point would be an extrapolation, not the sum."""
    split = {"units": 300, "num_points": 300, "log_px_points": 64, "elbo": -20.0, "elbo_stderr": 0.01,
             "log_px": -19.5, "log_px_stderr": 0.02, "kl_gap": 0.5, "kl_gap_stderr": 0.03}
    totals = with_totals(split)
    assert (totals["elbo_total"], totals["elbo_total_stderr"]) == pytest.approx((-6000.0, 3.0))
    assert [totals[key] for key in ("log_px_total", "log_px_total_stderr", "kl_gap_total", "kl_gap_total_stderr")] == [
        None] * 4


def test_the_whole_data_set_is_one_unit_and_each_total_is_its_number():
    metrics = upgraded_run(old_run())["train"]
    assert (metrics["log_px_total"], metrics["log_px_total_stderr"]) == (WRITTEN_BEFORE["log_evidence"],
                                                                          WRITTEN_BEFORE["log_evidence_stderr"])
    assert (metrics["elbo_total"], metrics["kl_gap_total"]) == (WRITTEN_BEFORE["elbo"], WRITTEN_BEFORE["kl_gap"])
