"""One point's 95% interval on every point, not only point 0: ± 1.96 s.e. against ± t(0.975, ν) s.e.

    python benchmarks/point_intervals.py [--scale 1.0]

For each AIS setting of benchmarks/coverage.py, runs AIS (or forward and reverse BDMC on one point, the
repeats side by side) from R seeds, and for every point takes the share of repeats whose interval
covers that point's long-run mean (the mean over the repeats), with the group spread's standard error
(``log_mean_exp_stderr``) and its degrees of freedom (``group_spread_dof``). Prints the mean share over
the points and the lowest. ``--scale`` multiplies every repeat count.
"""

import argparse
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.coverage import positive_latent, ppca, ppca_8d, ppca_opaque, vae_2d  # noqa: E402
from elbogap.inference.ais import AISSettings, ais_log_px  # noqa: E402
from elbogap.inference.bdmc import bdmc  # noqa: E402
from elbogap.inference.weights import interval_halfwidth  # noqa: E402
from elbogap.threads import intra_op_threads  # noqa: E402

AIS_RUNS = [  # (name, model, settings, repeats)
    ("AIS 8 x 50 x 2, 20 points", ppca_8d, AISSettings(steps=50, chains=8, leapfrog_steps=2), 100),
    ("AIS 8 x 50 x 10 on the PPCA program, 20 points", ppca_opaque, AISSettings(steps=50, chains=8), 60),
    ("AIS 8 x 200 x 10, 20 points", ppca_8d, AISSettings(steps=200, chains=8), 50),
    ("AIS on the VAE, 16 x 50 x 5, 20 points", vae_2d, AISSettings(steps=50, chains=16, leapfrog_steps=5), 100),
    ("AIS on the HalfNormal program, 16 x 50 x 5, 20 points", positive_latent,
     AISSettings(steps=50, chains=16, leapfrog_steps=5), 100),
]
BDMC_RUNS = [
    ("BDMC on one 2-D point, 32 x 20", ppca, AISSettings(steps=20, chains=32), 800),
    ("BDMC on one 8-D point, 32 x 20", ppca_8d, AISSettings(steps=20, chains=32), 400),
]


def coverage(estimates: torch.Tensor, stderrs: torch.Tensor, dof: float) -> dict[str, tuple[float, float]]:
    """Per point (columns of ``(repeats, points)``), the share of repeats whose interval covers the long-run mean;
    its mean over points and its lowest, at ± 1.96 s.e. and at ± t s.e."""
    misses = (estimates - estimates.mean(0)).abs()
    out = {}
    for label, halfwidth in (("1.96", interval_halfwidth(stderrs, None)), ("t", interval_halfwidth(stderrs, dof))):
        shares = (misses <= halfwidth).double().mean(0)
        out[label] = (float(shares.mean()), float(shares.min()))
    return out


def repeated_ais(known, settings: AISSettings, repeats: int) -> list:
    """AIS on ``known``'s points from seeds 0, 1, ...: ``repeats`` results, at least 2."""
    results = []
    for seed in range(max(2, repeats)):
        pyro.set_rng_seed(seed)
        results.append(ais_log_px(known.model, known.x, settings))
    return results


def ais_runs(scale: float):
    for name, known_model, settings, repeats in AIS_RUNS:
        results = repeated_ais(known_model(), settings, int(repeats * scale))
        estimates = torch.stack([r.log_px.double() for r in results])
        stderrs = torch.stack([r.stderr.double() for r in results])
        yield name, len(results), coverage(estimates, stderrs, results[0].dof)


def bdmc_runs(scale: float):
    for name, known_model, settings, repeats in BDMC_RUNS:
        known = known_model()
        repeats = max(2, int(repeats * scale))
        pyro.set_rng_seed(0)
        point = known.x[:1].expand(repeats, -1).clone()
        z = known.model.posterior(known.x[:1]).sample((settings.chains, repeats))[:, :, 0]
        result = bdmc(known.model, point, z, settings)  # the repeats side by side: each row its own run
        for direction, estimates, stderrs in (("forward", result.lower, result.lower_stderr),
                                              ("reverse", result.upper, result.upper_stderr)):
            yield f"{name}, {direction}", repeats, coverage(estimates.double()[:, None], stderrs.double()[:, None],
                                                           result.dof)


def main(args):
    print("| experiment (repeats) | ± 1.96 s.e.: mean over points (lowest) | ± t s.e. |")
    print("|---|---|---|")
    with intra_op_threads(1):
        for name, repeats, shares in (*ais_runs(args.scale), *bdmc_runs(args.scale)):
            cells = [f"{100 * mean:.1f}% ({100 * low:.0f}%)" for mean, low in shares.values()]
            print(f"| {name} ({repeats}) | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every repeat count")
    main(parser.parse_args())
