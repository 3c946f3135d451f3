"""How long AIS's pilot run must be: bias, run-to-run spread and the error bars' coverage, by pilot length.

    python benchmarks/pilot.py [--repeats 300]

AIS tunes one HMC step size per point and temperature band in a pilot run, then freezes them. The
chains of one run share those step sizes, so the error bars (read off the spread of the chains within a
run) cannot see how the step sizes, and with them the AIS bias, change from run to run. This runs
forward AIS on the 8-D PPCA points of benchmarks/coverage.py (8 chains x 50 temperatures x 10 leapfrog
steps, the setting whose error bars missed) from R seeds per pilot length, and prints, beside the
exact log p(x):

- the bias and the spread over runs of the mean over the 20 points, the mean reported standard error
  (the points' jackknife errors combined, what elbogap reports), their ratio and the share of 95%
  intervals that cover the long-run mean;
- one point's error (the group spread, ± t): sd / s.e. and coverage, averaged over the points.

The last separate row spends the longer pilot's cost on temperatures instead, with the old pilot. The
pooled rows run one AIS of R x 8 chains and split it into R repeats of 8: the repeats share one tuning, so
there the error bars face the chains' randomness alone (``--rows pooled`` runs only those, in seconds).
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.coverage import ppca_8d  # noqa: E402
from elbogap.inference.ais import AISResult, AISSettings, ais_log_px, pilot_steps  # noqa: E402
from elbogap.inference.weights import (  # noqa: E402
    interval_halfwidth,
    jackknife_stderr,
    log_mean_exp,
    log_mean_exp_stderr,
)
from elbogap.threads import intra_op_threads  # noqa: E402

SETTINGS = [  # one pilot transition per band is the rule before 2026-12-01: max(bands, steps / 4)
    AISSettings(steps=50, chains=8, pilot_per_band=1),
    AISSettings(steps=50, chains=8, pilot_per_band=3),
    AISSettings(steps=50, chains=8, pilot_per_band=5),
    AISSettings(steps=50, chains=8, pilot_per_band=10),
    AISSettings(steps=88, chains=8, pilot_per_band=1),
]


def separate_runs(known, settings: AISSettings, repeats: int) -> list[AISResult]:
    """Forward AIS from seeds 0..R-1 on ``known``'s points, each run with its own pilot."""
    results = []
    for seed in range(repeats):
        pyro.set_rng_seed(seed)
        results.append(ais_log_px(known.model, known.x, settings))
    return results


def one_run_split(known, settings: AISSettings, repeats: int) -> list[AISResult]:
    """One forward AIS of ``repeats`` x ``settings.chains`` chains, one pilot, split into ``repeats`` results."""
    pyro.set_rng_seed(0)
    log_w = ais_log_px(known.model, known.x, replace(settings, chains=settings.chains * repeats)).log_w
    return [AISResult(log_mean_exp(w), log_mean_exp_stderr(w), w, None, None, jackknife_stderr(w))
            for w in log_w.reshape(repeats, settings.chains, -1)]


def measure(known, runs: list[AISResult]) -> dict:
    """The split mean's and one point's calibration over ``runs``, beside the exact log p(x)."""
    points = torch.stack([r.log_px.double() for r in runs])  # (repeats, points)
    means = points.mean(1)
    mean_stderrs = torch.stack([r.jackknife_stderr.double().pow(2).sum().sqrt() / points.shape[1] for r in runs])
    point_stderrs = torch.stack([r.stderr.double() for r in runs])
    point_halfwidths = interval_halfwidth(point_stderrs, runs[0].dof)
    return {
        "bias": float(means.mean() - known.log_px.double().mean()),
        "sd": float(means.std()),
        "stderr": float(mean_stderrs.mean()),
        "covers": float(((means - means.mean()).abs() <= 1.96 * mean_stderrs).double().mean()),
        "point ratio": float((points.std(0) / point_stderrs.mean(0)).mean()),
        "point covers": float(((points - points.mean(0)).abs() <= point_halfwidths).double().mean()),
    }


def main(args):
    known = ppca_8d()
    print("| repeats | temperatures | pilot transitions (per band) | R | bias of the mean | sd over runs | mean s.e. "
          "| sd / s.e. | covers | one point: sd / s.e., covers | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {"separate": ("separate runs", SETTINGS, separate_runs),
            "pooled": ("one run, split", SETTINGS[0:3:2], one_run_split)}  # the old pilot and the default
    with intra_op_threads(1):
        for label, chosen, runs in (rows[key] for key in args.rows.split(",")):
            for settings in chosen:
                started = time.perf_counter()
                m = measure(known, runs(known, settings, args.repeats))
                pilot = pilot_steps(settings)
                print(f"| {label} | {settings.steps} | {pilot} ({pilot / settings.bands:.1f}) | {args.repeats} "
                      f"| {m['bias']:.2f} | {m['sd']:.3f} | {m['stderr']:.3f} | {m['sd'] / m['stderr']:.2f} "
                      f"| {100 * m['covers']:.1f}% "
                      f"| {m['point ratio']:.2f}, {100 * m['point covers']:.1f}% "
                      f"| {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="AIS runs per pilot length")
    parser.add_argument("--rows", default="separate,pooled", help="separate (R seeds), pooled (one run split)")
    main(parser.parse_args())
