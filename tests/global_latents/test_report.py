"""Warnings that read a study's runs together: several modes, and a family short of a family it contains."""

import math
from math import nan

import numpy as np
import pytest

import elbogap
from elbogap.global_latents.report import (
    checked_words,
    coordinates_words,
    draws_words,
    evidence_section,
    gap_table,
    importance_cell,
    outside_q_warnings,
    posterior_warnings,
    second_start_sentence,
)
from tests.global_latents import truth


def run(guide: str, gap: float, seed: int = 0, far: float = 0.0, smc_far: float | None = None):
    record = {"guide": guide.replace(":", "-"), "guide_spec": guide, "seed": seed,
              "train": {"kl_gap": gap, "kl_gap_stderr": 0.02, "log_px": -10.0, "elbo": -10.0 - gap,
                        "elbo_stderr": 0.02},
              "reference": {"sites": {"locs": {"mean_error_max_abs": far}}},
              "evidence": {"stages": {"fit": {"smc_far": smc_far}} if smc_far is not None else {}}}
    return record


def test_a_guide_far_from_the_reference_with_a_small_gap_reads_as_several_modes():
    warnings = posterior_warnings([run("auto:AutoNormal", 0.4), run("auto:AutoMultivariateNormal", 0.01, far=41)])
    assert len(warnings) == 1 and "auto-AutoMultivariateNormal" in warnings[0] and "several modes" in warnings[0]
    assert posterior_warnings([run("auto:AutoNormal", 30.0, far=41)]) == []  # far and a large gap: a poor fit
    seeds = [run("auto:AutoMultivariateNormal", gap, seed=seed, far=far) for seed, gap, far in ((0, 0.01, 38),
                                                                                            (1, 0.02, 41))]
    (line,) = posterior_warnings(seeds)  # a tester's mixture had one line per seed, and the site's name garbled
    assert line.startswith("- auto-AutoMultivariateNormal seeds 0, 1: its mean lies 38-41 reference sds from the "
                           "reference's on locs, yet its gap is 0.01-0.02 nats") and "--evidence-start prior" in line
    for record in seeds:
        record["train"]["log_px_start"] = "prior"
    (line,) = posterior_warnings(seeds)
    assert "annealed from the prior, counts every mode" in line and "--evidence-start prior" not in line


def importance(guide: str, estimate: float, stderr: float, khat: float) -> dict:
    record = run(guide, 0.1)
    record["train"].update(log_px_iwae=estimate, log_px_iwae_stderr=stderr, khat_mean=khat)
    return record


def test_the_importance_estimate_beside_ais_is_one_with_an_error_bar_else_the_lowest_k_hats_marked():
    """A tester's centred eight schools showed -30.616 (k-hat 1.06, no error bar) as the best of q's estimates, 0.69
    nats above the exact log p(D): the highest of estimates without a finite variance is the likeliest outlier."""
    outlier, heavy = importance("auto:AutoLowRankMultivariateNormal", -30.616, nan, 1.06), \
        importance("auto:AutoIAFNormal", -31.325, nan, 0.90)
    assert importance_cell([outlier, heavy]) == "-31.325 (auto-AutoIAFNormal; k-hat 0.90, no error bar)"
    light = importance("auto:AutoMultivariateNormal", -31.40, 0.02, 0.3)
    assert importance_cell([outlier, heavy, light]) == "-31.400 ± 0.020 (auto-AutoMultivariateNormal)"


def test_smc_particles_far_outside_the_reference_read_as_missed_modes_once_per_seed():
    runs = [run("auto:AutoNormal", 0.4, smc_far=0.8), run("auto:AutoIAFNormal", 0.1, smc_far=0.8)]
    warnings = posterior_warnings(runs)
    assert len(warnings) == 1 and "80% of the particles" in warnings[0]
    assert posterior_warnings([run("auto:AutoNormal", 0.4, smc_far=0.03)]) == []  # a funnel's few far particles


