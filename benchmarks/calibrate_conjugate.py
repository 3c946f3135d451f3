"""``elbogap calibrate`` on a conjugate regression: every fit's KL gap against its closed form, and the time.

    python benchmarks/calibrate_conjugate.py [--rows 100] [--simulations 100] [--stacked-fits auto]

Three features correlated at 0.9 (benchmarks/global_cases.py), the four default autoguides, the calibrate
defaults otherwise. The covariates stay in every simulation, so every simulated posterior is Gaussian with one
precision: the exact log p(D_m) is a closed form per simulation, the best factorized Gaussian's KL is one number
for all of them, and the full-rank, low-rank (Pyro's default rank, 2, plus a diagonal holds any 3-dimensional
covariance) and IAF families hold the posterior (KL 0). Each fit's gap is log p(D_m) - ELBO(D_m), its error the
ELBO's (1000 draws). A fit is right where its gap is within 3 s.e. + 0.05 of its family's best; the table counts
them, with the coverage, SBC and VSBC of each family.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import elbogap  # noqa: E402
from benchmarks.global_cases import GUIDES, conjugate  # noqa: E402
from elbogap.calibration.study import simulated_dataset  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from tests.global_latents import truth  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--stacked-fits", default="auto")
    args = parser.parse_args(argv)
    case = conjugate(args.rows, 1)
    start = time.perf_counter()
    result = elbogap.calibrate(case.program, GUIDES, case.data.numpy(), out=tempfile.mkdtemp(),
                               simulations=args.simulations, stacked_fits=args.stacked_fits)
    seconds = time.perf_counter() - start
    features = case.data[:, :-1].double()
    simulations = result.results["simulations"]
    evidences = []
    base = GlobalLatentModel(case.program, case.data, "conjugate")
    for simulation in simulations:  # the simulated targets: the data set's last column, drawn again from its seed
        simulated, _, _ = simulated_dataset(base, case.data, simulation["seed"])
        evidences.append(truth.regression_log_evidence(features, simulated[:, -1].double(), 1.0, 1.0))
    rows = {row["guide"] + row["site"]: row for row in result.table()}
    print(f"{args.simulations} simulations x {len(GUIDES)} guides in {seconds:.0f} s "
          f"(fits at once: {result.results['fits_at_once']})\n")
    print("| guide | best gap (closed form) | mean gap | its s.e. | fits within 3 s.e. + 0.05 of the best | "
          "converged | 90% coverage | SBC p | VSBC p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for guide in GUIDES:
        label = guide.replace(":", "-")
        fits = [simulation["fits"][label] for simulation in simulations]
        gaps = np.array([evidence - fit["elbo"] for evidence, fit in zip(evidences, fits, strict=True)])
        errors = np.array([fit["elbo_stderr"] for fit in fits])
        best = case.best_gaps[guide]
        right = int(np.sum(np.abs(gaps - best) < 3 * errors + 0.05))
        summary = result.results["summary"][label]
        row = rows[label + "w"]
        print(f"| {label} | {best:.3f} | {gaps.mean():.3f} | {gaps.std(ddof=1) / math.sqrt(len(gaps)):.3f} | "
              f"{right} of {len(gaps)} | {summary['converged']} | {summary['coverage_90']:.1%} | "
              f"{row['sbc_p_min']:.2g} | {row['vsbc_p_min']:.2g} |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
