"""Users' programs with per-point latents, at elbogap's defaults, against their exact log p(x) and best mean-field gap.

    python benchmarks/per_point_programs.py [--only NAME,...] [--out DIR]

Each model is one file in ``benchmarks/per_point/`` (a ``model(x)`` Pyro program with no parameters, a
``simulate(rng)`` that draws its data at numpy's seed 0, ``log_px(x)`` per row in closed form, and, where known,
``best_diag_gap(x)``: the KL of the best member of ``diag``'s family per row). ``elbogap compare --model FILE:model
--data NAME.csv --out OUT/NAME`` runs at its defaults (two seeds, the default guides less those the model refuses),
as a subprocess. Per run, on the test split: log p(x) (AIS on its points under ``--log-px auto``) minus the exact mean
on those points, in nats and in its own standard errors; the KL gap; the approximation gap on the gap points against
the best mean-field gap there (diag's family; full rank's holds the posterior only for the Gaussian models); whether
the fit converged. ``--only`` runs some of the models by name (factor_analysis, gamma_counts, beta_bernoulli,
two_sites, rate_and_shift, dirichlet_counts); all of them by default. The guides the defaults left out, and the
study's Warnings lines, are listed under the table.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.untried import load, warning_lines  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.factory import load_dataset  # noqa: E402
from elbogap.protocols.vae import gap_index, subset_index  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent / "per_point"
MODELS = ("factor_analysis", "gamma_counts", "beta_bernoulli", "two_sites", "rate_and_shift", "dirichlet_counts")


def run_study(name: str, out: Path) -> tuple[Path, float]:
    """NAME's data written, and ``elbogap compare`` run on it at the defaults: the study's folder and seconds."""
    data = load(name, MODELS_DIR).simulate(np.random.default_rng(0))
    np.savetxt(out / f"{name}.csv", data, delimiter=",", fmt="%.10g")
    study = out / name
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(["elbogap", "compare", "--model", f"{MODELS_DIR / name}.py:model", "--data",
                        str(out / f"{name}.csv"), "--out", str(study)], stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    return study, time.perf_counter() - started


def rows(name: str, study: Path, seconds: float) -> list[str]:
    """One row per run of the study, against the model's closed forms on the points each number covers."""
    module = load(name, MODELS_DIR)
    results = json.loads((study / "results.json").read_text())
    config = Config(**results["config"])
    x = load_dataset(config).test
    log_px_points = x[subset_index(len(x), max(config.ais_points, config.gap_points), config)]
    gap_points = x[gap_index(len(x), config)]
    exact = float(module.log_px(log_px_points).mean())
    best = float(module.best_diag_gap(gap_points).mean()) if hasattr(module, "best_diag_gap") else None
    lines = []
    for run in results["runs"]:
        test = run["test"]
        error = test["log_px"] - exact
        approx = f"{test['approx_gap']:.4f} ± {test['approx_gap_stderr']:.4f}" if "approx_gap" in test else "–"
        truth = f"{best:.4f}" if best is not None and run["guide"] == "diag" else "–"
        lines.append(f"| {name} | {seconds:.0f} | {run['guide']} | {run['seed']} | {test['log_px_method']} | "
                     f"{error:+.5f} ({error / test['log_px_stderr']:+.1f} s.e.) | {test['kl_gap']:.4f} ± "
                     f"{test['kl_gap_stderr']:.4f} | {approx} | {truth} | {'yes' if run['converged'] else 'no'} |")
    return lines


def notes(name: str, study: Path) -> list[str]:
    results = json.loads((study / "results.json").read_text())
    said = [f"- {name}: {guide} left out: {why}" for guide, why in results.get("guides_left_out", {}).items()]
    return said + [f"- {name}: {line[2:]}" for line in warning_lines(study / "results.md")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=lambda text: text.split(","), default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path("results-per-point"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table, said = [], []
    for name in args.only:
        study, seconds = run_study(name, args.out)
        table += rows(name, study, seconds)
        said += notes(name, study)
    print("| model | seconds | guide | seed | log p(x) by | log p(x) - exact | KL gap ± s.e. | approximation gap | "
          "best mean-field gap | converged |")
    print("|---" * 10 + "|")
    print("\n".join(table))
    print()
    print("\n".join(said) if said else "No guide left out, no Warnings line.")


if __name__ == "__main__":
    sys.exit(main())
