"""Is the standard error of AIS's log p(D) honest? Repeats against the closed form of a conjugate regression.

    python benchmarks/evidence_calibration.py [--repeats 20] [--steps 200] [--chains 64]

Runs ``elbogap``'s AIS of log p(D) from ``--repeats`` seeds on Bayesian linear regression (30 rows,
3 weights; tests/global_latents/truth.py) and prints the spread of the estimates over repeats
against the mean reported standard error, and the share of 95% intervals (± t s.e., with the error's
degrees of freedom) that cover the exact value.
"""

import argparse
import sys
from pathlib import Path

import pyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibration import calibrate  # noqa: E402
from elbogap.global_latents.evidence import ais_evidence  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.inference.ais import AISSettings  # noqa: E402
from tests.global_latents import truth  # noqa: E402


def main(args):
    data = truth.regression_data(30, 3, seed=0)
    exact = truth.regression_log_evidence(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    model = GlobalLatentModel(truth.regression_model(), data, "regression")
    estimates, stderrs = [], []
    for seed in range(args.repeats):
        pyro.set_rng_seed(seed)
        evidence = ais_evidence(model, data, AISSettings(steps=args.steps, chains=args.chains))
        estimates.append(evidence.log_evidence)
        stderrs.append(evidence.stderr)
    calibration = calibrate(estimates, stderrs, [exact] * args.repeats, evidence.dof)
    print(f"{args.steps} temperatures x {args.chains} chains, {args.repeats} repeats: mean error "
          f"{calibration.bias:+.3f} nats, sd over repeats {calibration.spread:.3f}, mean reported s.e. "
          f"{calibration.stderr:.3f} (ratio {calibration.ratio:.2f}), 95% intervals covering the exact value "
          f"{calibration.covers_truth:.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chains", type=int, default=64)
    main(parser.parse_args())
