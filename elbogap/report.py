"""results.json, results.csv and results.md: the numbers of a comparison, as data and as a table."""

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from elbogap.describe import model_text
from elbogap.global_latents.report import evidence_sections
from elbogap.global_latents.report import warning_lines as evidence_warnings
from elbogap.inference.log_px import methods
from elbogap.records import TOTAL_KEYS, TOTALED, point_splits
from elbogap.summary import (
    approx_gap_note,
    bound_markers,
    cell,
    convergence_warnings,
    held_out_warnings,
    on_log_px_points,
    over_seeds,
    plus_minus,
    rows,
    snr_rows,
    stacked_sentence,
    table,
)

GAP_COLUMNS = [("gap_log_px", "log p(x)"), ("gap_elbo", "ELBO of q"), ("elbo_star", "ELBO of q*"),
               ("gap_kl", "KL gap"), ("approx_gap", "approximation gap"), ("amort_gap", "amortization gap")]
DIAGNOSTIC_COLUMNS = [("khat_mean", "mean k-hat"), ("khat_bad_share", "share k-hat above threshold"),
                      ("ess_mean", "mean ESS"), ("active_units", "active units")]


def main_columns(splits: list[dict]) -> list[tuple[str, str]]:
    """The main table's columns: log p(x), the ELBO on its points and the KL gap first, so that
    log p(x) - ELBO = KL gap within a row; where log p(x) covers only some points (AIS's subset),
    the whole split's ELBO, IWAE and terms follow as columns named for the points they cover."""
    if all(metrics.get("log_px_points", metrics["num_points"]) == metrics["num_points"] for metrics in splits):
        return [("log_px", "log p(x)"), ("elbo", "ELBO"), ("kl_gap", "KL gap"), ("log_px_iwae", "IWAE log p(x)"),
                ("recon", "recon"), ("kl_prior", "KL to prior")]
    counts = {metrics["num_points"] for metrics in splits}
    every = f"all {counts.pop()} points" if len(counts) == 1 else "all evaluated points"
    return [("log_px", "log p(x)"), ("elbo_log_px_points", "ELBO"), ("kl_gap", "KL gap"),
            ("elbo", f"ELBO, {every}"), ("log_px_iwae", f"IWAE log p(x), {every}"), ("recon", f"recon, {every}"),
            ("kl_prior", f"KL to prior, {every}")]


def seed_counts(runs: list[dict]) -> set[int]:
    """How many seeds the rows of a table over ``runs`` average: one count per guide."""
    return {sum(run["guide"] == guide for run in runs) for guide in {run["guide"] for run in runs}}


def split_table(runs: list[dict], split: str) -> list[str]:
    """A split's main table (:func:`main_columns`), with whether each guide's fits converged."""
    return table(runs, split, main_columns([on_log_px_points(run[split]) for run in runs]), converged=True)


def gap_notes(runs: list[dict], splits: Sequence[str] = ("test", "train")) -> list[str]:
    """A line per run and split whose approximation gap lies below -2 standard errors, and why it may."""
    return [f"- {run['guide']} seed {run['seed']}, {split}: {note}" for run in runs for split in splits
            if split in run and (note := approx_gap_note(run[split]))]


def gap_section(runs: list[dict], splits: Sequence[str] = ("test", "train")) -> list[str]:
    """The approximation/amortization tables with their errors, the bound marker's meaning and the notes."""
    lines = []
    skipped = {run["guide"]: run[split]["gap_split"] for run in runs for split in splits if "gap_split" in run[split]}
    runs = [run for run in runs if run["guide"] not in skipped]
    for split in splits:
        lines += [f"### {split}", "", *table(runs, split, GAP_COLUMNS, count="gap_points"), ""]
    lines += [f"- {guide}: {reason}." for guide, reason in skipped.items()] + ([""] if skipped else [])
    lines += [f"log p(x) - ELBO of q = KL gap = approximation + amortization gap. {plus_minus(seed_counts(runs))}",
              ""]
    if any(bound_markers([run[split] for split in splits]) for run in runs):
        lines += ["≤ / ≥: for this family q* is searched through the encoder's features, which may not reach its "
                  "best member for each point: the approximation gap is an upper bound and the amortization gap "
                  "a lower bound.", ""]
    notes = gap_notes(runs, splits)
    if notes:
        lines += ["Approximation gaps below zero (a KL divergence cannot be negative):", "", *notes, ""]
    return lines


