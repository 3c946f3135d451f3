"""AIS's start at each point's modes, where a mode lies far from the prior's bulk, and what finishing the climb costs.

Cauchy rows: z ~ Cauchy(0, 1), five readings x ~ N(z, 0.5^2) per row, rows centred at 0.3, -1.2, 2, 0.7, -60, 300 and
1,826 (a tester's), the truth a 4,200,001-point midpoint rule. Random VAEs: 64 Bernoulli pixels, weights multiplied
by 1 and 3, 2-D and 10-D z, 50 points: the climb's seconds and how far AIS moves, where no mode lies far. Each case
runs AIS (``--ais-*`` defaults, ``init="laplace"``) from the start of ``--before COMMIT`` and from today's, one after
the other on one machine, with the same random numbers.

    python benchmarks/far_modes.py --before 45c60e0
"""

import argparse
import math
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from elbogap.inference import ais as ais_module
from elbogap.inference.ais import AISSettings, ais_log_px
from elbogap.inference.laplace import laplace_start
from elbogap.model.target import PointsTarget
from elbogap.model.vae import VAE
from elbogap.user_model import ProgramModel

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.former import former_module  # noqa: E402

CENTRES = [0.3, -1.2, 2.0, 0.7, -60.0, 300.0, 1826.0]


def former(commit: str):
    """``laplace_start`` as ``elbogap/inference/laplace.py`` had it at ``commit``."""
    return former_module(commit, "elbogap/inference/laplace.py").laplace_start


def cauchy(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.StudentT(x.new_tensor(1.0), 0.0, 1.0))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), 0.5).to_event(1), obs=x)


def cauchy_case():
    x = torch.tensor(CENTRES)[:, None] + 0.5 * torch.randn(len(CENTRES), 5, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(-200, 2000, 4_200_001, dtype=torch.float64)
    prior = dist.Cauchy(0.0, 1.0).log_prob(grid)
    exact = torch.stack([torch.logsumexp(prior + dist.Normal(grid[:, None], 0.5).log_prob(row.double()).sum(-1), 0)
                         for row in x]) + math.log(grid[1] - grid[0])
    return ProgramModel(cauchy, x[:3], "cauchy", None), x, exact


def vae_case(latent_dim: int, scale: float, seed: int = 0):
    torch.manual_seed(seed)
    vae = VAE(64, latent_dim)
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.mul_(scale)
    return vae, torch.bernoulli(torch.full((50, 64), 0.3)), None


def run(model, x, start, seed: int = 0):
    """AIS from ``start`` (a ``laplace_start``), its seconds, and the start's own seconds."""
    ais_module.laplace_start = start
    began = time.perf_counter()
    start(PointsTarget(model, x))
    start_seconds = time.perf_counter() - began
    torch.manual_seed(seed)
    began = time.perf_counter()
    estimate = ais_log_px(model, x, AISSettings(init="laplace"))
    return estimate.log_px.double(), estimate.stderr.double(), start_seconds, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit whose start to run beside today's")
    parser.add_argument("--skip-cauchy", action="store_true", help="the VAEs only")
    args = parser.parse_args()
    starts = {args.before: former(args.before), "today": laplace_start}
    torch.set_num_threads(2)

    if not args.skip_cauchy:
        cauchy_table(starts)
    vae_table(starts)


def cauchy_table(starts: dict) -> None:
    print("| row centre | truth | " + " | ".join(f"{name}: AIS, s.e., error / s.e." for name in starts) + " |")
    print("|---|---|" + "---|" * len(starts))
    model, x, exact = cauchy_case()
    results = {name: run(model, x, start) for name, start in starts.items()}
    for i, centre in enumerate(CENTRES):
        cells = [f"{float(v[i]):.4f}, {float(s[i]):.4f}, {float((v[i] - exact[i]) / s[i]):+.1f}"
                 for v, s, *_ in results.values()]
        print(f"| {centre:g} | {float(exact[i]):.4f} | " + " | ".join(cells) + " |")
    print("| seconds (start, AIS) | | " + " | ".join(f"{a:.1f}, {b:.1f}" for *_, a, b in results.values()) + " |")


def vae_table(starts: dict) -> None:
    print("\n| VAE | " + " | ".join(f"{name}: start s, AIS s" for name in starts)
          + " | split mean moved (nats) | largest point moved / its s.e. |")
    print("|---|" + "---|" * (len(starts) + 2))
    for latent_dim in (2, 10):
        for scale in (1.0, 3.0):
            model, x, _ = vae_case(latent_dim, scale)
            results = [run(model, x, start) for start in starts.values()]
            (before, before_se, *_), (after, after_se, *_) = results
            moved = (after - before) / (before_se.pow(2) + after_se.pow(2)).sqrt()
            print(f"| {latent_dim}-D z, weights x{scale:g} | "
                  + " | ".join(f"{a:.1f}, {b:.1f}" for *_, a, b in results)
                  + f" | {float((after - before).mean()):+.4f} | {float(moved.abs().max()):.1f} |")


if __name__ == "__main__":
    sys.exit(main())
