"""AIS at the defaults on a posterior with four modes per point, from each of its starts, against a 601^2 grid.

    python benchmarks/ais_modes.py [--points 40] [--seed 0]

The program is ``tests/inference/test_laplace.py``'s: x ~ N((z * z) A^T, 0.3^2) with z ~ N(0, I_2), so each point's
posterior is symmetric under each coordinate's sign (up to four modes, one per quadrant). AIS runs at the command's
defaults (16 chains x 500 temperatures x 10 leapfrog steps) from the prior, from the default start (Gaussians, each
with a Student-t share of its mass, at every mode the climbs find, weighted by their Laplace evidence), and from one
Gaussian at the best-weighted of those modes (the default start until 2026-12-06 was one Gaussian at one mode). One
intra-op thread.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap.inference import ais  # noqa: E402
from elbogap.inference.ais import AISSettings, ais_log_px  # noqa: E402
from elbogap.inference.laplace import laplace_start  # noqa: E402
from elbogap.user_model import load_user_model  # noqa: E402
from tests.inference.test_laplace import SQUARES, squares_data  # noqa: E402

PROGRAM = str(Path(__file__).resolve().parents[1] / "tests" / "inference" / "test_laplace.py") + ":squares_program"


def grid_log_px(x: torch.Tensor, points: int = 601, half_width: float = 6.0) -> torch.Tensor:
    """log p(x) per row by a Riemann sum over a ``points^2`` grid on ``[-half_width, half_width]^2``."""
    grid = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    log_joint = (dist.Normal(0.0, 1.0).log_prob(z).sum(-1)[:, None]
                 + dist.Normal(((z * z) @ SQUARES.T.double())[:, None], 0.3).log_prob(x.double()).sum(-1))
    return torch.logsumexp(log_joint, 0) + 2 * math.log(float(grid[1] - grid[0]))


def best_mode_alone(target) -> dist.MixtureSameFamily:
    """The default start cut to its best-weighted component: one Gaussian at one mode."""
    start = laplace_start(target)
    component = start.component_distribution
    return dist.MixtureSameFamily(dist.Categorical(logits=start.mixture_distribution.logits[:, :1]),
                                  dist.MultivariateNormal(component.loc[:, :1], scale_tril=component.scale_tril[:, :1],
                                                          validate_args=False), validate_args=False)


def main(args) -> None:
    torch.set_num_threads(1)
    x, _ = squares_data(args.points)
    model = load_user_model(PROGRAM, x)
    exact = grid_log_px(x)
    print("| start | split mean - exact | its s.e. | points beyond -3 s.e. | largest error of a point | seconds |")
    print("|---|---|---|---|---|---|")
    for label, init, start in [("the prior", "prior", None), ("Gaussians at every mode found (default)", "laplace",
                                                                None),
                               ("one Gaussian at the best-weighted mode", "laplace", best_mode_alone)]:
        if start is not None:
            ais.laplace_start = start  # what _ais_chunk builds its start with
        torch.manual_seed(args.seed)
        began = time.perf_counter()
        result = ais_log_px(model, x, AISSettings(init=init))
        ais.laplace_start = laplace_start
        error = result.log_px.double() - exact
        stderr = float(result.stderr.double().pow(2).sum().sqrt()) / len(x)
        print(f"| {label} | {float(error.mean()):+.4f} | {stderr:.4f} | {int((error / result.stderr < -3).sum())} of "
              f"{len(x)} | {float(error.abs().max()):.3f} | {time.perf_counter() - began:.0f} |", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=40, help="points drawn from the program")
    parser.add_argument("--seed", type=int, default=0, help="the seed of AIS's draws")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