def caveats(runs: list[dict], split: str) -> list[str]:
    """What the ± of the split's log p(x) leaves out, once per method that gave it (its registry entry's caveat), the
    one that filled in the points another left without an error bar included."""
    used = dict.fromkeys(name for run in runs
                         for name in (run[split]["log_px_method"], run[split].get("log_px_filled_by")) if name)
    return [f"\n{methods()[name].caveat}." for name in used if methods()[name].caveat]


def describe_log_px(split_metrics: dict) -> str:
    """How a split's log p(x) was computed, in the registry's words, and on how many of its points."""
    text = methods()[split_metrics["log_px_method"]].describe(split_metrics)
    if filled := split_metrics.get("log_px_filled_by"):
        text += (f", and on the {split_metrics['log_px_filled_points']} points it left without an error bar "
                 f"{methods()[filled].describe(split_metrics)}")
    if split_metrics.get("log_px_points", split_metrics["num_points"]) < split_metrics["num_points"]:
        text += (f", on {split_metrics['log_px_points']} of the split's {split_metrics['num_points']} points "
                 "(the gap points among them); the ELBO and the KL gap beside it are on those points too, and "
                 "the columns named \"all ... points\" cover every evaluated point")
    return text


def describe_methods(runs: list[dict], config: dict) -> list[str]:
    """How the numbers of the runs' splits of points were computed (the test split's settings, where it has one)."""
    first = runs[0][point_splits(runs[0])[0]]
    worst_log_px = max(run[split]["log_px_stderr"] for run in runs for split in point_splits(run))
    worst_elbo = max(run[split]["elbo_stderr"] for run in runs for split in point_splits(run))
    independent = "independent of the guide" if first.get("log_px_guide_independent", True) else \
        "dependent on the guide judged, so gaps of poorer guides look smaller than they are"
    lines = [
        f"- log p(x): {describe_log_px(first)}; {independent}; largest standard error of a split mean: "
        f"{worst_log_px:.2g} nats.",
        f"- IWAE log p(x): the importance-weighted estimate from the {first.get('log_px_iwae_samples', '')} draws "
        "of each guide's q, beside the reported value (a lower bound whose bias depends on q).",
        f"- ELBO = recon - KL to prior, with {first['elbo_samples']} samples of q per data point; "
        f"the KL to the prior is analytic where the family allows, Monte Carlo otherwise; "
        f"largest standard error of a split mean: {worst_elbo:.2g} nats.",
        "- KL gap = log p(x) - ELBO = KL(q(z|x) || p(z|x)), the price of the approximate posterior.",
        "- Each cell: the mean over seeds, in nats per data point; higher log p(x) and ELBO are better, smaller "
        "gaps are better. With one seed, ± is the Monte-Carlo standard error of the split mean within the run; "
        "with several, ± is the standard deviation of the per-seed values (Monte-Carlo noise and what the seed "
        "changes) and (s.e.) the Monte-Carlo standard error of their mean. results.json's `summary` keeps both "
        "(`KEY_seed_sd`, `KEY_mc_stderr`).",
    ]
    widths = [f"{run['guide']} seed {run['seed']}: {run['bdmc']['width']:.3f}" for run in runs if "bdmc" in run]
    if widths:
        settings = next(run["bdmc"] for run in runs if "bdmc" in run)
        lines.append(f"- BDMC sandwich width (upper - lower bound on log p(x) of {settings['points']} points simulated "
                     f"from each trained model, nats; the error bar of AIS at these settings): {'; '.join(widths)}.")
    measured = next((run for run in runs if "snr_draws" in run), None)
    if measured is not None:
        lines.append(f"- Gradient SNR (signal-to-noise ratio, Rainforth et al. 2018, arXiv:1802.04537): for each "
                     f"entry of the guide's (encoder) or the model's (decoder) parameters, |mean| / sd of "
                     f"{measured['snr_draws']} independent draws of the training objective's gradient on one fixed, "
                     "seeded training minibatch, measured at every evaluation during training and after the last "
                     "step; each group is summarized by the median over its entries (entries whose gradient is "
                     "zero in every draw left out). The draws do not change the training run's random stream.")
    if "ais" in first:
        acceptance = [a for run in runs for split in point_splits(run) if "ais" in run[split]
                      for a in run[split]["ais"]["acceptance"]]
        lines.append(f"- AIS: HMC step sizes tuned per point and temperature band in a pilot run toward acceptance "
                     f"{first['ais']['target_accept']}, then frozen; acceptance per band ranged "
                     f"{min(acceptance):.2f}-{max(acceptance):.2f}. `elbogap evaluate RUN_DIR --bdmc N` measures "
                     "the error bar of these settings (the BDMC sandwich width).")
    return lines


