"""Models the authors had not tried, at elbogap's defaults: each autoguide's KL gap, log p(D) and the time.

    python benchmarks/untried.py [--only poisson_regression,normal_gamma,...] [--out results-untried]
        [--markdown FILE] [--timeout SECONDS] [--reuse]

Fourteen models written as a user writes them, one file each in ``benchmarks/untried/`` (a ``model(data)`` Pyro
program and a ``simulate(rng)`` that draws its data from numpy's generator at seed 0): ten in the two passes of
outside testers that first ran them, four the authors wrote, each with an exact evidence. For each, the data go to
``OUT/NAME.csv`` and ``elbogap compare --model FILE:model --data
NAME.csv --seeds 0 --out OUT/NAME`` runs at its defaults (for a model with global latents: the four autoguides,
trained until converged, log p(D) by AIS from a fitted reference), as a subprocess. The tables read each study's
``results.json``: log p(D) ± its s.e., each guide's KL gap ± s.e. and whether its fit converged, and the number of
lines in the study's Warnings section. The truth is the exact log p(D) where the file has a ``log_evidence(data)``
(the Beta-Bernoulli and Normal-Gamma models, and the authors' four); elsewhere "–". Seconds are the subprocess's
wall time.
"""

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "untried"
#: the two testers' passes: (file name, what the table calls it)
PASSES = {
    "first": [
        ("poisson_regression", "Poisson regression"),
        ("horseshoe_regression", "horseshoe regression, 8 features"),
        ("normal_mixture", "mixture of 3 Normals, Dirichlet weights"),
        ("robust_regression", "robust regression, a Gamma precision per row"),
        ("gp_classification", "Gaussian-process classification, 30 inputs"),
    ],
    "second": [
        ("student_t_regression", "Student-t regression, unknown ν"),
        ("hierarchical_logistic", "hierarchical logistic, varying slopes, 10 groups"),
        ("negative_binomial", "negative binomial"),
        ("beta_bernoulli", "Beta-Bernoulli, 20 groups"),
        ("normal_gamma", "Normal-Gamma per group, 12 groups"),
    ],
    "third": [  # written by the authors (2026-12-06), each with its exact log p(D)
        ("gamma_poisson", "Gamma-Poisson rate, one positive latent"),
        ("normal_hierarchy", "Normal hierarchy, 20 groups, known scales"),
        ("dirichlet_categorical", "Dirichlet-categorical, 4 categories"),
        ("poisson_two_weights", "Poisson log link, intercept and slope"),
    ],
}
GUIDES = {"auto-AutoNormal": "AN", "auto-AutoMultivariateNormal": "MVN", "auto-AutoLowRankMultivariateNormal": "LR",
          "auto-AutoIAFNormal": "IAF"}


def load(name: str, folder: Path = MODELS_DIR):
    """The model file ``FOLDER/NAME.py`` (``benchmarks/untried/`` unless named) as a module."""
    spec = importlib.util.spec_from_file_location(f"{folder.name}_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_study(name: str, out: Path, timeout: float | None) -> dict:
    """Write NAME's data, run ``elbogap compare`` on it at the defaults, and return what the table needs."""
    module = load(name)
    data = module.simulate(np.random.default_rng(0))
    csv = out / f"{name}.csv"
    np.savetxt(csv, data, delimiter=",", fmt="%.10g")
    study = out / name
    command = ["elbogap", "compare", "--model", f"{MODELS_DIR / name}.py:model", "--data", str(csv), "--seeds", "0",
               "--out", str(study)]
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        # its own process group, so that a study stopped at --timeout takes its worker processes with it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            status = "timeout"
        except BaseException:  # Ctrl-C reaches the driver alone: stop the study too
            os.killpg(process.pid, signal.SIGTERM)
            raise
    seconds = time.perf_counter() - started
    exact = module.log_evidence(data) if hasattr(module, "log_evidence") else None
    record = {"name": name, "status": status, "seconds": seconds, "exact": exact}
    (out / f"{name}.json").write_text(json.dumps(record))
    return record


def warning_lines(results_md: Path) -> list[str]:
    """The lines of the study's Warnings section (none where it has no such section)."""
    lines = results_md.read_text().splitlines()
    if "## Warnings" not in lines:
        return []
    section = lines[lines.index("## Warnings") + 1:]
    end = next((i for i, line in enumerate(section) if line.startswith("## ")), len(section))
    return [line for line in section[:end] if line.startswith("- ")]


def row(label: str, record: dict, out: Path) -> str:
    """One table row from the study's results.json, or a row saying it did not finish."""
    results = out / record["name"] / "results.json"
    if record["status"] != 0 or not results.exists():
        said = "skipped: over the time limit" if record["status"] == "timeout" else f"exit {record['status']}"
        return f"| {label} | – | – | {record['seconds']:.0f} | {said} |" + " – |" * 6
    runs = json.loads(results.read_text())["runs"]
    first = runs[0]
    evidence = f"{first['train']['log_px']:.3f} ± {first['train']['log_px_stderr']:.3f}"
    gaps = {run["guide"]: f"{run['train']['kl_gap']:.3f} ± {run['train']['kl_gap_stderr']:.3f} "
                          f"({'yes' if run['converged'] else '**no**'})" for run in runs}
    truth = "–" if record["exact"] is None else f"{record['exact']:.3f} (exact)"
    warnings = len(warning_lines(out / record["name"] / "results.md"))
    cells = [label, first["train"]["num_points"], first["model"]["sites"]["latent_dim"], f"{record['seconds']:.0f}",
             evidence, *(gaps.get(guide, "–") for guide in GUIDES), truth, warnings]
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def tables(records: dict, out: Path) -> str:
    """One markdown table per pass, of the models that ran."""
    header = ("| model | rows | latents | seconds | log p(D) ± s.e. | " + " | ".join(
        f"{short} gap ± s.e. (converged)" for short in GUIDES.values()) + " | truth | Warnings |")
    text = []
    for name, models in PASSES.items():
        rows = [row(label, records[model], out) for model, label in models if model in records]
        if rows:
            title = "The authors' own pass" if name == "third" else f"{name.capitalize()} tester's pass"
            text += [f"{title}:", "", header, "|---" * 11 + "|", *rows, ""]
    return "\n".join(text)


def main(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    known = [model for models in PASSES.values() for model, _ in models]
    names = args.only or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    records = {}
    for name in names:
        saved = args.out / f"{name}.json"
        if args.reuse and saved.exists():
            records[name] = json.loads(saved.read_text())
            continue
        records[name] = run_study(name, args.out, args.timeout)
        print(f"{name}: {records[name]['seconds']:.0f} s, exit {records[name]['status']}", file=sys.stderr,
              flush=True)
    text = tables(records, args.out)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=lambda text: text.split(","), default=None,
                        help="comma list of model names (files in benchmarks/untried/), run in this order; default all")
    parser.add_argument("-o", "--out", type=Path, default=Path("results-untried"),
                        help="folder for the data, each study's results and the logs")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which a model's study is stopped and its row says so")
    parser.add_argument("--reuse", action="store_true",
                        help="read the studies already in --out instead of running them again")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
