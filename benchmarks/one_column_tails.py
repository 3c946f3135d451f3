"""One column of importance weights: how often its error is declined, and how often a kept one covers, by k-hat.

    python benchmarks/one_column_tails.py [--repeats 1000] [--weights 128,256,1024]

One column (one data set's evidence, one point evaluated alone) has no other column to pool a tail fit with, so
``log_mean_exp_stderr`` declines its error (NaN) where its own PSIS k-hat is above 0.5 and carries it at the rate of a
central limit otherwise. Per weight distribution and column length: the share of repeats declined, and among the
kept ones, by the band their k-hat fell in, the count and the share whose t interval (``group_spread_dof``) covers
log E w. Weights: log-normal (finite variance, heavier as sigma grows) and Pareto of shape 0.4 (finite variance) and
0.7 (infinite). It shows what a rule reading one column can and cannot know: at 256 weights a kept Pareto(0.7) column
and a kept log-normal(1.5) column have the same k-hat, one covering about half the time and the other about 90%.
"""

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap.inference.weights import (  # noqa: E402
    group_spread_dof,
    interval_halfwidth,
    log_mean_exp,
    log_mean_exp_stderr,
    pareto_khat,
)

#: (name, log w from a generator, log E w)
WEIGHTS = [
    ("log-normal, sigma 1", lambda count, g: torch.randn(count, generator=g, dtype=torch.float64), 0.5),
    ("log-normal, sigma 1.5", lambda count, g: 1.5 * torch.randn(count, generator=g, dtype=torch.float64), 1.125),
    ("log-normal, sigma 2", lambda count, g: 2.0 * torch.randn(count, generator=g, dtype=torch.float64), 2.0),
    ("Pareto, shape 0.4", lambda count, g: -0.4 * torch.rand(count, generator=g, dtype=torch.float64).log(),
     -math.log(0.6)),
    ("Pareto, shape 0.7", lambda count, g: -0.7 * torch.rand(count, generator=g, dtype=torch.float64).log(),
     -math.log(0.3)),
]
BANDS = [(-math.inf, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--weights", default="128,256,1024")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| weights | column | declined | " + " | ".join(f"k-hat in [{lo}, {hi}): kept, covers" for lo, hi in BANDS)
          + " |")
    print("|---" * (3 + len(BANDS)) + "|")
    for count in map(int, args.weights.split(",")):
        halfwidth = float(interval_halfwidth(torch.tensor(1.0), group_spread_dof(count)))
        for name, draw, truth in WEIGHTS:
            columns = torch.stack([draw(count, torch.Generator().manual_seed(seed)) for seed in range(args.repeats)], 1)
            estimate = log_mean_exp(columns)
            stderr = torch.stack([log_mean_exp_stderr(columns[:, i:i + 1])[0] for i in range(args.repeats)])
            khat = pareto_khat(columns)
            kept = ~stderr.isnan()
            covers = (estimate - truth).abs() <= halfwidth * stderr
            cells = []
            for lo, hi in BANDS:
                band = kept & (khat >= lo) & (khat < hi)
                share = f"{float(covers[band].double().mean()):.0%}" if band.any() else "-"
                cells.append(f"{int(band.sum())}, {share}")
            print(f"| {name} | {count} | {float((~kept).double().mean()):.0%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