def model_line(runs: list[dict], config: dict) -> str:
    """The model that ran, as its first run recorded it (its sites from the trace for a user's program)."""
    record = runs[0].get("model")
    if record is None:  # a record written before runs described their model
        return f"{config['model']}, latent dim {config['latent_dim']}"
    return model_text(record)


def finished(runs: list[dict]) -> list[dict]:
    """The runs that completed (a run stopped by a numerical fault carries ``failed`` instead)."""
    return [run for run in runs if "failed" not in run]


#: a split of fewer points than this gets a Warnings line: its means rest on too few points to compare families by
SMALL_SPLIT = 10


def small_split_warnings(runs: list[dict]) -> list[str]:
    """A line per split of fewer than :data:`SMALL_SPLIT` points (a tester's 3-row file trained on 2 rows and was
    tested on 1, without a word): its means are a few points', and a network fitted to them reads far higher on
    them than on new data."""
    sizes = {split: runs[0][split].get("split_points", runs[0][split]["num_points"])
             for split in ("train", "test") if split in point_splits(runs[0])}
    return [f"- the {split} split has {size} point{'s' if size != 1 else ''}: its numbers are the mean of too few "
            f"points to compare families by; give more rows (a larger --train-size / --test-size or data file)"
            for split, size in sizes.items() if size < SMALL_SPLIT]


def expected_runs(results: dict) -> int:
    """The runs the study asks for: each of its guides (those left out are no longer among them) from each seed."""
    config = results["config"]
    return len(config["guides"]) * len(config["seeds"])


def complete(results: dict) -> bool:
    """Whether every run the study asks for has a record (finished, or failed and marked so)."""
    return len(results["runs"]) >= expected_runs(results)


def markdown(results: dict) -> str:
    config, failed = results["config"], [run for run in results["runs"] if "failed" in run]
    runs = finished(results["runs"])
    lines = [f"# elbogap {results.get('command', 'compare')}: {config['model']} on {config['data']}", ""]
    if not complete(results):  # written after each run, and left so by a stop: say it is not the whole study
        lines += [f"**Partial: {len(results['runs'])} of {expected_runs(results)} runs.** The study is still running, "
                  "or it ended early (stopped, or a run failed: the command's last line said which); the same command "
                  "with --resume (resume=True in the API) goes on from there and rewrites this file.", ""]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {run['guide']} seed {run['seed']}: {run['failed']}" for run in failed] + [""]
    if not runs:
        return "\n".join(lines + ["No run has finished.", ""])
    if left_out := results.get("guides_left_out"):
        lines += ["## Guides left out", "", "The default families the model or the settings refused, or its size "
                  "priced out, each in one line:", "", *[f"- {name}: {why}" for name, why in left_out.items()], ""]
    lines += warnings_section(results, runs)
    for section in SECTIONS:
        lines += section(results, runs)
    return "\n".join(lines)


def warnings_section(results: dict, runs: list[dict]) -> list[str]:
    """Every Warnings line the runs' records call for: small splits of points, unconverged fits, held-out gaps, each
    split's notes on log p(x), and the whole data set's (:func:`~elbogap.global_latents.report.warning_lines`)."""
    warnings = small_split_warnings(runs) + convergence_warnings(runs) + held_out_warnings(runs) + [
        f"- {run['guide']} seed {run['seed']}, {split}: {run[split][key]}" for key in ("log_px_warning", "log_px_note")
        for run in runs for split in point_splits(run) if key in run[split]]
    warnings += evidence_warnings(results, runs)
    return ["## Warnings", "", *warnings, ""] if warnings else []


