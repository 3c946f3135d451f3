"""A report's rows: the same points side by side, both kinds of ±, and the note on a negative approximation gap."""

import math

import pytest
import torch

from elbogap.inference.convergence import ConvergenceSettings, paired_gain
from elbogap.inference.convergence import fixed_verdict as verdict_of
from elbogap.summary import (
    approx_gap_note,
    cell,
    converged_cell,
    convergence_warnings,
    held_out_warnings,
    on_log_px_points,
    over_seeds,
    per_guide_lines,
    rows,
)


@pytest.mark.parametrize(("method", "advice"), [
    ("ais", "AIS below log p(x) or noise: raise --ais-steps"),
    ("iwae", "raise --iw-samples"),
    ("quadrature", "raise --quadrature-points"),
    ("exact", "noise in the ELBO of q*"),
])
def test_an_approximation_gap_below_minus_two_standard_errors_gets_a_note_naming_the_fix(method, advice):
    note = approx_gap_note({"approx_gap": -1.0, "approx_gap_stderr": 0.1, "gap_log_px_method": method})
    assert note is not None and advice in note and "-1.000 ± 0.100" in note


@pytest.mark.parametrize("metrics", [
    {"approx_gap": -0.1, "approx_gap_stderr": 0.1, "gap_log_px_method": "ais"},  # within noise
    {"approx_gap": 0.5, "approx_gap_stderr": 0.1, "gap_log_px_method": "ais"},
    {"approx_gap": -1.0, "gap_log_px_method": "ais"},  # no standard error: nothing to judge by
    {"kl_gap": 1.0},  # no gap split
    # q* at the linear model's exact posterior: float32 rounding, not noise (a tester's note said to raise draws)
    {"approx_gap": -1.19e-7, "approx_gap_stderr": 1.4e-8, "gap_log_px_method": "exact"},
])
def test_no_note_where_the_approximation_gap_is_within_two_standard_errors_or_absent(metrics):
    assert approx_gap_note(metrics) is None


def test_the_elbo_on_the_points_of_log_px_is_the_elbo_where_log_px_covers_every_point():
    whole = on_log_px_points({"num_points": 5, "log_px_points": 5, "log_px": -3.0, "elbo": -4.0, "elbo_stderr": 0.1})
    assert (whole["elbo_log_px_points"], whole["elbo_log_px_points_stderr"]) == (-4.0, 0.1)
    subset = {"num_points": 5, "log_px_points": 2, "log_px": -3.0, "elbo": -4.0, "elbo_log_px_points": -3.5}
    assert on_log_px_points(subset)["elbo_log_px_points"] == -3.5


def test_over_seeds_keeps_the_spread_of_the_seeds_and_the_monte_carlo_error_of_their_mean():
    splits = [{"kl_gap": 1.0, "kl_gap_stderr": 0.3}, {"kl_gap": 2.0, "kl_gap_stderr": 0.4}]
    stats = over_seeds(splits, "kl_gap")
    assert stats["mean"] == 1.5 and stats["seed_sd"] == pytest.approx(math.sqrt(0.5))
    assert stats["mc_stderr"] == pytest.approx(0.25)  # sqrt(0.09 + 0.16) / 2
    assert cell(stats) == "1.500 ± 0.707 (s.e. 0.250)"
    assert cell(over_seeds(splits[:1], "kl_gap")) == "1.000 ± 0.300"
    assert cell(over_seeds([{"recon": -2.0}], "recon")) == "-2.000" and cell(None) == "–"



def test_seeds_where_one_evidence_has_no_error_bar_summarize_without_raising():
    """A global study's second seed whose AIS has no standard error (NaN): the table's spread over seeds of that
    column is NaN, where statistics.stdev raised and lost the study's results.json (a tester's 80-group regression)."""
    runs = [{"guide": "auto-AutoNormal", "train": {"units": 1, "num_points": 240, "log_px": -348.8,
                                                   "log_px_stderr": stderr, "elbo": -350.4, "kl_gap": 1.6,
                                                   "kl_gap_stderr": stderr}}
            for stderr in (0.012, math.nan)]
    row, = rows(runs, "train", ("log_px", "log_px_stderr", "kl_gap"))
    assert row["log_px_seed_sd"] == 0.0 and math.isnan(row["log_px_stderr_seed_sd"])
    assert "log_px_mc_stderr" not in row  # no Monte-Carlo error of a mean with an unknown one in it

def test_a_row_of_the_api_table_subtracts_within_itself_and_carries_the_note():
    runs = [{"guide": "diag", "seed": seed, "test": {
        "num_points": 1000, "log_px_points": 50, "log_px": -117.2 + seed, "log_px_stderr": 0.2, "log_px_method": "ais",
        "elbo_log_px_points": -131.1 + seed, "kl_gap": 13.9, "kl_gap_stderr": 0.2, "elbo": -147.3, "elbo_stderr": 0.05,
        "gap_points": 8, "gap_log_px_method": "ais", "approx_gap": -1.0, "approx_gap_stderr": 0.1,
        "approx_gap_bound": "upper"}} for seed in (0, 1)]
    (row,) = rows(runs, "test", ("log_px", "elbo_log_px_points", "kl_gap", "elbo", "approx_gap"))
    assert row["log_px"] - row["elbo_log_px_points"] == pytest.approx(row["kl_gap"])
    assert (row["log_px_points"], row["num_points"], row["gap_points"]) == (50, 1000, 8)
    assert row["log_px_seed_sd"] == pytest.approx(math.sqrt(0.5)) and row["kl_gap_seed_sd"] == 0
    assert row["kl_gap_mc_stderr"] == pytest.approx(0.2 / math.sqrt(2))
    assert row["approx_gap_bound"] == "upper" and "raise --ais-steps" in row["approx_gap_note"]


