"""results.json, results.csv and results.md: the numbers of a comparison, as data and as a table."""

import csv
import io
import json
import statistics
from pathlib import Path

from elbogap.global_latents.report import csv_rows as global_csv_rows
from elbogap.global_latents.report import is_global_study
from elbogap.global_latents.report import markdown_sections as global_sections
from elbogap.inference.log_px import METHODS

COLUMNS = [("log_px", "log p(x)"), ("elbo", "ELBO"), ("recon", "recon"),
           ("kl_prior", "KL to prior"), ("kl_gap", "KL gap"), ("log_px_iwae", "IWAE log p(x)")]

def mean_spread(values: list[float]) -> str:
    """``mean ± standard deviation over seeds`` (the mean alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


GAP_COLUMNS = [("gap_kl", "KL gap"), ("approx_gap", "approximation gap"), ("amort_gap", "amortization gap"),
               ("elbo_star", "ELBO of q*")]
DIAGNOSTIC_COLUMNS = [("khat_mean", "mean k-hat"), ("khat_bad_share", "share k-hat > 0.7"),
                      ("ess_mean", "mean ESS"), ("active_units", "active units")]


def table(runs: list[dict], split: str, columns=COLUMNS) -> list[str]:
    guides = list(dict.fromkeys(run["guide"] for run in runs))
    lines = ["| guide | " + " | ".join(title for _, title in columns) + " | seeds |",
             "|---" * (len(columns) + 2) + "|"]
    for guide in guides:
        mine = [run[split] for run in runs if run["guide"] == guide]
        cells = [mean_spread([m[key] for m in mine]) if all(m.get(key) is not None for m in mine) else "–"
                 for key, _ in columns]
        lines.append(f"| {guide} | " + " | ".join(cells) + f" | {len(mine)} |")
    return lines


def describe_log_px(split_metrics: dict) -> str:
    """How a split's log p(x) was computed, in the registry's words, and on how many of its points."""
    text = METHODS[split_metrics["log_px_method"]].describe(split_metrics)
    if split_metrics.get("log_px_points", split_metrics["num_points"]) < split_metrics["num_points"]:
        text += (f", on {split_metrics['log_px_points']} of the split's {split_metrics['num_points']} points "
                 f"(the gap points among them); the KL gap is computed on those points, where the ELBO is "
                 f"{split_metrics['elbo_log_px_points']:.3f}, and the IWAE column covers every point")
    return text


def describe_methods(runs: list[dict], config: dict) -> list[str]:
    first = runs[0]["test"]
    worst_log_px = max(run[split]["log_px_stderr"] for run in runs for split in ("train", "test"))
    worst_elbo = max(run[split]["elbo_stderr"] for run in runs for split in ("train", "test"))
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
        "- Each cell: mean ± standard deviation over seeds, in nats per data point; higher log p(x) "
        "and ELBO are better, smaller gaps are better.",
    ]
    widths = [f"{run['guide']} seed {run['seed']}: {run['bdmc']['width']:.3f}" for run in runs if "bdmc" in run]
    if widths:
        settings = next(run["bdmc"] for run in runs if "bdmc" in run)
        lines.append(f"- BDMC sandwich width (upper - lower bound on log p(x) of {settings['points']} points simulated "
                     f"from each trained model, nats; the error bar of AIS at these settings): {'; '.join(widths)}.")
    if "ais" in first:
        acceptance = [a for run in runs for split in ("train", "test") if "ais" in run[split]
                      for a in run[split]["ais"]["acceptance"]]
        lines.append(f"- AIS: HMC step sizes tuned per point and temperature band in a pilot run toward acceptance "
                     f"{first['ais']['target_accept']}, then frozen; acceptance per band ranged "
                     f"{min(acceptance):.2f}-{max(acceptance):.2f}. `elbogap evaluate RUN_DIR --bdmc N` measures "
                     "the error bar of these settings (the BDMC sandwich width).")
    return lines


def finished(runs: list[dict]) -> list[dict]:
    """The runs that completed (a run stopped by a numerical fault carries ``failed`` instead)."""
    return [run for run in runs if "failed" not in run]


def markdown(results: dict) -> str:
    config, failed = results["config"], [run for run in results["runs"] if "failed" in run]
    runs = finished(results["runs"])
    lines = [f"# elbogap compare: {config['model']} on {config['data']}", ""]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {run['guide']} seed {run['seed']}: {run['failed']}" for run in failed] + [""]
    if not runs:
        return "\n".join(lines + ["No run has finished.", ""])
    if is_global_study(runs):
        return "\n".join(lines + global_sections(results, runs) + ["", timing(results, runs), ""])
    warnings = [f"- {run['guide']} seed {run['seed']}, {split}: {run[split]['log_px_warning']}"
                for run in runs for split in ("test", "train") if "log_px_warning" in run[split]]
    if warnings:
        lines += ["## log p(x) warnings", "", *warnings, ""]
    for split in ("test", "train"):
        lines += [f"## {split} split ({points([run[split] for run in runs])})", "", *table(runs, split), ""]
    if "approx_gap" in runs[0]["test"]:
        lines += ["## Why the gap exists: approximation vs amortization", "",
                  f"On {runs[0]['test']['gap_points']} points per split, q* is the best member of each family "
                  "for each point (per-point parameters refit with the model fixed until the ELBO stops rising): "
                  "approximation gap = log p(x) - ELBO(q*), amortization gap = ELBO(q*) - ELBO(q); they add up "
                  "to the KL gap on those points.", ""]
        for split in ("test", "train"):
            lines += [f"### {split}", "", *table(runs, split, GAP_COLUMNS), ""]
    lines += ["## Diagnostics of q as an importance proposal (test split)", "",
              "PSIS k-hat per point (above 0.7: importance estimates from q are unreliable), Kish's effective "
              "sample size of the importance weights, and latent dimensions in use.", "",
              *table(runs, "test", DIAGNOSTIC_COLUMNS), ""]
    lines += ["## How the numbers were computed", "", *describe_methods(runs, config), ""]
    lines += ["Figures (when drawn): `training.png` (ELBO and log p(x) over training), `gaps.png` (gap per "
              "family over seeds), `posteriors.png` (2-D latents: p(z|x) against q(z|x)), `images.png` "
              "(reconstructions and prior samples of image data).", ""]
    lines += [f"Latent dim {config['latent_dim']}, {runs[0].get('steps', config['steps'])} SVI steps of batch "
              f"{config['batch_size']} with lr {config['lr']} ({config['objective']} objective); "
              f"seeds {', '.join(map(str, config['seeds']))}. Versions: "
              + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if k != "platform") + ".", ""]
    lines += [timing(results, runs), ""]
    return "\n".join(lines)


def points(splits: list[dict]) -> str:
    """``N points``, or ``N of M points`` where a seeded subset of the split was evaluated."""
    total = max(metrics.get("split_points", metrics["num_points"]) for metrics in splits)
    evaluated = sorted({metrics["num_points"] for metrics in splits})
    if evaluated == [total]:
        return f"{total} points"
    note = "; per-datapoint guides on all of them" if evaluated[-1] == total else ""
    return f"{evaluated[0]} of its {total} points, a seeded subset (--train-eval-points){note}"


#: how a run's phases are named in the footer; every other phase counts as evaluation
PHASE_NAMES = {"train": "training", "curve_evaluations": "evaluations during training",
               "checkpoints": "checkpoints", "bdmc": "BDMC", "evidence": "evidence (AIS)",
               "reference": "reference posterior"}


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


CSV_METRICS = ["log_px", "log_px_stderr", "log_px_method", "log_px_points", "log_px_iwae", "log_px_iwae_stderr",
               "log_px_ais", "log_px_ais_stderr", "elbo", "elbo_stderr", "recon", "kl_prior",
               "kl_gap", "kl_gap_stderr", "kl_exact", "gap_points", "gap_kl", "approx_gap", "amort_gap", "elbo_star",
               "khat_mean", "khat_bad_share", "ess_mean", "active_units", "num_points", "split_points"]


def csv_text(results: dict) -> str:
    """One row per run and split: guide, seed, split, the metrics and the training time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    runs = finished(results["runs"])
    if is_global_study(runs):
        from elbogap.global_latents.report import CSV_METRICS as GLOBAL_METRICS

        writer.writerow(["guide", "seed", "split", *GLOBAL_METRICS, "train_seconds"])
        writer.writerows(global_csv_rows(runs))
        return buffer.getvalue()
    writer.writerow(["guide", "seed", "split", *CSV_METRICS, "train_seconds"])
    for run in finished(results["runs"]):
        for split in ("train", "test"):
            writer.writerow([run["guide"], run["seed"], split, *(run[split].get(k, "") for k in CSV_METRICS),
                             run["train_seconds"]])
    return buffer.getvalue()


def write_results(results: dict, out: str | Path) -> Path:
    """Write ``results.json``, ``results.csv`` and ``results.md`` into ``out``, each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = (("results.json", json.dumps(results, indent=2)), ("results.csv", csv_text(results)),
             ("results.md", markdown(results)))
    for name, text in files:
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    return out