def split_sections(results: dict, runs: list[dict]) -> list[str]:
    """A table per split whose records are means over data points (:func:`~elbogap.records.point_splits`)."""
    lines, seeds = [], seed_counts(runs)
    for split in ("test", "train"):
        mine = [run for run in runs if split in point_splits(run)]
        if mine:
            lines += [f"## {split} split ({points([run[split] for run in mine])})", "", *split_table(mine, split), "",
                      f"log p(x) - ELBO = KL gap on the points of the row. {plus_minus(seeds)}",
                      *caveats(mine, split), ""]
    return lines


def gap_split_section(results: dict, runs: list[dict]) -> list[str]:
    """The approximation and amortization gaps, where the runs' test splits hold them."""
    runs = [run for run in runs if "test" in run and "train" in run]
    if not any("approx_gap" in run["test"] for run in runs):
        return []
    counts = {split: next((run[split]["gap_points"] for run in runs if "approx_gap" in run.get(split, {})), None)
              for split in ("test", "train")}
    where = (f"{counts['test']} points per split" if counts["test"] == counts["train"] else
             " and ".join(f"{count} points of the {split} split" for split, count in counts.items() if count))
    return ["## Why the gap exists: approximation vs amortization", "",
            f"On {where}, q* is the best member of each family "
            "for each point (per-point parameters refit with the model fixed until the ELBO stops rising): "
            "approximation gap = log p(x) - ELBO(q*), amortization gap = ELBO(q*) - ELBO(q); they add up "
            "to the KL gap on those points.", "", *gap_section(runs)]


def diagnostics_section(results: dict, runs: list[dict]) -> list[str]:
    """q as an importance proposal on the test split's points (k-hat, ESS, latent dimensions in use)."""
    mine = [run for run in runs if "test" in point_splits(run)]
    if not mine:
        return []
    return ["## Diagnostics of q as an importance proposal (test split)", "",
            f"PSIS k-hat per point (above {khat_threshold_text(mine)}: importance estimates from q are "
            "unreliable; the threshold is min(1 - 1/log10 S, 0.7) for S draws of q, as in loo), Kish's effective "
            "sample size of the importance weights, and latent dimensions in use.", "",
            *table(mine, "test", DIAGNOSTIC_COLUMNS, count="num_points"), "", plus_minus(seed_counts(mine)), "",
            *iwae_caution(mine)]


def methods_section(results: dict, runs: list[dict]) -> list[str]:
    """How the splits' numbers over points were computed, the figures and the model's and training's settings."""
    mine = [run for run in runs if point_splits(run)]
    if not mine:
        return []
    config = results["config"]
    return ["## How the numbers were computed", "", *describe_methods(mine, config), "",
            "Figures (when drawn): `training.png` (ELBO and log p(x) over training, and the gradient's "
            "signal-to-noise where measured), `gap_over_training.png` (the test split's KL gap at each evaluation "
            "during training), `gaps.png` (gap per family over seeds), `posteriors.png` (1-D and 2-D latents: "
            "p(z|x) against q(z|x)), `images.png` "
            "(reconstructions and prior samples of image data).", "",
            f"Model {model_line(mine, config)}. {mine[0].get('steps', config['steps'])} SVI steps of batch "
            f"{config['batch_size']} with lr {config['lr']} ({objective_line(config)}); "
            f"seeds {', '.join(map(str, config['seeds']))}.{stacked_sentence(mine)} Versions: "
            + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if k != "platform") + ".", ""]


def timing_section(results: dict, runs: list[dict]) -> list[str]:
    return [timing(results, runs), ""]


SNR_COLUMNS = [("snr_encoder", "encoder SNR (median)"), ("snr_encoder_mean", "encoder SNR (mean)"),
               ("snr_decoder", "decoder SNR (median)"), ("snr_decoder_mean", "decoder SNR (mean)")]