def test_an_unconverged_fit_is_advised_by_how_it_ended():
    """At its cap a fit needs more steps or a larger rate; one whose rate was cut back after a divergence, a smaller
    first rate."""
    at_cap = {"guide": "g", "seed": 0, "converged": False,
              "convergence": {"rule": "plateau", "backoffs": 0, "reason": "stopped at the cap of 20 steps"}}
    diverged = {"guide": "g", "seed": 1, "converged": False,
                "convergence": {"rule": "plateau", "backoffs": 2, "reason": "after 4 learning-rate drops"}}
    first, second = convergence_warnings([at_cap, diverged])
    assert "raise the cap (--steps)" in first and "smaller --lr" not in first
    assert "cut back 2 time(s)" in second and "smaller --lr" in second and "raise the cap" not in second
    assert convergence_warnings([{**at_cap, "converged": True}]) == []


def test_a_guides_seeds_still_rising_are_said_in_one_line_with_each_gain():
    def run(seed, gain, converged=False):
        return {"guide": "diag", "seed": seed, "converged": converged,
                "convergence": {"rule": "trend", "tolerance": 0.01, "window": 200, "read_from": "fixed_draws",
                                "terms": 1024, "gain": gain, "gain_stderr": 0.006, "converged": converged}}

    (line,) = convergence_warnings([run(0, 0.0231), run(1, 0.0474), run(2, 0.012, converged=True)])
    assert line.startswith("- diag seeds 0, 1 did not converge (trend rule)")
    assert "it gained 0.0231 nats (s.e. 0.006) for seed 0, 0.0474 nats (s.e. 0.006) for seed 1" in line
    assert "seed 2" not in line
    assert "on fixed draws of 1024 training rows" in line and "--steps" in line and "--schedule converge" not in line