def test_far_particles_whose_run_from_the_prior_agreed_read_as_a_heavy_tail_not_as_missed_modes():
    """A tester's StudentT(1) prior on one mean: 12.5% of SMC's particles sat far outside the reference, and the run
    from the prior at 4,000 temperatures that this asked for agreed (-4.3512 ± 0.0041 beside -4.3537 ± 0.0039); the
    Warnings still said the posterior has modes the reference missed. A run with no usable error bar rules out
    nothing."""
    checked = run("auto:AutoNormal", 0.2, smc_far=0.125)
    checked["evidence"]["stages"]["prior_check"] = {"modes": True, "run": {"steps": 4000, "log_evidence": -4.3512,
                                                                          "stderr": 0.0041}}
    assert posterior_warnings([checked]) == []
    assert "agreed (-4.351 ± 0.004): a heavy tail" in checked_words(checked["evidence"])
    for stderr in (nan, 0.5):
        checked["evidence"]["stages"]["prior_check"]["run"]["stderr"] = stderr
        assert len(posterior_warnings([checked])) == 1 and checked_words(checked["evidence"]) == ""


def coordinates(as_written: float, non_centred: float, stderr: float = 0.02) -> dict:
    pilots = {"as written": {"log_evidence": as_written, "stderr": stderr},
              "non-centred": {"log_evidence": non_centred, "stderr": stderr}}
    return {"sites": ["alpha"], "chosen": "non-centred" if non_centred > as_written else "as written",
            "pilots": pilots}


def test_a_funnel_the_non_centred_form_anneals_better_is_named_once_per_seed():
    """The tester's 80-group regression: the non-centred pilot 0.28 nats above, at s.e. 0.04-0.07."""
    runs = [run("auto:AutoNormal", 1.6), run("auto:AutoMultivariateNormal", 1.0)]
    for record in runs:
        record["evidence"]["stages"]["coordinates"] = coordinates(-349.008, -348.733, 0.05)
    warnings = posterior_warnings(runs)
    assert len(warnings) == 1 and "non-centred form" in warnings[0] and "site alpha makes a funnel" in warnings[0]
    for quiet in (coordinates(-349.0, -348.95), coordinates(-349.0, -348.7, 0.2), coordinates(-349.0, -348.7, nan),
                  coordinates(-348.7, -349.0)):  # within 0.1 nats, within 2 s.e., no s.e., or kept as written
        runs[0]["evidence"]["stages"]["coordinates"] = quiet
        assert posterior_warnings(runs[:1]) == []
    assert coordinates_words(coordinates(-349.008, -348.733)).startswith(", in the program's non-centred form (its "
                                                                         "centred site alpha, rewritten")
    assert "in the program's own form" in coordinates_words(coordinates(-348.7, -349.0))
    assert coordinates_words(None) == ""


def test_a_family_above_one_it_contains_is_short_of_its_optimum():
    runs = [run("auto:AutoNormal", 37.7), run("auto:AutoLowRankMultivariateNormal", 16.7),
            run("auto:AutoMultivariateNormal", 20.6), run("auto:AutoIAFNormal", 4.1)]
    warnings = posterior_warnings(runs)
    assert len(warnings) == 1 and warnings[0].startswith("- auto-AutoMultivariateNormal seed 0: its gap 20.600")
    assert posterior_warnings([run("auto:AutoNormal", 1.0), run("auto:AutoMultivariateNormal", 1.05)]) == []
    other_seed = [run("auto:AutoNormal", 1.0, seed=0), run("auto:AutoMultivariateNormal", 5.0, seed=1)]
    assert posterior_warnings(other_seed) == []  # compared within a seed