def snr_section(results: dict, runs: list[dict]) -> list[str]:
    """The table of the training gradient's signal-to-noise per guide, and what it means; none where not measured."""
    measured = [run for run in runs if "snr_draws" in run]
    if not measured:
        return []
    draws, batch = measured[0]["snr_draws"], measured[0].get("snr_batch_size")
    lines = ["## Gradient signal-to-noise at the end of training", "",
             f"The signal-to-noise ratio (SNR) of the training gradient after the last step, for the guide's "
             f"parameters (column *encoder*) and the model's (column *decoder*; none where the model has no "
             f"parameters): the median, and the mean, over parameter entries "
             f"of |mean| / sd over M = {draws} gradient draws on one fixed minibatch"
             f"{f' of {batch} training rows' if batch else ''}. Higher is a cleaner gradient; a "
             f"gradient with no signal reads about 0.67/√M = {0.674 / draws ** 0.5:.2f}.", "",
             "| guide | " + " | ".join(title for _, title in SNR_COLUMNS) + " | seeds |",
             "|---" * (len(SNR_COLUMNS) + 2) + "|"]
    for guide in dict.fromkeys(run["guide"] for run in measured):
        mine = [run for run in runs if run["guide"] == guide]
        lines.append(f"| {guide} | " + " | ".join(cell(over_seeds(mine, key)) for key, _ in SNR_COLUMNS)
                     + f" | {len(mine)} |")
    return lines + ["", "With several seeds, ± is the standard deviation of the per-seed values; – where a guide has "
                    "no such parameters (a model held fixed, a guide without parameters).", ""]


#: results.md's sections after its Warnings, in order; each draws itself where the records hold its metrics
SECTIONS = (evidence_sections, split_sections, gap_split_section, diagnostics_section, snr_section, methods_section,
            timing_section)


def iwae_caution(runs: list[dict]) -> list[str]:
    """One line where some points' k-hat says IWAE's standard error there may be too small (``log_px_iwae_note``)."""
    if not any("log_px_iwae_note" in run[split] for run in runs for split in point_splits(run)):
        return []
    return ["Where k-hat is above the threshold, q's importance weights have no usable variance, and the IWAE "
            "column's ± may understate its error on those points (`log_px_iwae_note` in results.json).", ""]


def khat_threshold_text(runs: list[dict]) -> str:
    """The k-hat threshold of the test split's draws, with S, e.g. ``0.67 (S = 1000)``."""
    test = runs[0]["test"]
    if "khat_threshold" not in test:
        return "0.7"
    return f"{test['khat_threshold']:.2f} (S = {test['khat_samples']})"


def points(splits: list[dict]) -> str:
    """``N points``, or ``N of M points`` where a seeded subset of the split was evaluated."""
    total = max(metrics.get("split_points", metrics["num_points"]) for metrics in splits)
    evaluated = sorted({metrics["num_points"] for metrics in splits})
    if evaluated == [total]:
        return f"{total} point{'s' if total != 1 else ''}"
    note = "; per-datapoint guides on all of them" if evaluated[-1] == total else ""
    return f"{evaluated[0]} of its {total} points, a seeded subset (--train-eval-points){note}"


#: how a run's phases are named in the footer; every other phase counts as evaluation
PHASE_NAMES = {"train": "training", "curve_evaluations": "evaluations during training",
               "gradient_snr": "gradient SNR",
               "checkpoints": "checkpoints", "bdmc": "BDMC", "evidence": "evidence",
               "reference": "reference posterior"}


def objective_line(config: dict) -> str:
    """The training objective, its particles and its gradient estimator, as results.md names them."""
    particles = config.get("particles") or 1
    text = f"{config['objective']} objective" + (f", K = {particles}" if particles > 1 else "")
    return text + f", {config.get('gradient', 'reparam')} gradient"


def timing(results: dict, runs: list[dict]) -> str:
    """The footer: where the time went, summed over runs, and the wall time of the whole command."""
    sums: dict[str, float] = {}
    for run in runs:
        for phase, seconds in run.get("seconds", {}).items():
            name = PHASE_NAMES.get(phase, "gap refits" if phase.startswith("gaps_") else "evaluation")
            sums[name] = sums.get(name, 0.0) + seconds
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sums.items())
    study = results.get("seconds", {})
    wall = []
    if "total" in study:
        wall.append(f"Total time {study['total']:.1f} s")
    if "runs" in study:
        wall.append(f"runs {study['runs']:.1f} s on {results.get('workers', 1)} worker(s)")
    if "figures" in study:
        wall.append(f"figures {study['figures']:.1f} s")
    return (", ".join(wall) + ". " if wall else "") + (f"Summed over runs: {parts}." if parts else "")


