"""Quadrature: its error and its stated error, on per-point posteriors of every width and on global latents.

Per point: random VAEs (64 Bernoulli pixels, 2-D z) with their weights multiplied by 1, 3 and 6 (the larger, the
narrower each point's posterior), 200 points each, seeds 0-2; the truth is the same estimator on 160 points per axis.
Global: conjugate regressions with two weights under priors of sd 1 and 100 on 2,000 rows, against their closed
forms. ``--before COMMIT`` also runs the quadrature of ``elbogap/inference/log_px.py`` at that commit (a fixed box
of +-8 and one refinement, the error from halving the resolution), side by side. ``--one-latent`` runs instead the
cases with one latent dimension per unit, each against its closed form: a Gamma rate behind five Poisson counts, a
Normal mean behind five Normal observations of sd 1 and of sd 0.05, a Uniform(0, 5) location seen through a Normal
of sd 0.5, a location seen through its square (two modes, in float32; the truth a 200,000-point rule), the same far in
the prior's tail, Dirichlet(0.2, 0.3, 0.5) proportions behind 20 Multinomial draws (two latents, float32) (200 points
each, seeds 0-2), and a Beta probability behind 50 Binomial(20) counts (one global latent).

    python benchmarks/quadrature.py --before f288637
    python benchmarks/quadrature.py --one-latent
"""

import argparse
import math
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from elbogap.estimators import EstimatorSettings, estimators
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference.log_px import per_point_target
from elbogap.model.target import DataSetTarget
from elbogap.model.vae import VAE
from elbogap.user_model import ProgramModel

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.former import former_module  # noqa: E402
from tests.estimators.truth import (  # noqa: E402
    dirichlet_multinomial_evidence,
    squared_location,
    squared_location_evidence,
)
from tests.global_latents import truth  # noqa: E402

QUADRATURE = estimators()["quadrature"]


def former(commit: str):
    """``quadrature_log_px`` as ``elbogap/inference/log_px.py`` had it at ``commit``."""
    return former_module(commit, "elbogap/inference/log_px.py").quadrature_log_px


def row(name: str, values, stderr, exact, seconds: float) -> str:
    error = (values.double() - exact.double()).abs()
    unsure = stderr.isnan()  # units the estimator left without an error bar, counted apart
    counted = (error > 1e-8) & ~unsure  # below that, float64 sums
    ratio = (error / stderr.double().clamp_min(1e-300))[counted]
    worst = f"{float(ratio.max()):.3g}" if len(ratio) else "-"  # 1e+296: an error stated as 0 (clamped to 1e-300)
    covered = f"{float((ratio <= 1).double().mean()):.3f}" if len(ratio) else "1.000"
    return (f"| {name} | {float(error.max()):.1e} | {float(error.median()):.1e} | "
            f"{float(stderr[~unsure].max()):.1e} | {worst} | {covered} | {int(unsure.sum())} | {seconds:.2f} |")


def per_point(points: list[int], before) -> list[str]:
    lines = []
    for scale in (1.0, 3.0, 6.0):
        for seed in range(3):
            torch.manual_seed(seed)
            vae = VAE(64, 2).double()
            with torch.no_grad():
                for parameter in vae.parameters():
                    parameter.mul_(scale)
            x = torch.bernoulli(torch.full((200, 64), 0.3)).double()
            target = per_point_target(vae, x)
            exact = QUADRATURE.estimate(target, EstimatorSettings(grid_points=160)).values
            for n in points:
                started = time.perf_counter()
                estimate = QUADRATURE.estimate(target, EstimatorSettings(grid_points=n))
                seconds = time.perf_counter() - started
                lines.append(row(f"VAE x{scale:g}, seed {seed}, n = {n}, zoomed ({estimate.info['samples']} points)",
                                 estimate.values, estimate.stderr, exact, seconds))
                if before is not None:
                    started = time.perf_counter()
                    values, stderr = before(vae, x, n)
                    lines.append(row(f"VAE x{scale:g}, seed {seed}, n = {n}, before ({2 * n * n} points)", values,
                                     stderr, exact, time.perf_counter() - started))
    return lines


def global_latents() -> list[str]:
    lines = []
    data = truth.regression_data(2000, 2, seed=4).double()
    for alpha in (1.0, 1e-4):
        exact = truth.regression_log_evidence(data[:, :2], data[:, 2], alpha, 1.0)
        model = GlobalLatentModel(truth.regression_model(alpha, 1.0), data, "regression")
        started = time.perf_counter()
        estimate = QUADRATURE.estimate(DataSetTarget(model, data), EstimatorSettings())
        lines.append(row(f"regression, 2 weights of prior sd {alpha ** -0.5:g}, 2,000 rows, n = 24 "
                         f"({estimate.info['samples']} points)", estimate.values, estimate.stderr,
                         torch.tensor([exact], dtype=torch.float64), time.perf_counter() - started))
    return lines


def gamma_poisson(x):
    with pyro.plate("data", x.shape[0]):
        rate = pyro.sample("rate", dist.Gamma(x.new_tensor(2.0), 1.0))
        pyro.sample("x", dist.Poisson(rate.unsqueeze(-1)).to_event(1), obs=x)


def normal_mean(sd: float):
    def program(x):
        with pyro.plate("data", x.shape[0]):
            mean = pyro.sample("mean", dist.Normal(x.new_tensor(0.0), 1.0))
            pyro.sample("x", dist.Normal(mean.unsqueeze(-1), sd).to_event(1), obs=x)
    return program


def bounded(x):
    with pyro.plate("data", x.shape[0]):
        u = pyro.sample("u", dist.Uniform(x.new_tensor(0.0), 5.0))
        pyro.sample("x", dist.Normal(u.unsqueeze(-1), 0.5).to_event(1), obs=x)


