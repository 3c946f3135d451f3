"""log p(D) of a one-factor model, whose posterior has two mirror modes, with and without the evidence's modes check.

    python benchmarks/sign_symmetry.py [--rows 50] [--seeds 2]

``y_n = w z_n + noise`` (w in R², z_n ~ N(0, 1) per row, noise sd 0.5): (w, z) and (-w, -z) explain the data
alike, so the posterior over the 2 + N latents has two mirror modes. Its exact log p(D) integrates z out
(``y_n ~ N(0, w wᵀ + 0.25 I)``) and w over a 1601² grid. Each seed runs the default evidence without and with
``modes_check`` (the same ``evidence`` stream), side by side.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap import streams  # noqa: E402
from elbogap.global_latents.evidence import EvidenceSettings, ais_evidence  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402

NOISE = 0.5


def model(data):
    w = pyro.sample("w", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]):
        z = pyro.sample("z", dist.Normal(data.new_tensor(0.0), 1.0))
        pyro.sample("y", dist.Normal(z[..., None] * w[..., None, :], NOISE).to_event(1), obs=data)


def exact_log_evidence(y: np.ndarray) -> float:
    """z integrated out in closed form, w by the midpoint rule on a 1601² grid over ±4 (its prior's sd is 1)."""
    scatter, rows = y.T @ y, len(y)
    grid = np.linspace(-4.0, 4.0, 1601)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    c11, c22, c12 = a * a + NOISE**2, b * b + NOISE**2, a * b
    det = c11 * c22 - c12**2
    quadratic = (c22 * scatter[0, 0] - 2 * c12 * scatter[0, 1] + c11 * scatter[1, 1]) / det
    log_joint = (-0.5 * rows * (2 * math.log(2 * math.pi) + np.log(det)) - 0.5 * quadratic
                 - 0.5 * (a**2 + b**2) - math.log(2 * math.pi))
    peak = log_joint.max()
    return float(peak + math.log(np.exp(log_joint - peak).sum()) + 2 * math.log(grid[1] - grid[0]))


def main(args) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    y = (rng.normal(size=(args.rows, 1)) * np.array([1.2, -0.8]) + NOISE * rng.normal(size=(args.rows, 2)))
    data = torch.tensor(y, dtype=torch.float32)
    exact = exact_log_evidence(data.double().numpy())
    program = GlobalLatentModel(model, data, "one factor")
    print(f"exact log p(D) {exact:.4f} ({args.rows} rows, {program.latent_dim} latents)\n")
    print("| seed | modes check | seconds | log p(D) | s.e. | error (estimate - exact) | error / s.e. | start "
          "| smc_far | short run from the prior - exact |")
    print("|---" * 10 + "|")
    for seed in range(args.seeds):
        for check in (False, True):
            streams.seeded("evidence", seed)
            started = time.perf_counter()
            evidence = ais_evidence(program, data, EvidenceSettings(modes_check=check))
            seconds, short = time.perf_counter() - started, evidence.stages["prior_check"]
            error = evidence.log_evidence - exact
            print(f"| {seed} | {'on' if check else 'off'} | {seconds:.1f} | {evidence.log_evidence:.3f} | "
                  f"{evidence.stderr:.3f} | {error:+.3f} | {error / evidence.stderr:+.1f} | "
                  f"{evidence.stages.get('start')} | {evidence.stages['fit']['smc_far']:.2f} | "
                  f"{short['log_evidence'] - exact:+.3f} ± {short['stderr']:.3f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=2)
    main(parser.parse_args())