#: results.csv's metric columns, the same for every kind of model (one record schema, records.py): log p(x), the ELBO
#: and the KL gap on ``log_px_points``; then the whole evaluated split (``num_points``), with the three summed over
#: its units; then the gap split on ``gap_points``; an empty cell where a run's record lacks the number (the gap split
#: where it was not computed, ``*_per_point`` where a unit is a point)
CSV_METRICS = ["converged", "units", "log_px_points", "log_px", "log_px_stderr", "elbo_log_px_points",
               "elbo_log_px_points_stderr", "kl_gap", "kl_gap_stderr", "log_px_method", "num_points", "split_points",
               "elbo", "elbo_stderr", "elbo_samples", "recon", "kl_prior", *TOTAL_KEYS, "elbo_per_point",
               "log_px_per_point", "kl_gap_per_point", "log_px_iwae", "log_px_iwae_stderr", "log_px_ais",
               "log_px_ais_stderr", "kl_exact", "gap_points", "gap_log_px", "gap_elbo", "elbo_star", "gap_kl",
               "approx_gap", "approx_gap_stderr", "amort_gap", "amort_gap_stderr", "approx_gap_bound",
               "q_star_converged", "khat_mean", "khat_bad_share", "ess_mean", "active_units"]
#: the sums over a split's units, under the same names for every kind (records.py)
TOTALS = tuple(f"{key}_total" for key in TOTALED)
#: the numbers a study summarizes over seeds (results.json's ``summary``, the API's ``table()``), for every kind of
#: model; a number some run's record lacks is left out of its row
SUMMARY_KEYS = ("log_px", "log_px_stderr", "elbo_log_px_points", "kl_gap", "kl_gap_stderr", "kl_gap_per_point", "elbo",
                "elbo_stderr", "log_px_iwae", "recon", "kl_prior", "khat_mean", "ess_mean", "gap_log_px", "gap_elbo",
                "elbo_star", "gap_kl", "approx_gap", "amort_gap", *TOTALS)


def evaluated_splits(runs: list[dict]) -> list[str]:
    """The splits, test first, whose metrics every run's record holds under the one schema: both of a per-point model,
    the training split (D, one unit) of a model with global latents, whose test split (``--holdout``) holds the held-out
    rows' predictive density instead."""
    return [split for split in ("test", "train") if all("elbo" in run.get(split, {}) for run in runs)]


def summary(results: dict) -> dict:
    """Per split, one row per guide: the means over seeds with both kinds of ± (see :func:`~elbogap.summary.rows`)."""
    runs = finished(results["runs"])
    if not runs:
        return {}
    snr = {"gradient_snr": table} if (table := snr_rows(runs)) else {}
    return {**{split: rows(runs, split, SUMMARY_KEYS) for split in evaluated_splits(runs)}, **snr}


def csv_text(results: dict) -> str:
    """One row per run and split (:func:`evaluated_splits`): guide, seed, split, the metrics and the training time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    runs = finished(results["runs"])
    writer.writerow(["guide", "seed", "split", *CSV_METRICS, "train_seconds"])
    for run in runs:
        for split in reversed(evaluated_splits(runs)):
            metrics = {**on_log_px_points(run[split]), "converged": run.get("converged", "")}
            writer.writerow([run["guide"], run["seed"], split, *(metrics.get(k, "") for k in CSV_METRICS),
                             run["train_seconds"]])
    return buffer.getvalue()


def write_results(results: dict, out: str | Path) -> Path:
    """Write ``results.json`` (with its ``summary`` over seeds), ``results.csv`` and ``results.md`` into ``out``,
    each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = (("results.json", json.dumps({**results, "summary": summary(results), "complete": complete(results)},
                                         indent=2)),
             ("results.csv", csv_text(results)), ("results.md", markdown(results)))
    for name, text in files:
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    return out
