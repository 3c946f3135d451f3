"""Does the gradient estimator change the gap? ``elbogap compare`` with reparam, STL and DReG, side by side.

Runs one ``elbogap compare`` per (data set, objective, estimator) into ``OUT/<name>`` (kept, so a
rerun reads what is already there) and prints one markdown table: per family, the test split's
KL gap, approximation and amortization gaps and ELBO, and the end-of-training gradient
signal-to-noise of the encoder and the decoder, each as mean ± sd over the seeds::

    OMP_NUM_THREADS=1 python benchmarks/gradient_study.py --out gradient-study [--only digits] [--markdown F]

The commands it runs are printed with the table, so each row can be reproduced by hand.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

GUIDES = "diag,full,iaf"
SEEDS = "0,1,2"
FASHION = ["-d", "fashion-mnist", "--train-size", "5000", "--test-size", "1000", "--latent-dim", "10",
           "--ais-points", "20", "--ais-steps", "200", "--ais-chains", "8", "--gap-points", "16",
           "--train-eval-points", "500"]
DATA = {"digits": [], "fashion-mnist": FASHION}
ESTIMATORS = {
    "elbo, reparam": ["--objective", "elbo", "--gradient", "reparam"],
    "elbo, stl": ["--objective", "elbo", "--gradient", "stl"],
    "iwae K=10, reparam": ["--objective", "iwae", "--particles", "10", "--gradient", "reparam"],
    "iwae K=10, dreg": ["--objective", "iwae", "--particles", "10", "--gradient", "dreg"],
}
GAPS = ("kl_gap", "approx_gap", "amort_gap", "elbo")


def command(data: str, estimator: str, out: Path) -> list[str]:
    return ["elbogap", "compare", "-g", GUIDES, "-s", SEEDS, "-j", "2", "-q", *DATA[data], *ESTIMATORS[estimator],
            "-o", str(out)]


def run(data: str, estimator: str, root: Path) -> dict:
    out = root / f"{data}-{estimator.replace(' ', '').replace(',', '-').replace('=', '')}"
    if not (out / "results.json").exists():
        subprocess.run([sys.executable, "-m", "elbogap", *command(data, estimator, out)[1:]], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((out / "results.json").read_text())


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def rows(data: str, estimator: str, results: dict) -> list[str]:
    by_guide: dict[str, list[dict]] = {}
    for one in results["runs"]:
        by_guide.setdefault(one["guide"], []).append(one)
    lines = []
    for guide, runs in by_guide.items():
        cells = [spread([r["test"].get(key) for r in runs]) for key in GAPS]
        cells += [spread([r.get(key) for r in runs]) for key in ("snr_encoder", "snr_decoder")]
        seconds = statistics.mean(r["train_seconds"] for r in runs)
        lines.append(f"| {data} | {estimator} | {guide} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return lines


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gradient-study"))
    parser.add_argument("--only", default="", help="comma list of data sets (digits, fashion-mnist)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    chosen = [d for d in DATA if not args.only or d in args.only.split(",")]
    header = ("| data | objective, gradient | guide | test KL gap | approximation gap | amortization gap | test ELBO "
              "| encoder SNR | decoder SNR | train s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines, commands = [header], []
    for data in chosen:
        for estimator in ESTIMATORS:
            results = run(data, estimator, args.out)
            lines += rows(data, estimator, results)
            commands.append(shlex.join(command(data, estimator, Path("OUT"))))
    text = "\n".join(lines) + "\n\nCommands:\n\n" + "\n".join(f"    {c}" for c in commands) + "\n"
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