def test_seeds_of_a_family_that_end_at_different_gaps_read_as_different_optima():
    runs = [run("auto:AutoMultivariateNormal", 1.48, seed=0), run("auto:AutoMultivariateNormal", 2.53, seed=1),
            run("auto:AutoNormal", 1.47, seed=0), run("auto:AutoNormal", 1.50, seed=1)]
    warnings = posterior_warnings(runs[:2])  # without the family it contains, to be read beside
    assert len(warnings) == 1 and warnings[0].startswith(
        "- auto-AutoMultivariateNormal: its seeds end at gaps from 1.480 (seed 0) to 2.530 (seed 1)")
    assert len(posterior_warnings(runs)) == 2  # and seed 1's gap above the mean field's
    assert posterior_warnings([run("auto:AutoNormal", 1.47, seed=0), run("auto:AutoNormal", 1.62, seed=1)]) == []
    trained = [{**one, "model": {"parameters": 3}} for one in runs[:2]]  # each seed fits its own model: no claim
    assert posterior_warnings(trained) == []


def test_a_containing_family_below_the_seeds_mean_field_check_is_short_of_its_optimum():
    def checked(elbo, check):
        record = run("auto:AutoMultivariateNormal", 2.5)
        record["train"].update(elbo=elbo, elbo_stderr=0.02, mean_field_check={"elbo": check, "elbo_stderr": 0.02})
        return record

    warnings = posterior_warnings([checked(-83.8, -82.84)])
    assert len(warnings) == 1 and "below -82.840, which a mean-field fit" in warnings[0] and "0.96 nats" in warnings[0]
    assert "could not start at that fit" in warnings[0]  # the default, yet not started there (a subsample's q)
    assert "--warm-start mean-field starts it at that fit" in posterior_warnings([checked(-83.8, -82.84)], "off")[0]
    started = {**checked(-83.8, -82.84), "warm_start": {"from": "auto:AutoNormal", "elbo": -82.84}}
    assert "--warm-start" not in posterior_warnings([started])[0]
    assert posterior_warnings([checked(-82.9, -82.84)]) == []  # within the checks' noise and 0.1
    with_mean_field = [checked(-83.8, -82.84), run("auto:AutoNormal", 1.5)]  # compared with that run once, not twice
    warnings = posterior_warnings(with_mean_field)
    assert len(warnings) == 1 and "a family it contains" in warnings[0]
    short = run("auto:AutoNormal", 37.3)  # a GP classification's: stopped 2.8 nats below the seed's check, "converged"
    short["train"].update(elbo=-55.16, elbo_stderr=0.03)
    warnings = posterior_warnings([checked(-55.0, -52.39), short])  # full rank: held to the AutoNormal run instead
    assert len(warnings) == 1 and "auto-AutoNormal seed 0: its ELBO of D -55.160 is below -52.390" in warnings[0]
    assert "another fit of its own family" in warnings[0] and "2.77 nats" in warnings[0]
    short["train"].update(elbo=-52.40)
    assert len(posterior_warnings([checked(-52.4, -52.39), short])) == 0  # within the checks' noise


@pytest.mark.slow  # about 28 s; in CI tests/global_latents/test_evidence.py: a reference that reads low is replaced by
# AIS from the prior, and SMC's particles in another mode sit far outside it; the warnings in this file's unit tests
def test_mirror_modes_the_reference_misses_are_counted_by_annealing_from_the_prior(tmp_path):
    """A reference fitted in one of two mirror modes reads log 2 low with a tiny error bar (a tester's mixture at the
    defaults: 0.69 low at 168 s.e.); SMC's particles far outside it send the evidence to AIS from the prior, which
    counts both, and the study says why, once per guide and seed group."""
    rows = truth.mirror_means_data(60)
    np.savetxt(tmp_path / "x.csv", rows.numpy(), delimiter=",")
    (tmp_path / "two_means.py").write_text(truth.mirror_means(2))
    result = elbogap.compare(str(tmp_path / "two_means.py:model"), ["auto:AutoNormal"], str(tmp_path / "x.csv"),
                             out=tmp_path / "out", seeds=[0], jobs=1, figures=False, snr_draws=0, schedule="fixed",
                             steps=300, evidence_chains=128, evidence_steps=800, iw_samples=200, reference="none")
    (run,) = result.runs
    metrics, check = run["train"], run["evidence"]["stages"]["prior_check"]
    exact = truth.mirror_means_log_evidence(rows)
    assert check["modes"] and metrics["log_px_start"] == "prior" and run["evidence"]["stages"]["fit"]["smc_far"] > 0.1
    assert abs(metrics["log_px"] - exact) < 4 * metrics["log_px_stderr"] + 0.1, (metrics["log_px"], exact)
    assert abs(check["switched"]["log_evidence"] - (exact - math.log(2))) < 0.1  # the reference saw one mode
    assert abs(metrics["kl_gap"] - math.log(2)) < 0.25  # q sits in one mode: about log 2 from the posterior
    report = (tmp_path / "out" / "results.md").read_text()
    assert "the reference missed modes it did not settle in" in report
    assert "of the particles of tempered SMC" not in report  # the evidence counts every mode: no doubt left to say


