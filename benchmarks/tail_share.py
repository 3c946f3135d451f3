"""AIS from the Laplace start where the start is the posterior: the error its tail share leaves, against its s.e.

    python benchmarks/tail_share.py [--shares 0.001,1e-5] [--seeds 3]

The fixed factor analysis of ``benchmarks/per_point/factor_analysis.py`` (3 latents, 6 observed, exact log p(x) in
closed form), its first 100 simulated rows in float64, ``ais_log_px`` at the command's defaults with ``init="laplace"``
(16 chains x 500 temperatures x 10 leapfrog steps). Its posterior is Gaussian, so the start's Gaussians are the
posterior and what differs is the Student-t share of their mass (``elbogap.inference.laplace.TAIL_SHARE``, set here
per run). Per share and seed: the split mean's error, its s.e. (the per-point errors combined) and their ratio, and
how many of the 100 points lie beyond 3 of their own s.e. One intra-op thread.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.per_point import factor_analysis  # noqa: E402
from elbogap.inference import laplace  # noqa: E402
from elbogap.inference.ais import AISSettings, ais_log_px  # noqa: E402
from elbogap.user_model import ProgramModel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", default="0.001,1e-5")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.from_numpy(factor_analysis.simulate(np.random.default_rng(0))[:100]).double()
    model, exact = ProgramModel(factor_analysis.model, x[:3]), factor_analysis.log_px(x)
    print("| tail share | seed | mean error | s.e. | error / s.e. | points beyond 3 s.e. | seconds |")
    print("|---|---|---|---|---|---|---|")
    for share in (float(s) for s in args.shares.split(",")):
        laplace.TAIL_SHARE = share
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            start = time.perf_counter()
            result = ais_log_px(model, x, AISSettings(init="laplace"))
            error = result.log_px - exact
            mean, stderr = float(error.mean()), float(result.stderr.pow(2).sum().sqrt() / len(x))
            beyond = int((error.abs() > 3 * result.stderr).sum())
            print(f"| {share:g} | {seed} | {mean:+.2e} | {stderr:.1e} | {mean / stderr:+.1f} | {beyond} of {len(x)} "
                  f"| {time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