def test_fits_the_trend_rule_cannot_tell_are_said_and_read_unclear_in_the_table():
    """The default study's full, iaf and planar seed 1 gained 0.017-0.020 ± 0.007 against a tolerance of 0.01 and
    read "converged: yes"; now the verdict is None with the reason, one Warnings line names them, and a guide's cell
    reads "unclear" where none of its seeds is called unconverged ("no" where one is, "1 of 2" beside a converged
    one)."""
    def run(guide, seed, gain):
        before = torch.zeros(1024, dtype=torch.float64)
        after = gain + 0.22 * torch.randn(1024, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        record = verdict_of([0.0] * 2000, ConvergenceSettings(tolerance=0.01), paired=paired_gain(before, after))
        return {"guide": guide, "seed": seed, "converged": record["converged"], "convergence": record}

    unclear = [run("full", 1, 0.0203), run("iaf", 1, 0.0166)]
    assert all(r["converged"] is None and "cannot tell" in r["convergence"]["reason"] for r in unclear)
    (line,) = convergence_warnings(unclear)
    assert line.startswith("- full, iaf seed 1: the trend rule cannot tell whether the ELBO was still rising")
    assert "may describe a fit still improving" in line
    rising, settled = run("full", 0, 0.05), run("full", 2, 0.0)
    assert rising["converged"] is False and settled["converged"] is True
    assert converged_cell(unclear[:1]) == "unclear" and converged_cell([rising, unclear[0]]) == "no"
    assert converged_cell([settled, unclear[0]]) == "1 of 2" and converged_cell([{"converged": None}]) == "–"


def test_a_guides_seeds_with_one_message_but_its_numbers_get_one_line_with_each_numbers_range():
    """A tester's two-mode mixture got one line per guide and seed, eight alike but for their numbers."""
    note = "q's importance estimate of log p(D) is {} nats below AIS ({} s.e.): q is a poor proposal"
    lines = per_guide_lines([("auto-AutoNormal", 0, note.format(0.682, 12)),
                             ("auto-AutoNormal", 1, note.format(0.688, 9)),
                             ("auto-AutoIAFNormal", 0, note.format(0.679, 9)),
                             ("auto-AutoNormal", 2, "no error bar")])
    assert lines == ["- auto-AutoNormal seeds 0, 1: " + note.format("0.682-0.688", "9-12"),
                     "- auto-AutoIAFNormal seed 0: " + note.format(0.679, 9), "- auto-AutoNormal seed 2: no error bar"]
    also = per_guide_lines([("auto-AutoIAFNormal", 1, note.format(0.691, 8)), *(
        (guide, seed, note.format(gap, 9)) for guide, seed, gap in (("auto-AutoNormal", 0, 0.682),
                                                                    ("auto-AutoNormal", 1, 0.688),
                                                                    ("auto-AutoIAFNormal", 0, 0.679)))])
    assert also == ["- auto-AutoIAFNormal, auto-AutoNormal seeds 0, 1: " + note.format("0.679-0.691", "8-9")]
    gained = "it gained {} nats (s.e. {})"
    signed = per_guide_lines([("diag", 0, gained.format(-0.0122, 0.0082)), ("diag", 1, gained.format(0.0189, 0.013))])
    assert signed == ["- diag seeds 0, 1: " + gained.format("-0.0122 to 0.0189", "0.0082-0.013")]  # a tester's



def held_out_run(guide: str, seed: int, test_gap: float, train_gap: float, stderr: float = 0.01) -> dict:
    return {"guide": guide, "seed": seed,
            "test": {"kl_gap": test_gap, "kl_gap_stderr": stderr, "gap_points": 64, "approx_gap": 0.01,
                     "amort_gap": test_gap - 0.01},
            "train": {"kl_gap": train_gap, "kl_gap_stderr": stderr}}


def test_a_test_gap_far_above_the_training_gap_is_said_once_per_guide():
    """A tester's Poisson program: test gaps 1.46-2.31 against 0.02-0.04 on the training rows, unsaid before."""
    runs = [held_out_run("diag", 0, 1.585, 0.024), held_out_run("diag", 1, 2.313, 0.039),
            held_out_run("full", 0, 0.16, 0.15)]
    (line,) = held_out_warnings(runs)
    assert line.startswith("- diag seeds 0, 1: its KL gap on the test split, 1.585-2.313, is more than twice its gap "
                           "on the training split, 0.024-0.039; on the test split's 64 gap points 1.575-2.303 nats")
    assert held_out_warnings([held_out_run("diag", 0, 0.08, 0.03)]) == []  # twice, but within HELD_OUT_NATS
    assert held_out_warnings([held_out_run("diag", 0, 0.5, 0.2, stderr=0.1)]) == []  # within 3 joint s.e.


def test_a_test_gap_far_above_its_noise_is_said_and_gap_points_that_miss_it_say_so():
    """A tester's low-rank q: 49.477 ± 15.072 on the test split against 0.345 (one held-out row's ELBO -1,963), no
    line; its sylvester's line quoted 0.008 nats on 8 gap points that missed that row, as if they explained 1.387."""
    low_rank = held_out_run("lowrank", 0, 49.477, 0.345, stderr=15.072 / math.sqrt(2))
    low_rank["test"].update(gap_points=8, approx_gap=0.003, amort_gap=0.005)
    (line,) = held_out_warnings([low_rank])
    assert "8 gap points 0.005 nats of 0.008 are the amortization gap, far below the split's gap: most of it lies " \
           "on rows outside them (raise --gap-points" in line


def test_a_fit_too_short_to_judge_is_said_and_one_not_trained_at_all_says_so():
    """A tester's --steps 0 run read a KL gap of 1.1 with "–" under converged and no Warnings line."""

    def run(guide, seed, steps):
        return {"guide": guide, "seed": seed, "steps": steps, "converged": None,
                "convergence": {"rule": "trend", "reason": f"too few steps ({steps}) to read a trend from"}}

    lines = convergence_warnings([run("diag", 0, 0), run("diag", 1, 0), run("iaf", 0, 20)])
    assert lines == [
        "- diag seeds 0, 1: its fit was not judged (too few steps (0) to read a trend from), and nothing was trained: "
        "its numbers are the initial q's; train longer (--steps, at least 50)",
        "- iaf seed 0: its fit was not judged (too few steps (20) to read a trend from): its ELBO and KL gap may "
        "describe an unfinished fit; train longer (--steps, at least 50)"]
    assert convergence_warnings([{**run("diag", 0, 0), "convergence": None}]) == []  # no rule to speak of


def test_a_value_has_as_many_decimals_as_the_error_beside_it():
    """A tester's tempered program: a gap of -0.00061 ± 0.00045 read "-0.001 ± 0.00045", 2.2 errors below 0 where
    it lies 1.4; both kinds of table."""
    assert cell({"mean": -0.00061, "mc_stderr": 0.00045}) == "-0.00061 ± 0.00045"
    assert cell({"mean": -291.08919, "seed_sd": 0.00019, "mc_stderr": 0.0001}) == "-291.08919 ± 0.00019 (s.e. 0.0001)"
    assert cell({"mean": -72.68175, "seed_sd": 0.00021, "mc_stderr": 0.001}) == "-72.682 ± 0.00021 (s.e. 0.001)"
    assert cell({"mean": -4.35371, "mc_stderr": 0.0039}) == "-4.354 ± 0.004"  # three decimals as before
    assert cell({"mean": 189.178, "seed_sd": 3.499, "mc_stderr": 0.4}) == "189.2 ± 3.5 (s.e. 0.400)"  # an ESS
    assert cell({"mean": 806.123, "mc_stderr": 12.6}) == "806 ± 13"
