"""2-D quadrature: its error and its stated error, on per-point posteriors of every width and on two global latents.

Per point: random VAEs (64 Bernoulli pixels, 2-D z) with their weights multiplied by 1, 3 and 6 (the larger, the
narrower each point's posterior), 200 points each, seeds 0-2; the truth is the same estimator on 160 points per axis.
Global: conjugate regressions with two weights under priors of sd 1 and 100 on 2,000 rows, against their closed
forms. ``--before COMMIT`` also runs the quadrature of ``elbogap/inference/log_px.py`` at that commit (a fixed box
of +-8 and one refinement, the error from halving the resolution), side by side.

    python benchmarks/quadrature.py --before f288637
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from elbogap.estimators import EstimatorSettings, estimators
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference.log_px import per_point_target
from elbogap.model.target import DataSetTarget
from elbogap.model.vae import VAE

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.global_latents import truth  # noqa: E402

QUADRATURE = estimators()["quadrature"]


def former(commit: str):
    """``quadrature_log_px`` as ``elbogap/inference/log_px.py`` had it at ``commit``."""
    source = subprocess.run(["git", "show", f"{commit}:elbogap/inference/log_px.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / "former_log_px.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("former_log_px", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["former_log_px"] = module
    spec.loader.exec_module(module)
    return module.quadrature_log_px


def row(name: str, values, stderr, exact, seconds: float) -> str:
    error = (values.double() - exact.double()).abs()
    counted = error > 1e-8  # below that, float64 sums
    ratio = (error / stderr.double().clamp_min(1e-300))[counted]
    worst = f"{float(ratio.max()):.2f}" if len(ratio) else "-"
    covered = f"{float((ratio <= 1).double().mean()):.3f}" if len(ratio) else "1.000"
    return (f"| {name} | {float(error.max()):.1e} | {float(error.median()):.1e} | {float(stderr.max()):.1e} | "
            f"{worst} | {covered} | {seconds:.2f} |")


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="12,16,24,32", help="grid points per axis, comma-separated")
    parser.add_argument("--before", help="a commit whose fixed-box quadrature runs side by side")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    before = former(args.before) if args.before else None
    print("| case | max error | median error | max stated error | max error / stated | stated >= error | s |")
    print("|---|---|---|---|---|---|---|")
    for line in per_point([int(n) for n in args.points.split(",")], before) + global_latents():
        print(line, flush=True)


if __name__ == "__main__":
    main()
