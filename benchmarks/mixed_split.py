"""The error bar of a split whose points quadrature and AIS share, checked against repeats.

Under ``--log-px auto`` the points quadrature leaves without an error bar get AIS; the split's stated error adds the
grid's bounds and AIS's random errors in quadrature. Here a program that computes in float32 (Dirichlet(0.2, 0.3,
0.5) proportions cast with ``.float()``, behind 20 Multinomial draws per row, so its grid stays in float32 and many
rows do not settle) is evaluated at the defaults (``elbogap.evaluate``: AIS's 500 temperatures and 16 chains) on one
data set, ``--repeats`` times with seeds 0, 1, ...; the truth is the Dirichlet-multinomial closed form. Each
repeat's split mean and each filled point are put in units of their stated errors: where the errors are honest, the
filled points' z-scores are about N(0, 1) and the split's lie within 1.96 of 0 at least 95% of the time (its bounds
part is conservative).

    python benchmarks/mixed_split.py --rows 16 --repeats 15

``--batched-copies ROW`` asks instead whether points of one batched AIS run share errors: row ``ROW`` repeated 32
times, AIS from its modes at ``--ais-steps`` temperatures, ``--repeats`` times; where nothing is shared, the copies'
errors are uncorrelated (their mean pairwise correlation has a standard error of 1/sqrt(repeats * 496)).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import elbogap
from elbogap.inference.ais import AISSettings, ais_log_px
from elbogap.inference.weights import interval_halfwidth
from elbogap.user_model import load_user_model

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.estimators.truth import PROPORTIONS_ALPHA as ALPHA  # noqa: E402
from tests.estimators.truth import dirichlet_multinomial_evidence, proportions_rows  # noqa: E402
from tests.estimators.truth import flat_proportions_guide as guide  # noqa: E402
from tests.estimators.truth import float32_proportions as proportions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batched-copies", type=int, metavar="ROW", help="AIS on 32 copies of this row instead")
    parser.add_argument("--ais-steps", type=int, default=100, help="temperatures of --batched-copies' runs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    x = proportions_rows(args.rows)
    exact = dirichlet_multinomial_evidence(x.double(), ALPHA, 20)
    if args.batched_copies is not None:
        return batched_copies(x[args.batched_copies], float(exact[args.batched_copies]), args.repeats, args.ais_steps)
    split, points, inside_t, filled_counts, seconds, errors, filled_masks, stated = [], [], [], [], [], [], [], []
    for repeat in range(args.repeats):
        began = time.perf_counter()
        evaluation = elbogap.evaluate(proportions, guide, x, elbo_samples=16, seed=repeat)
        seconds.append(time.perf_counter() - began)
        per_point, metrics = evaluation.per_point, evaluation.metrics
        filled = ~per_point["log_px_systematic"]
        filled_counts.append(int(filled.sum()))
        error = per_point["log_px"].double() - exact
        errors.append(error)
        filled_masks.append(filled)
        stated.append(metrics["log_px_stderr"])
        points += (error[filled] / per_point["log_px_stderr"][filled].double()).tolist()
        dof = torch.as_tensor(evaluation.dof["log_px"], dtype=torch.float64).expand(error.shape)[filled]
        halfwidth = interval_halfwidth(per_point["log_px_stderr"][filled].double(), dof)
        inside_t += (error[filled].abs() < halfwidth).tolist()
        split.append(float(error.mean()) / metrics["log_px_stderr"])
        print(f"repeat {repeat}: {filled_counts[-1]} filled, split error {float(error.mean()):+.5f}, "
              f"stated {metrics['log_px_stderr']:.5f}, z {split[-1]:+.2f}, {seconds[-1]:.1f} s", flush=True)
    inside = sum(abs(z) < 1.96 for z in split) / len(split)
    if all(torch.equal(mask, filled_masks[0]) for mask in filled_masks) and args.repeats > 2:
        # do the filled points' errors add as independent ones? the variance of their sum over the repeats against
        # the sum of their variances, and the mean correlation between two points' errors
        filled_errors = torch.stack(errors)[:, filled_masks[0]]
        ratio = float(filled_errors.sum(1).var() / filled_errors.var(0).sum())
        correlation = torch.corrcoef(filled_errors.T)
        pairs = correlation[~torch.eye(len(correlation), dtype=torch.bool)]
        print(f"filled points' errors: variance of their sum / sum of their variances {ratio:.2f}, mean correlation "
              f"of two points' errors {float(pairs.mean()):+.3f}; the split's error varies by "
              f"{statistics.stdev(float(e.mean()) for e in errors):.4f} over the repeats where it states "
              f"{statistics.mean(e * e for e in stated) ** 0.5:.4f} (root mean square)")
    print(f"\n| rows | repeats | filled points per repeat | split: z mean, z sd, within 1.96 | filled points: z mean, "
          f"z sd, within 1.96 | filled points within their t interval | s a repeat |\n|---|---|---|---|---|---|---|\n"
          f"| {args.rows} | {args.repeats} | {min(filled_counts)}-{max(filled_counts)} | "
          f"{statistics.mean(split):+.2f}, {statistics.stdev(split):.2f}, {inside:.2f} | "
          f"{statistics.mean(points):+.2f}, {statistics.stdev(points):.2f}, "
          f"{sum(abs(z) < 1.96 for z in points) / len(points):.3f} ({len(points)}) | "
          f"{sum(inside_t) / len(inside_t):.3f} | {statistics.mean(seconds):.1f} |")


def batched_copies(row: torch.Tensor, exact: float, repeats: int, steps: int, copies: int = 32) -> None:
    """AIS from the modes on ``copies`` copies of one row in one batched run, ``repeats`` times: the copies' errors
    are independent where the run shares no random number, step size or start between its points."""
    x = row[None].repeat(copies, 1)
    model = load_user_model(f"{Path(__file__).parents[1] / 'tests/estimators/truth.py'}:float32_proportions", x)
    errors = []
    for repeat in range(repeats):
        torch.manual_seed(repeat)
        errors.append(ais_log_px(model, x, AISSettings(init="laplace", steps=steps)).log_px.double() - exact)
    errors = torch.stack(errors)
    correlation = torch.corrcoef(errors.T)
    pairs = correlation[~torch.eye(copies, dtype=torch.bool)]
    print(f"{copies} copies of row {row.tolist()} in one AIS run, {repeats} repeats at {steps} temperatures: "
          f"error sd {float(errors.std()):.4f}; variance of their sum / sum of their variances "
          f"{float(errors.sum(1).var() / errors.var(0).sum()):.2f}; mean correlation of two copies' errors "
          f"{float(pairs.mean()):+.4f} (its standard error where they are independent: "
          f"{1 / (repeats * len(pairs) / 2) ** 0.5:.4f})")


if __name__ == "__main__":
    sys.exit(main())
