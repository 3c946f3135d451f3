"""q* refits under one and two windows of patience, on a posterior whose full-rank q* is exact.

    python benchmarks/refit_patience.py [--repeats 12] [--out DIR]

The program is ``benchmarks/per_point/two_sites.py`` (5 Gaussian latents in two sites; its posterior is Gaussian, so
the full-rank family holds it and the approximation gap of its q* is 0). ``elbogap compare`` trains ``full`` at its
defaults (seed 1, the data as ``per_point_programs.py`` writes them); then, on the test split's 64 gap points, q* is
refit ``--repeats`` times from the trained guide under each patience (``RefitRule.patience``) with the run's gap
decomposition (``gap_decomposition``: its refit, and the ELBO of q* from 256 draws), against the exact log p(x).
Per patience: each repeat's approximation gap, the largest, and the mean seconds per decomposition.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("results-refit-patience"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "two_sites.csv"
    np.savetxt(data, two_sites.simulate(np.random.default_rng(0)), delimiter=",", fmt="%.10g")
    study = args.out / "study"
    if not (study / "results.json").is_file():
        subprocess.run(["elbogap", "compare", "--model", f"{PROGRAM}:model", "--data", str(data), "--guides", "full",
                        "--seeds", "1", "--gap-points", "0", "--log-px", "iwae", "--snr-draws", "0", "--no-figures",
                        "--quiet", "--out", str(study)], check=True)
    config, dataset, model, guide, _ = load_run(study / "runs" / "full-seed1")
    index = gap_index(len(dataset.test), config.replace(gap_points=Config().gap_points))  # the study ran with none
    x = dataset.test[index]
    exact = two_sites.log_px(x).to(x.dtype)
    print("| patience | approximation gap of each repeat (truth 0) | largest | seconds each |")
    print("|---|---|---|---|")
    for patience in (1, 2):
        gaps, started = [], time.perf_counter()
        for repeat in range(args.repeats):
            torch.manual_seed(repeat)
            split = gap_decomposition(model, guide, x, index, refit_options={"jit": config.jit, "patience": patience},
                                      log_px=KnownLogPx(exact, torch.zeros_like(exact), "exact"),
                                      elbo_samples=config.eval_samples, iw_samples=config.iw_samples)
            gaps.append(split["approx_gap"])
        seconds = (time.perf_counter() - started) / args.repeats
        print(f"| {patience} | {', '.join(f'{gap:.4f}' for gap in gaps)} | {max(gaps):.4f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
