"""A split mean's error from the points' jackknife errors against one from their group spreads, by regime.

    python benchmarks/mean_errors.py [--scale 1.0]

elbogap combines each point's jackknife error into the error of a mean over points
(``jackknife_stderr``). For each AIS setting of benchmarks/coverage.py, on points held fixed, this runs
R repeats and prints, for the mean over the points, sd over repeats / mean reported s.e. and the share
of ± 1.96 s.e. intervals that cover the long-run mean, for the jackknife's combination and for the
group spread's (``log_mean_exp_stderr``), beside Kish's ESS as a share of the chains (mean over points
and repeats): the regime each one suits. ``--scale`` multiplies every repeat count.
"""

import argparse
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.coverage import positive_latent, ppca, ppca_8d, ppca_opaque, vae_2d  # noqa: E402
from benchmarks.point_intervals import repeated_ais  # noqa: E402
from elbogap.inference.ais import (  # noqa: E402
    AISSettings,
    AnnealingPath,
    anneal,
    sigmoid_schedule,
    tune_step_sizes,
)
from elbogap.inference.bdmc import simulate  # noqa: E402
from elbogap.inference.weights import (  # noqa: E402
    effective_sample_size,
    jackknife_stderr,
    log_mean_exp,
    log_mean_exp_stderr,
)
from elbogap.model.target import PointsTarget  # noqa: E402
from elbogap.threads import intra_op_threads  # noqa: E402

FORWARD = [  # (name, model, settings, repeats): forward AIS on the model's fixed points
    ("AIS 8 x 50 x 10 on the 8-D PPCA program, 20 points", ppca_opaque, AISSettings(steps=50, chains=8), 300),
    ("AIS 8 x 50 x 2, 8-D PPCA, 20 points", ppca_8d, AISSettings(steps=50, chains=8, leapfrog_steps=2), 200),
    ("AIS 8 x 200 x 10, 8-D PPCA, 20 points", ppca_8d, AISSettings(steps=200, chains=8), 100),
    ("AIS 16 x 50 x 5 on the VAE, 20 points", vae_2d, AISSettings(steps=50, chains=16, leapfrog_steps=5), 200),
    ("AIS 16 x 50 x 5 on the HalfNormal program, 20 points", positive_latent,
     AISSettings(steps=50, chains=16, leapfrog_steps=5), 200),
]
SANDWICHES = [  # forward and reverse AIS on simulated points held fixed, reverse chains from exact draws
    ("BDMC 8 x 50 x 10 on 20 simulated 8-D PPCA points", ppca_8d, AISSettings(steps=50, chains=8), 20, 200),
    ("BDMC 16 x 100 x 5 on 100 simulated 2-D PPCA points", ppca, AISSettings(steps=100, chains=16, leapfrog_steps=5),
     100, 100),
]


def judge(log_w: torch.Tensor) -> dict:
    """``log_w`` ``(repeats, chains, points)``: each combination's sd / s.e. and coverage of a mean, and ESS / K."""
    estimates = torch.stack([log_mean_exp(w).mean() for w in log_w])
    misses = (estimates - estimates.mean()).abs()
    out = {"ess": float(torch.stack([effective_sample_size(w) for w in log_w]).mean() / log_w.shape[1])}
    for label, per_point in (("jackknife", jackknife_stderr), ("group spread", log_mean_exp_stderr)):
        stderrs = torch.stack([per_point(w).pow(2).sum().sqrt() / w.shape[1] for w in log_w])
        out[label] = (float(estimates.std() / stderrs.mean()), float((misses <= 1.96 * stderrs).double().mean()))
    return out


def forward_runs(scale: float):
    for name, known_model, settings, repeats in FORWARD:
        results = repeated_ais(known_model(), settings, int(repeats * scale))
        yield name, len(results), judge(torch.stack([result.log_w.double() for result in results]))


def sandwich_runs(scale: float):
    for name, known_model, settings, points, repeats in SANDWICHES:
        known = known_model()
        pyro.set_rng_seed(0)
        x, _ = simulate(known.model, known.x, points)
        forward, reverse = [], []
        for seed in range(max(2, int(repeats * scale))):
            pyro.set_rng_seed(seed)
            path = AnnealingPath(PointsTarget(known.model, x))
            step_sizes = tune_step_sizes(path, settings)
            betas = sigmoid_schedule(settings.steps, dtype=x.dtype)
            up, _, _ = anneal(path, path.start(settings.chains), betas, step_sizes, settings.leapfrog_steps)
            z = known.model.posterior(x).sample((settings.chains,))
            down, _, _ = anneal(path, z, betas, step_sizes, settings.leapfrog_steps, reverse=True)
            forward.append(up.log_w.double())
            reverse.append(down.log_w.double())
        yield f"{name}, forward", len(forward), judge(torch.stack(forward))
        yield f"{name}, reverse", len(reverse), judge(torch.stack(reverse))


def main(args):
    print("| setting (repeats) | ESS / K | jackknife: sd / s.e., coverage | group spread: sd / s.e., coverage |")
    print("|---|---|---|---|")
    with intra_op_threads(1):
        for name, repeats, result in (*forward_runs(args.scale), *sandwich_runs(args.scale)):
            cells = [f"{ratio:.2f}, {100 * share:.0f}%" for ratio, share in (result["jackknife"],
                                                                             result["group spread"])]
            print(f"| {name} ({repeats}) | {result['ess']:.2f} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every repeat count")
    main(parser.parse_args())