def test_an_iaf_is_held_to_the_mean_field_unless_its_scales_sit_at_pyros_bounds():
    """The IAF contains the mean field (and every Gaussian) within Pyro's bounds on its scales: above AutoNormal's or
    full rank's gap it is short of its optimum, said once; where its scales sit at those bounds
    (``scales_at_bound``), that is said instead, once."""
    runs = [run("auto:AutoNormal", 0.5), run("auto:AutoIAFNormal", 2.0)]
    warnings = posterior_warnings(runs)
    assert len(warnings) == 1 and warnings[0].startswith("- auto-AutoIAFNormal seed 0: its gap 2.000 is above")
    full = run("auto:AutoMultivariateNormal", 0.4)
    full["train"].update(elbo=-10.4, elbo_stderr=0.02, mean_field_check={"elbo": -10.5, "elbo_stderr": 0.02})
    runs[1]["train"].update(elbo=-12.0, elbo_stderr=0.02)
    warnings = posterior_warnings([full, runs[1]])  # above full rank, and below the check full rank kept: once
    assert len(warnings) == 1 and "its gap 2.000 is above auto-AutoMultivariateNormal's 0.400" in warnings[0]
    assert len(posterior_warnings([full, *runs])) == 1  # above AutoNormal's too: the best it contains, once
    runs[1]["train"]["scales_at_bound"] = 3
    for study in (runs, [full, runs[1]]):
        warnings = posterior_warnings(study)
        assert len(warnings) == 1 and "sits at the bound Pyro's IAF puts on it" in warnings[0] and "on 3 latent" \
            in warnings[0]


def test_a_family_is_held_to_one_it_contains_by_their_elbos_whose_evidence_is_shared():
    """The random-effects example at the defaults: the IAF (which holds every Gaussian, its network linear) at gap
    0.452 and full rank at 0.215, each ± 0.037 with the evidence's error in it, ± 0.02 without: their difference is
    the ELBOs', 0.237 against 3 x 0.028 + 0.1, and is warned."""
    iaf, full = run("auto:AutoIAFNormal", 0.452), run("auto:AutoMultivariateNormal", 0.215)
    for record in (iaf, full):
        record["train"]["kl_gap_stderr"] = 0.037
    warnings = posterior_warnings([full, iaf])
    assert len(warnings) == 1 and warnings[0].startswith("- auto-AutoIAFNormal seed 0: its gap 0.452 is above "
                                                         "auto-AutoMultivariateNormal's 0.215")
    # the example rerun: 0.369 against 0.217 at ELBO s.e. 0.02, 0.152 above: short by more than max(0.1, 3 s.e.)
    iaf, full = run("auto:AutoIAFNormal", 0.369), run("auto:AutoMultivariateNormal", 0.217)
    assert len(posterior_warnings([full, iaf])) == 1
    iaf, full = run("auto:AutoIAFNormal", 0.29), run("auto:AutoMultivariateNormal", 0.217)
    assert posterior_warnings([full, iaf]) == []  # 0.073 above: within 0.1


