"""q* refits under each rule (gradient estimator, windows of patience), against closed-form approximation gaps.

    python benchmarks/refit_rule.py [--repeats 12] [--out DIR]

The program is ``benchmarks/per_point/two_sites.py`` (5 Gaussian latents in two sites; its posterior is Gaussian, so
the full-rank family holds it and the approximation gap of its q* is 0, and the diagonal family's best KL is a closed
form). ``elbogap compare`` trains ``full`` and ``diag`` at their defaults (seed 1, the data as
``per_point_programs.py`` writes them); then, on the test split's 64 gap points, q* is refit ``--repeats`` times from
each trained guide under each rule (``RefitRule.gradient`` and ``RefitRule.patience``) with the run's gap
decomposition (``gap_decomposition``: its refit, and the ELBO of q* from 256 draws), against the exact log p(x).
Per family and rule: the mean approximation gap less the truth, the largest, and the mean seconds per decomposition.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.per_point import two_sites  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.inference.gaps import KnownLogPx, gap_decomposition  # noqa: E402
from elbogap.protocols.vae import gap_index  # noqa: E402
from elbogap.runs import load_run  # noqa: E402

PROGRAM = Path(__file__).resolve().parent / "per_point" / "two_sites.py"
RULES = [("reparam", 1), ("reparam", 2), ("stl", 1), ("stl", 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("results-refit-rule"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "two_sites.csv"
    np.savetxt(data, two_sites.simulate(np.random.default_rng(0)), delimiter=",", fmt="%.10g")
    study = args.out / "study"
    if not (study / "results.json").is_file():
        subprocess.run(["elbogap", "compare", "--model", f"{PROGRAM}:model", "--data", str(data), "--guides",
                        "full,diag", "--seeds", "1", "--gap-points", "0", "--log-px", "iwae", "--snr-draws", "0",
                        "--no-figures", "--quiet", "--out", str(study)], check=True)
    print("| family | gradient | patience | approximation gap less the truth, each repeat | mean | largest "
          "| seconds each |")
    print("|---|---|---|---|---|---|---|")
    for family in ("full", "diag"):
        config, dataset, model, guide, _ = load_run(study / "runs" / f"{family}-seed1")
        index = gap_index(len(dataset.test), config.replace(gap_points=Config().gap_points))  # the study ran with none
        x = dataset.test[index]
        exact = two_sites.log_px(x).to(x.dtype)
        truth = 0.0 if family == "full" else float(two_sites.best_diag_gap(x).mean())
        for gradient, patience in RULES:
            errors, started = [], time.perf_counter()
            for repeat in range(args.repeats):
                torch.manual_seed(repeat)
                options = {"jit": config.jit, "patience": patience, "gradient": gradient}
                split = gap_decomposition(model, guide, x, index, refit_options=options,
                                          log_px=KnownLogPx(exact, torch.zeros_like(exact), "exact"),
                                          elbo_samples=config.eval_samples, iw_samples=config.iw_samples)
                errors.append(split["approx_gap"] - truth)
            seconds = (time.perf_counter() - started) / args.repeats
            print(f"| {family} | {gradient} | {patience} | {', '.join(f'{error:+.4f}' for error in errors)} "
                  f"| {np.mean(errors):+.4f} | {max(errors):+.4f} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
