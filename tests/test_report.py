"""results.md, results.csv and results.json from a study's records: rows a reader can subtract, errors everywhere."""

import csv
import io
import json

import pytest

from elbogap.config import Config
from elbogap.records import with_totals
from elbogap.report import csv_text, markdown, write_results
from elbogap.report import summary as summary_of

AIS = {"init": "prior", "chains": 2, "steps": 10, "leapfrog_steps": 1, "acceptance": [0.6, 0.7], "target_accept": 0.65}


def split(seed: int, approx_gap: float = 0.5, **extra) -> dict:
    """A split evaluated on 1000 points with AIS on 50 of them, as Fashion-MNIST gave it (issue 18)."""
    return {"num_points": 1000, "split_points": 1000, "log_px_points": 50, "log_px": -117.2 - seed,
            "log_px_stderr": 0.2, "log_px_method": "ais", "log_px_samples": 2, "ais": AIS,
            "elbo_log_px_points": -131.1 - seed, "elbo_log_px_points_stderr": 0.05, "kl_gap": 13.9,
            "kl_gap_stderr": 0.21, "elbo": -147.3, "elbo_stderr": 0.02, "elbo_samples": 16, "recon": -140.0,
            "kl_prior": 7.3, "log_px_iwae": -125.0, "log_px_iwae_stderr": 0.1, "log_px_iwae_samples": 16,
            "gap_points": 8, "gap_log_px_method": "ais", "gap_log_px": -118.0, "gap_elbo": -130.0,
            "elbo_star": -118.0 - approx_gap, "gap_kl": 12.0, "approx_gap": approx_gap, "approx_gap_stderr": 0.1,
            "amort_gap": 12.0 - approx_gap, "amort_gap_stderr": 0.1, "khat_mean": 0.5, "khat_bad_share": 0.1,
            "ess_mean": 3.0, "active_units": 4, **extra}


def results(seeds=(0,), **extra) -> dict:
    runs = [{"guide": "diag", "seed": seed, "train_seconds": 1.0, "test": split(seed, **extra),
             "train": split(seed, **extra)} for seed in seeds]
    return {"config": Config(seeds=list(seeds), guides=["diag"]).to_dict(), "versions": {}, "runs": runs}


def test_a_study_with_runs_still_to_come_says_it_is_partial(tmp_path):
    """A tester's stopped compare left a results.md of its one finished guide that read as the whole study."""
    study = results((0, 1))
    study["config"]["guides"] = ["diag", "full"]
    report = markdown(study)
    assert report.splitlines()[2].startswith("**Partial: 2 of 4 runs.**") and "--resume" in report.splitlines()[2]
    assert json.loads((write_results(study, tmp_path) / "results.json").read_text())["complete"] is False
    study["config"]["guides"] = ["diag"]
    assert "Partial" not in markdown(study)
    assert json.loads((write_results(study, tmp_path) / "results.json").read_text())["complete"] is True