def test_the_training_line_names_the_start_each_iaf_run_kept():
    runs = [run("auto:AutoNormal", 0.5), run("auto:AutoIAFNormal", 0.2), run("auto:AutoIAFNormal", 0.3, seed=1)]
    for iaf, kept in zip(runs[1:], ("mean-field fit", "Pyro's start"), strict=True):
        iaf["second_start"] = {"kept": kept, "elbo": [-10.3, -10.2] if kept == "mean-field fit" else [-10.3, -10.4]}
    sentence = second_start_sentence(runs)
    assert "auto-AutoIAFNormal trained twice" in sentence and "auto-AutoNormal" not in sentence
    assert "seed 0: mean-field fit (ELBO -10.300 from Pyro's start, -10.200 from the fit)" in sentence
    assert "seed 1: Pyro's start" in sentence
    assert second_start_sentence(runs[:1]) == ""


def test_several_seeds_show_their_spread_and_the_means_error_and_no_nonzero_number_reads_as_zero():
    """A tester's normal-Gamma study: log p(D) -72.682 ± 0.000 over two seeds, each known to 0.001; the table now
    says both, with digits enough to tell a small number from 0. The (s.e.) is the mean's, sqrt(sum e^2) / seeds, as
    the per-point tables and the API's KEY_mc_stderr give it (it was the mean of the seeds' own errors)."""
    runs = [run("auto:AutoNormal", 0.0231, seed=0), run("auto:AutoNormal", 0.0198, seed=1)]
    for record, evidence, stderr in zip(runs, (-72.6819, -72.6816), (0.0009, 0.0016), strict=True):
        record["train"].update(log_px=evidence, log_px_stderr=stderr, kl_gap_per_point=record["train"][
            "kl_gap"] / 30, kl_gap_stderr=0.004, converged=True)
        record["converged"] = True
    row = gap_table(runs)[2]
    assert " 0.000 " not in row and " 0.000)" not in row
    assert "| -72.682 ± 0.00021 (s.e. 0.001) |" in row and "| 0.021 ± 0.002 (s.e. 0.003) |" in row
    assert row.endswith("| 0.003 | 2 | yes |")  # the MC s.e. of the mean gap
    assert "| 0.000715 ± 7.8e-05 |" in row  # the gap per point, to the digits of its spread


def test_every_seed_annealed_non_centred_is_named_once():
    """A tester's centred hierarchy: both seeds' evidences were annealed non-centred, and the line named seed 0 alone
    (seed 1's pilots differed by less than the margin that makes the funnel a finding)."""
    runs = [run("auto:AutoNormal", 0.3, seed=seed) for seed in (0, 1)]
    for record, above in zip(runs, (0.9, 0.05), strict=True):
        record["evidence"]["stages"]["coordinates"] = {
            "chosen": "non-centred", "sites": ["theta"],
            "pilots": {"as written": {"log_evidence": -40.0, "stderr": 0.05},
                       "non-centred": {"log_evidence": -40.0 + above, "stderr": 0.05}}}
    (line,) = [line for line in posterior_warnings(runs) if "non-centred form" in line]
    assert line.startswith("- log p(D), seeds 0, 1: annealed in the program's non-centred form, whose pilot read "
                           "0.90 nats above the program's as written on seed 0 (")
    assert "the centred site theta makes a funnel" in line


def test_a_seed_mean_of_importance_estimates_one_of_which_has_no_error_bar_says_so():
    """A tester's mean-field fit on 1,000 rows: seed 0's estimate 0.74 below AIS, seed 1's 0.63 above at k-hat 1.05;
    the column showed their mean, -777.659 ± 0.971, as if both were estimates to read."""
    runs = [run("auto:AutoNormal", 3.0, seed=seed) for seed in (0, 1)]
    for record, estimate, stderr in zip(runs, (-778.34, -776.97), (0.3, math.nan), strict=True):
        record["train"].update(log_px_iwae=estimate, log_px_iwae_stderr=stderr, log_px_stderr=0.001, converged=True)
        record["converged"] = True
    assert "| -777.655 ± 0.969 (no error bar: k-hat above 0.5) |" in gap_table(runs)[2]
    runs[1]["train"]["log_px_iwae_stderr"] = 0.3
    assert "no error bar" not in gap_table(runs)[2]


