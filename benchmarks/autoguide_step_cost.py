"""What one SVI step of each default autoguide costs as the number of global latents grows.

A varying intercept over G groups (3 rows each, G + 1 latents), Pyro's own ``SVI`` with ``Trace_ELBO`` on 32
vectorized particles (the default for models with global latents), Adam, one torch thread: the median of 5 blocks of
4 steps after 2 first ones, per family. Pyro's IAF for d latents has a hidden layer of 3d + 1 units, (3d + 1)² + 2d
weights, so its step grows with d², where AutoNormal's barely moves (BENCHMARKS.md, "The IAF at 1,201 latents").
Pyro draws the IAF's autoregressive order at random where elbogap uses the program's sampling order: the network,
and so the cost, is the same size.

    python benchmarks/autoguide_step_cost.py [--groups 200,500,800,1200] [--particles 32]
"""

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal

FAMILIES = (AutoNormal, AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoIAFNormal)


def varying_intercept(groups: int):
    """A model of ``groups + 1`` latents: a shared mean and one intercept per group, 3 rows a group."""
    group, y = torch.arange(groups).repeat(3), torch.randn(3 * groups)

    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("groups", groups):
            eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 3 * groups):
            pyro.sample("y", dist.Normal(mu + 0.7 * eta[..., group], 0.5), obs=y)

    return model


def ms_per_step(family, model, particles: int, blocks: int = 5, steps: int = 4) -> float:
    pyro.clear_param_store()
    guide = family(model)
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss)
    svi.step()  # builds the guide's parameters
    svi.step()
    times = []
    for _ in range(blocks):
        started = time.perf_counter()
        for _ in range(steps):
            svi.step()
        times.append((time.perf_counter() - started) / steps * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=lambda text: [int(g) for g in text.split(",")], default=[200, 500, 800, 1200])
    parser.add_argument("--particles", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    print("| latents | " + " | ".join(f"{family.__name__} ms/step" for family in FAMILIES) + " |")
    print("|---|" + "---|" * len(FAMILIES))
    for groups in args.groups:
        model = varying_intercept(groups)
        costs = [ms_per_step(family, model, args.particles) for family in FAMILIES]
        print(f"| {groups + 1:,} | " + " | ".join(f"{cost:.0f}" for cost in costs) + " |")


if __name__ == "__main__":
    main()