def rows_of(report: str, heading: str) -> list[dict]:
    """The rows of the first table after ``heading``, as ``{column title: cell}``."""
    lines = report[report.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| guide"))
    titles = [title.strip() for title in lines[start].strip("|").split("|")]
    table = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        table.append(dict(zip(titles, (cell.strip() for cell in line.strip("|").split("|")), strict=True)))
    return table


def mean(cell: str) -> float:
    return float(cell.lstrip("≤≥ ").split(" ")[0])


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_a_row_of_the_main_table_subtracts_log_px_minus_elbo_to_the_kl_gap(seeds):
    (row,) = rows_of(markdown(results(seeds)), "## test split")
    assert mean(row["log p(x)"]) - mean(row["ELBO"]) == pytest.approx(mean(row["KL gap"]), abs=2e-3)
    assert row["points"] == "50 of 1000" and mean(row["ELBO, all 1000 points"]) == -147.3
    assert mean(row["IWAE log p(x), all 1000 points"]) == -125.0


def test_one_seed_shows_monte_carlo_errors_and_several_seeds_show_both_kinds():
    one = markdown(results((0,)))
    assert rows_of(one, "## test split")[0]["KL gap"] == "13.900 ± 0.210"
    assert "With one seed, ± is the Monte-Carlo standard error of the split mean within the run" in one
    two = markdown(results((0, 1)))
    assert rows_of(two, "## test split")[0]["log p(x)"] == "-117.700 ± 0.707 (s.e. 0.141)"
    assert "of the row. With several seeds, ± is the standard deviation of the per-seed values and (s.e.)" in two
    assert "of the row. With one seed" not in two


def test_the_gap_split_shows_its_standard_errors_and_a_note_where_the_approximation_gap_is_below_zero():
    report = markdown(results(approx_gap=-1.0))
    (row,) = rows_of(report, "### test")
    assert row["approximation gap"] == "-1.000 ± 0.100" and row["amortization gap"] == "13.000 ± 0.100"
    assert mean(row["log p(x)"]) - mean(row["ELBO of q*"]) == pytest.approx(mean(row["approximation gap"]))
    assert "- diag seed 0, test: approximation gap -1.000 ± 0.100, below −2 standard errors: AIS below log p(x) " \
           "or noise: raise --ais-steps" in report
    assert "below −2 standard errors" not in markdown(results(approx_gap=-0.1))
    assert "≤" not in report


def test_an_approximation_gap_that_is_an_upper_bound_is_marked():
    report = markdown(results(approx_gap_bound="upper"))
    (row,) = rows_of(report, "### test")
    assert row["approximation gap"].startswith("≤ 0.500") and row["amortization gap"].startswith("≥ ")
    assert "the approximation gap is an upper bound" in report


def test_csv_and_json_keep_the_same_points_side_by_side_and_both_kinds_of_error(tmp_path):
    study = results((0, 1))
    first = next(csv.DictReader(io.StringIO(csv_text(study))))
    columns = list(first)
    assert columns.index("log_px") < columns.index("elbo_log_px_points") < columns.index("kl_gap") < columns.index(
        "num_points") < columns.index("elbo")
    assert float(first["log_px"]) - float(first["elbo_log_px_points"]) == pytest.approx(float(first["kl_gap"]))
    assert first["approx_gap_stderr"] == "0.1"
    write_results(study, tmp_path)
    (row,) = json.loads((tmp_path / "results.json").read_text())["summary"]["test"]
    assert row["kl_gap_seed_sd"] == 0 and row["kl_gap_mc_stderr"] == pytest.approx(0.21 / 2**0.5)
    assert row["approx_gap_mc_stderr"] == pytest.approx(0.1 / 2**0.5) and row["log_px_points"] == 50


def test_every_kind_of_model_writes_the_same_csv_columns_and_summary_names():
    """One record schema: a model with global latents (one unit, D; its test split holds the held-out rows' predictive
    density, not the schema's numbers) writes the per-point study's CSV header, one row per run, and its summary's
    train rows carry the same names (they had a header and keys of their own)."""
    per_point = csv_text(results())
    whole = {"units": 1, "num_points": 40, "elbo": -52.0, "elbo_stderr": 0.01, "elbo_samples": 1000, "log_px": -51.5,
             "log_px_stderr": 0.02, "log_px_method": "ais", "kl_gap": 0.5, "kl_gap_stderr": 0.03,
             "kl_gap_per_point": 0.0125, "log_px_iwae": -51.6, "log_px_iwae_stderr": 0.05, "khat_mean": 0.3,
             "ess_mean": 400.0}
    whole = with_totals(whole)
    runs = [{"guide": "auto-AutoNormal", "seed": seed, "train_seconds": 2.0, "converged": True, "evidence": {},
             "train": whole, "test": {"num_points": 10, "log_predictive": -13.0, "log_predictive_stderr": 0.01}}
            for seed in (0, 1)]
    study = {**results(), "runs": runs}
    header, *lines = csv_text(study).splitlines()
    assert header == per_point.splitlines()[0] and len(lines) == 2
    row = next(csv.DictReader(io.StringIO(csv_text(study))))
    assert row["split"] == "train" and row["units"] == "1" and row["kl_gap_per_point"] == "0.0125"
    assert row["approx_gap"] == "" and row["converged"] == "True"
    summary = summary_of(study)
    assert set(summary) == {"train"} and summary["train"][0]["kl_gap_per_point"] == pytest.approx(0.0125)
    assert {"log_px", "kl_gap", "kl_gap_stderr", "khat_mean", "log_px_total"} <= set(summary["train"][0])
    assert {"log_px_stderr", "khat_mean"} <= set(summary_of(results())["test"][0])


def test_the_footer_describes_the_users_program_from_its_record():
    study = results()
    study["runs"][0]["model"] = {"spec": "vae.py:VAE", "program": True, "parameters": 335184, "sites": {
        "latent": {"z": [50]}, "per_point": True, "global": [], "latent_dim": 50, "observed": ["obs"]}}
    report = markdown(study)
    assert "Model your program vae.py:VAE: latent site z (50 per data point); observed obs; 335,184 parameters" \
        in report
    assert "Latent dim" not in report


def with_snr(study: dict) -> dict:
    """Each run with a gradient signal-to-noise record and two points of the curve carrying it."""
    for run in study["runs"]:
        snr = {"snr_encoder": 0.5 + run["seed"], "snr_encoder_mean": 0.7, "snr_encoder_entries": 100,
               "snr_decoder": 4.0, "snr_decoder_mean": 9.0, "snr_decoder_entries": 200, "snr_draws": 16,
               "snr_batch_size": 128}
        run.update(snr, curve=[[10, -40.0], [20, -38.0]], curve_eval=[
            {"step": 10, "test_elbo": -41.0, "test_log_px": -40.0, **snr, "snr_encoder": 1.0},
            {"step": 20, "test_elbo": -39.0, "test_log_px": -38.5, **snr}])
    return study


def test_the_gradient_snr_gets_a_table_over_seeds_a_footer_line_and_a_summary_row(tmp_path):
    study = with_snr(results((0, 1)))
    report = markdown(study)
    (row,) = rows_of(report, "## Gradient signal-to-noise")
    assert row["encoder SNR (median)"] == "1.000 ± 0.707" and row["decoder SNR (mean)"] == "9.000 ± 0.000"
    assert row["seeds"] == "2"
    assert "M = 16 gradient draws on one fixed minibatch of 128 training rows" in report
    assert "- Gradient SNR (signal-to-noise ratio, Rainforth et al. 2018" in report
    write_results(study, tmp_path)
    (summary,) = json.loads((tmp_path / "results.json").read_text())["summary"]["gradient_snr"]
    assert summary["snr_encoder"] == 1.0 and summary["snr_encoder_seed_sd"] == pytest.approx(0.5**0.5)
    assert (summary["guide"], summary["snr_draws"], summary["snr_decoder_mean"]) == ("diag", 16, 9.0)


def test_a_study_without_the_measurement_has_no_snr_section():
    study = results((0,))
    assert "Gradient signal-to-noise" not in markdown(study) and "Gradient SNR" not in markdown(study)


def test_the_gap_section_names_each_splits_own_count_of_points():
    """A tester's 40 test points and 64 of 160 training points read "On 40 points per split"."""
    study = results()
    study["runs"][0]["train"]["gap_points"] = 64
    assert "On 8 points of the test split and 64 points of the train split, q* is" in markdown(study)
    assert "On 8 points per split, q* is" in markdown(results())


def test_points_that_quadrature_left_without_an_error_bar_and_ais_filled_in_are_said_with_its_caveat():
    """--log-px auto's AIS on the points quadrature could not bound: the methods line and the caveats name it."""
    filled = {"log_px_method": "quadrature", "log_px_samples": 1200, "log_px_filled_by": "ais",
              "log_px_filled_points": 3, "log_px_points": 1000}
    report = markdown(results(**filled))
    assert ("quadrature (midpoint rule on a grid zoomed onto the posterior, 1200 points in all), and on the 3 points "
            "it left without an error bar annealed importance sampling from the prior") in report
    assert "AIS's error (the ± of one seed, the (s.e.) of several) is the spread of its chains" in report
    assert "The quadrature's error of log p(x) (the ± of one seed, the (s.e.) of several) is its discret" in report


def test_a_split_of_a_few_points_is_warned_and_one_point_is_named_so():
    """A tester's 3-row file: trained on 2 rows, tested on 1, and the report said nothing of it."""
    tiny = results(num_points=1, split_points=1, log_px_points=1)
    for run in tiny["runs"]:
        run["train"].update(num_points=2, split_points=2, log_px_points=2)
    report = markdown(tiny)
    warnings = report[report.index("## Warnings"):report.index("## test split")]
    assert "the train split has 2 points" in warnings and "the test split has 1 point:" in warnings
    assert "## test split (1 point)" in report
    assert "## Warnings" not in markdown(results())  # 1000 points a split


def test_each_section_is_drawn_where_the_records_hold_its_metrics():
    """No section asks what kind of model a study fitted: runs whose records hold a training split of points only
    (no test split) get its table and the methods, not the test split's table, its diagnostics or the gap split;
    a training split that is the whole data set (one unit naming its rows) is not drawn as a table of points, nor
    warned as a split of few points."""
    study = results((0, 1))
    for run in study["runs"]:
        del run["test"]
    report = markdown(study)
    assert "## train split (1000 points)" in report and "## How the numbers were computed" in report
    assert "## test split" not in report and "Diagnostics of q" not in report and "approximation vs" not in report
    whole = results((0,))
    whole["runs"][0]["train"].update(units=1, num_points=8, rows="every row of schools.csv")
    del whole["runs"][0]["test"]
    report = markdown(whole)
    assert "## train split" not in report and "How the numbers were computed" not in report
    assert "## Warnings" not in report  # 8 rows, one unit: not a small split of points
