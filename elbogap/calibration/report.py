"""The tables and figures of a calibration study (results.md, results.json, ranks.png, pvalues.png, gaps.png)."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from elbogap.calibration.stats import sbc_bins
from elbogap.config import Config, to_toml
from elbogap.export import export_calibration
from elbogap.figure_tools import plt, save
from elbogap.runs import write_atomically
from elbogap.summary import converged_cell


def trained_verdict(results: dict, guide: str, row: dict) -> str:
    """A per-point calibration's guide trained as ``compare`` trains it: its ``converged`` cell as compare's table
    writes it (``unclear`` where the trend rule could not tell), from the run's record where it kept the rule's
    evidence, else yes or no."""
    runs = [run for run in results.get("runs", []) if run.get("guide") == guide]
    if runs and all("convergence" in run for run in runs):
        return converged_cell(runs)
    return "yes" if row["converged"] == row["fits"] else "no"


def shared_simulations_warning(summary: dict) -> list[str]:
    """A line where several guides of a calibration of global latents fail a test: every guide ranks the truths of
    the same simulated data sets, so families that hold the posterior get nearly the same u on each and fail or pass
    together (a tester's three Gaussian families of a conjugate regression: VSBC p 0.011, 0.012, 0.011 on one seed,
    0.087 on the next)."""
    flagged = [guide for guide, row in summary.items()
               if not all(stats["sbc_calibrated"] and stats["vsbc_symmetric"] for stats in row["sites"].values())]
    if len(flagged) < 2:
        return []
    return [f"- {', '.join(flagged)} fail a test on the same simulated data sets: their tests are not independent "
            "(families that hold the posterior give nearly the same u on each data set), so one unlucky set of "
            "simulations fails them together; before reading a failure of a family that can hold the posterior, "
            "rerun with another first --seeds"]


def markdown(results: dict) -> str:
    config, summary = results["config"], results.get("summary", {})
    count = len(results["simulations"])
    per_point = results.get("latents") == "per point"
    if per_point:
        how = (f"Each guide trained once as `compare` trains it (seed {results['seed']}); then {count} points "
               f"simulated from its own trained model (z* ~ p(z), x ~ p(x | z*)), its encoder's q(z | x) drawn "
               f"{config['calibration_draws']} times at each. Per latent dimension, u = the share of q's draws "
               "below the z* that made the point. SBC: a chi-square test ")
    else:
        how = (f"{count} data sets simulated from the model's prior predictive (seed {results['seed']}); each guide "
               f"fitted to each as `compare` fits it and drawn {config['calibration_draws']} times. Per latent "
               "element, u = the share of q's draws below the latent that made the data set. SBC: a chi-square test ")
    lines = [f"# elbogap calibrate: {config['model']} on {config['data']}", "",
             how + "that u is uniform (it is, for the exact posterior); VSBC: a Kolmogorov-Smirnov test that u and "
             "1 - u have one distribution (q centred where the posterior is). A site passes at 0.05 after Bonferroni "
             "over its elements. Coverage: the share of true latents inside q's central 90% interval.", ""]
    warnings = [f"- {guide}: its training was not shown to converge (still rising, or its rule could not tell); its "
                "encoder is judged as it is" if per_point else
                f"- {guide}: {row['fits'] - row['converged']} of {row['fits']} fits were not shown to converge (still "
                "rising, or their rule could not tell); their ranks count as they are"
                for guide, row in summary.items() if row["converged"] < row["fits"]]
    if not results.get("complete", True):
        warnings.insert(0, f"- **Partial:** {count} of {results.get('planned', '?')} simulations; rerun the same "
                           "command with --resume to finish (the tests below read only these)")
    warnings += [f"- {name} is left out of the default guides: {why}"
                 for name, why in results.get("guides_left_out", {}).items()]
    if count < 20:
        warnings.append(f"- {count} simulations: the tests have little power; read the coverage and the share of u "
                        "near 0 or 1 beside them")
    if not per_point:  # per-point guides rank points each simulated from its own trained model
        warnings += shared_simulations_warning(summary)
    if warnings:
        lines += ["## Warnings", "", *warnings, ""]
    lines += ["## Per guide and latent site", "",
              "| guide | site | elements | SBC: smallest p | SBC | VSBC: smallest p | VSBC | share of u within 0.1 "
              "of 0 or 1 (0.2 if calibrated) |", "|---" * 8 + "|"]
    for guide, row in summary.items():
        for site, stats in row["sites"].items():
            lines.append(f"| {guide} | {site} | {stats['elements']} | {stats['sbc_p_min']:.2g} | "
                         f"{'calibrated' if stats['sbc_calibrated'] else '**not calibrated**'} | "
                         f"{stats['vsbc_p_min']:.2g} | {'symmetric' if stats['vsbc_symmetric'] else '**asymmetric**'} "
                         f"| {stats['edge_share']:.2f} |")
    gaps = all("mean_kl_gap" in row for row in summary.values())
    if per_point:
        lines += ["", "## Per guide", "", "| guide | 90% interval covers the truth | training converged |",
                  "|---|---|---|"]
        lines += [f"| {guide} | {row['coverage_90']:.1%} ± {row['coverage_90_stderr']:.1%} | "
                  f"{trained_verdict(results, guide, row)} |" for guide, row in summary.items()]
    else:
        lines += ["", "## Per guide", "", "| guide | 90% interval covers the truth | fits converged | mean ELBO of D |"
                  + (" mean KL gap ± s.e. | median KL gap | mean gap to BDMC's upper bound |" if gaps else ""),
                  "|---" * (7 if gaps else 4) + "|"]
    for guide, row in summary.items() if not per_point else ():
        lines.append(f"| {guide} | {row['coverage_90']:.1%} ± {row['coverage_90_stderr']:.1%} | "
                     f"{row['converged']} of {row['fits']} | {row['mean_elbo']:.3f} |"
                     + (f" {row['mean_kl_gap']:.3f} ± {row['mean_kl_gap_stderr']:.3f} | {row['median_kl_gap']:.3f} | "
                        f"{row['mean_kl_gap_upper']:.3f} |" if gaps else ""))
    if gaps:
        lines += ["", "KL gap = log p(D) - ELBO on each simulated data set, log p(D) by the evidence estimator of "
                  "`compare` (AIS from a fitted reference, a stochastic lower bound); BDMC's reverse chains from the "
                  "true latents give an upper bound, so the gap to it bounds the KL from above. The ± is over "
                  "simulations: the gap varies with the data set."]
    at_once = results.get("fits_at_once") or {}
    if at_once:  # how the fits were trained: stacked into one program, or one at a time and why
        said = [f"{guide} up to {how} at once (stacked)" if isinstance(how, int) else f"{guide} {how}"
                for guide, how in at_once.items()]
        lines += ["", "Fits: " + "; ".join(said) + "."]
    seconds = results.get("seconds", {})
    lines += ["", f"Simulations took {seconds.get('simulations', float('nan')):.0f} s. Reading: u piled at both "
              "ends means q is too narrow (overconfident), in the middle too wide, at one end biased. An exact "
              "posterior passes SBC; a family that cannot hold the posterior fails it with enough simulations, "
              "and VSBC then says whether its point estimates are still centred.", ""]
    return "\n".join(lines)


def rank_figure(results: dict, path: Path) -> Path:
    """Per guide (rows) and latent site (columns, the first six): the histogram of u over simulations and
    elements, with the count a calibrated q gives and its 99% binomial band."""
    summary, simulations = results["summary"], results["simulations"]
    guides = list(summary)
    sites = list(next(iter(summary.values()))["sites"])[:6]
    fig, axes = plt.subplots(len(guides), len(sites), figsize=(max(6.0, 2.8 * len(sites)), 2.2 * len(guides) + 0.6),
                             squeeze=False)
    for row, guide in enumerate(guides):
        for col, site in enumerate(sites):
            shares = np.concatenate([np.asarray(s["fits"][guide]["shares"][site]) for s in simulations])
            bins = sbc_bins(len(shares))  # the site's elements pooled
            axis = axes[row, col]
            axis.hist(shares, bins=bins, range=(0, 1), color="tab:blue", alpha=0.7)
            expected = len(shares) / bins
            spread = 2.576 * np.sqrt(expected * (1 - 1 / bins))
            axis.axhspan(max(expected - spread, 0), expected + spread, color="grey", alpha=0.2)
            axis.axhline(expected, color="black", lw=0.8)
            axis.set_xticks([0, 0.5, 1])
            if row == 0:
                axis.set_title(site, fontsize=9)
            if col == 0:
                axis.set_ylabel(guide, fontsize=8)
    fig.suptitle("u: share of q's draws below the true latent, over simulations\n(line: a calibrated q's count; grey: "
                 "its 99% band)", fontsize=9)
    return save(fig, path)


def pvalue_figure(results: dict, path: Path) -> Path:
    """Per guide: histograms of the SBC and VSBC p-values over every latent element (uniform if calibrated)."""
    summary = results["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for test, axis in zip(("sbc_p", "vsbc_p"), axes, strict=True):
        for guide, row in summary.items():
            values = [p for stats in row["sites"].values() for p in stats[test]]
            axis.hist(values, bins=10, range=(0, 1), histtype="step", lw=1.5, label=guide)
        axis.set(xlabel="p-value", ylabel="latent elements", title="SBC (uniform ranks)" if test == "sbc_p"
                 else "VSBC (symmetric ranks)")
    axes[0].legend(fontsize=8)
    return save(fig, path)


def gap_figure(results: dict, path: Path) -> Path:
    """Per guide: the KL gap on each simulated data set (points, with the evidence's 2 s.e.) and the gap to BDMC's
    upper bound (ticks above): where the sandwich is tight, the gap is known on that data set."""
    fig, axis = plt.subplots(figsize=(8, 3.5))
    simulations = results["simulations"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    guides = list(results["summary"])
    for number, guide in enumerate(guides):
        fits = [simulation["fits"][guide] for simulation in simulations]
        position = np.arange(len(fits)) + (number - (len(guides) - 1) / 2) * 0.8 / len(guides)
        shown = [index for index, fit in enumerate(fits) if "kl_gap" in fit]  # a fit without an ELBO has no gap
        position, fits = position[shown], [fits[index] for index in shown]
        axis.errorbar(position, [fit["kl_gap"] for fit in fits], yerr=[2 * fit["kl_gap_stderr"] for fit in fits],
                      fmt="o", ms=3, color=colors[number % len(colors)], label=guide)
        axis.plot(position, [fit["kl_gap_upper"] for fit in fits], "_", ms=8, color=colors[number % len(colors)])
    axis.axhline(0, color="black", lw=0.6)
    axis.set(xlabel="simulated data set", ylabel="KL gap (nats)",
             title="KL gap per simulation (dots ± 2 s.e.; ticks: to BDMC's upper bound)")
    axis.legend(fontsize=8)
    return save(fig, path)


def calibration_figures(results: dict, out: Path) -> list[Path]:
    """ranks.png, pvalues.png and, where every guide's gaps were measured, gaps.png in ``out``, from the study's
    results alone (``elbogap plot`` redraws them); none before any simulation is summarized."""
    if not results.get("summary"):
        return []
    written = [rank_figure(results, out / "ranks.png"), pvalue_figure(results, out / "pvalues.png")]
    if all("mean_kl_gap" in row for row in results["summary"].values()):
        written.append(gap_figure(results, out / "gaps.png"))
    return written


def write_calibration(results: dict, out: Path, figures: bool = True, final: bool = False) -> list[Path]:
    """results.json, results.md and (with ``figures``) ranks.png, pvalues.png and gaps.png in ``out``, and
    config.toml; when ``final`` and ArviZ is installed (the ``arviz`` extra), each guide's calibration as NetCDF
    (:func:`~elbogap.export.export_calibration`); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(to_toml(Config(**results["config"]), "calibrate"))
    write_atomically(out / "results.json", json.dumps(results, indent=2))
    write_atomically(out / "results.md", markdown(results))
    written = [out / "results.json", out / "results.md", out / "config.toml"]
    if figures:
        written += calibration_figures(results, out)
    if final and importlib.util.find_spec("arviz") is not None:
        written += export_calibration(out, results)
    return written