def beta_binomial(data):
    p = pyro.sample("p", dist.Beta(data.new_tensor(2.0), 3.0))
    with pyro.plate("rows", data.shape[0]):
        pyro.sample("x", dist.Binomial(20, p), obs=data[:, 0])


SPARSE = torch.tensor([0.2, 0.3, 0.5])


def sparse_proportions(x):
    with pyro.plate("data", x.shape[0]):
        proportions = pyro.sample("p", dist.Dirichlet(SPARSE.to(x)))
        pyro.sample("x", dist.Multinomial(20, proportions), obs=x)


def one_latent_cases(seed: int):
    """``(name, program, x, exact log p(x) per point)`` of each per-point case, drawn from ``seed``."""
    torch.manual_seed(seed)
    rate = torch.distributions.Gamma(2.0, 1.0).sample((200,)).double()
    counts = torch.poisson(rate[:, None].expand(200, 5).contiguous())
    total = counts.sum(-1)
    yield ("Gamma rate, 5 Poisson counts", gamma_poisson, counts,
           torch.lgamma(2 + total) - torch.lgamma(torch.tensor(2.0, dtype=torch.float64))
           - (2 + total) * torch.log(torch.tensor(6.0, dtype=torch.float64)) - torch.lgamma(counts + 1).sum(-1))
    for sd in (1.0, 0.05):
        mean = torch.randn(200, 1, dtype=torch.float64)
        x = mean + sd * torch.randn(200, 5, dtype=torch.float64)
        marginal = dist.MultivariateNormal(torch.zeros(5, dtype=torch.float64),
                                           sd**2 * torch.eye(5, dtype=torch.float64) + 1.0)
        yield f"Normal mean, 5 Normal observations of sd {sd:g}", normal_mean(sd), x, marginal.log_prob(x)
    u = 5 * torch.rand(200, 1, dtype=torch.float64)
    x = u + 0.5 * torch.randn(200, 1, dtype=torch.float64)
    unit = torch.distributions.Normal(0.0, 1.0)
    yield ("Uniform(0, 5) location, 1 Normal observation of sd 0.5", bounded, x,
           ((unit.cdf((5 - x[:, 0]) / 0.5) - unit.cdf(-x[:, 0] / 0.5)) / 5).log())
    z = torch.randn(200, 1, dtype=torch.float64)
    x = ((z - 0.3) ** 2 + 0.2 * torch.randn(200, 5, dtype=torch.float64)).float()  # in float32, as a study runs
    yield ("Location through its square (two modes), 5 Normal observations of sd 0.2, float32", squared_location, x,
           squared_location_evidence(x))
    z = 2.5 * torch.randn(200, 1, dtype=torch.float64)
    z = z[z[:, 0].abs() < 8]  # the truth's grid spans [-9, 9]
    x = ((z - 0.3) ** 2 + 0.2 * torch.randn(len(z), 5, dtype=torch.float64)).float()
    yield ("The same, its locations far in the prior's tail (sd 2.5), float32", squared_location, x,
           squared_location_evidence(x))
    proportions = torch.distributions.Dirichlet(SPARSE.double()).sample((200,))
    x = torch.stack([torch.multinomial(p, 20, replacement=True).bincount(minlength=3) for p in proportions]).float()
    yield "Dirichlet(0.2, 0.3, 0.5) proportions (2-D), 20 Multinomial draws, float32", sparse_proportions, x, \
        dirichlet_multinomial_evidence(x.double(), SPARSE, 20)


def one_latent(points: list[int]) -> list[str]:
    lines = []
    for seed in range(3):
        for name, program, x, exact in one_latent_cases(seed):
            target = per_point_target(ProgramModel(program, x[:3]), x)
            for n in points:
                started = time.perf_counter()
                estimate = QUADRATURE.estimate(target, EstimatorSettings(grid_points=n))
                lines.append(row(f"{name}, seed {seed}, n = {n} ({estimate.info['samples']} points)",
                                 estimate.values, estimate.stderr, exact, time.perf_counter() - started))
    data = torch.distributions.Binomial(20, 0.3).sample((50, 1)).double()
    successes, failures = float(data.sum()), float((20 - data).sum())
    exact = (float((math.lgamma(21.0) - torch.lgamma(data + 1) - torch.lgamma(21 - data)).sum())
             + math.lgamma(2 + successes) + math.lgamma(3 + failures) - math.lgamma(5 + successes + failures)
             - math.lgamma(2.0) - math.lgamma(3.0) + math.lgamma(5.0))
    model = GlobalLatentModel(beta_binomial, data, "beta-binomial")
    for n in points:
        started = time.perf_counter()
        estimate = QUADRATURE.estimate(DataSetTarget(model, data), EstimatorSettings(grid_points=n))
        lines.append(row(f"Beta probability (global), 50 Binomial(20) counts, n = {n} ({estimate.info['samples']} "
                         "points)", estimate.values, estimate.stderr, torch.tensor([exact], dtype=torch.float64),
                         time.perf_counter() - started))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="12,16,24,32", help="grid points per axis, comma-separated")
    parser.add_argument("--before", help="a commit whose fixed-box quadrature runs side by side")
    parser.add_argument("--one-latent", action="store_true", help="the cases with one latent dimension per unit")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    points = [int(n) for n in args.points.split(",")]
    print("| case | max error | median error | max stated error | max error / stated | stated >= error "
          "| no error bar | s |")
    print("|---|---|---|---|---|---|---|---|")
    if args.one_latent:
        lines = one_latent(points)
    else:
        lines = per_point(points, former(args.before) if args.before else None) + global_latents()
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