def test_a_q_that_leaves_much_of_a_reliable_reference_beyond_four_of_its_sds_is_warned_once_per_guide():
    """A tester's Cauchy likelihood on two clusters: every q sat in one mode (49% of the reference's mass beyond 4 of
    its sds) with no Warnings line: its mean lay about one reference sd from the reference's, whose sd spans both
    modes."""
    runs = [run("auto:AutoNormal", 0.72, seed=seed) for seed in (0, 1)] + [run("auto:AutoIAFNormal", 0.1)]
    for record, share in zip(runs, (0.49, 0.47, 0.08), strict=True):
        record["reference"]["sites"]["locs"]["mass_outside_q"] = share
    warnings = outside_q_warnings(runs)
    assert len(warnings) == 1 and warnings[0].startswith("- auto-AutoNormal seeds 0, 1: 47-49% of the reference")
    assert warnings[0] in posterior_warnings(runs)
    for record in runs:
        record["reference"]["reliable"] = False  # a rough reference is said to be rough, not read
    assert outside_q_warnings(runs) == []


def test_the_draws_of_q_are_counted_over_every_run():
    """A tester's study said "from 2000 draws of q", the first run's count, where three guides of four took 1000."""
    runs = [run("auto:AutoNormal", 0.3), run("auto:AutoIAFNormal", 0.1)]
    for record, count in zip(runs, (2000, 1000), strict=True):
        record["train"]["elbo_samples"] = count
    assert draws_words(runs).startswith("1000-2000 draws of q (each run's `elbo_samples`")
    assert draws_words(runs[:1]) == "2000 draws of q"


def test_the_evidence_table_shows_a_precise_evidence_to_the_digits_of_its_error():
    """A tester's normal-mean model: log p(D) -31.84383 ± 0.0002 read "-31.844 | 0.000" in this table."""
    record = importance("auto:AutoNormal", -31.84348, 0.00042, 0.1)
    record["train"].update(log_px=-31.84383, log_px_stderr=0.0002, log_px_dof=5.8)
    row = evidence_section([record])[4]
    assert row.startswith("| 0 | -31.84383 | 0.0002 | -31.84432, -31.84334 | – | "
                          "-31.84348 ± 0.00042 (auto-AutoNormal) |")


def test_a_model_with_its_own_parameters_has_an_evidence_per_run_and_the_report_says_so(tmp_path):
    """The noise scale is a ``pyro.param`` trained beside each guide: each run's model differs, and so does its
    log p(D); the report said "one estimate of log p(D) per seed, the same for every guide" (a tester's)."""
    (tmp_path / "noisy.py").write_text(
        "import pyro, torch, pyro.distributions as dist\n"
        "def model(data):\n"
        "    noise = pyro.param('noise', data.new_tensor(1.0), constraint=dist.constraints.positive)\n"
        "    mu = pyro.sample('mu', dist.Normal(data.new_tensor(0.0), 1.0))\n"
        "    with pyro.plate('rows', data.shape[0]):\n"
        "        pyro.sample('y', dist.Normal(mu, noise), obs=data[:, 0])\n")
    np.savetxt(tmp_path / "y.csv", np.linspace(-1.0, 1.0, 12)[:, None], delimiter=",")
    result = elbogap.compare(str(tmp_path / "noisy.py:model"), ["auto:AutoNormal"], str(tmp_path / "y.csv"),
                             out=tmp_path / "out", seeds=[0], jobs=1, figures=False, snr_draws=0, schedule="fixed",
                             steps=100, evidence_chains=64, evidence_steps=50, iw_samples=100, reference="none")
    assert result.runs[0]["train"]["log_px_guide_independent"] is False
    report = (tmp_path / "out" / "results.md").read_text()
    assert "against each run's own estimate of log p(D)" in report and "| 0 (auto-AutoNormal) | " in report
