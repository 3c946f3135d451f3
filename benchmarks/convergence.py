"""The convergence rules against the truth: how often a fit is called converged while it is not (a miss), and
unconverged while it is (a false alarm).

    python benchmarks/convergence.py [--seeds 5] [--rules plateau,trend]

On conjugate regressions the posterior is Gaussian, so every Gaussian guide's excess KL over its family's best is a
closed form: the truth each verdict is checked against. A fit is *off* where that excess is above 0.1 nats (the
accuracy the gap table promises), *settled* where it is within the tolerance (0.02 nats). Rows:

- the plateau rule (``--schedule converge``, the default for global latents) at the defaults (a cap of 20000
  steps), and with caps of 100 and 300 steps, which stop most fits early;
- the trend rule (``--schedule fixed``) after 100 to 3000 steps from lr 0.05, decaying tenfold.

A miss is a fit called converged that is off; a false alarm a fit called unconverged that is settled. The trend rule
may also say it cannot tell (its gain's interval holds the tolerance): counted apart, with how many of those are off.
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap.config import Config  # noqa: E402
from elbogap.data import Dataset  # noqa: E402
from elbogap.factory import make_trainer  # noqa: E402
from elbogap.global_latents.guides import GlobalAutoGuide  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from tests.global_latents import truth  # noqa: E402

FAMILIES = ("AutoNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal")
OFF, SETTLED = 0.1, 0.02


def gaussian_of(guide) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and covariance of a fitted Gaussian autoguide over the one site ``w``."""
    auto = guide.auto
    name = type(auto).__name__
    if name == "AutoNormal":
        loc, scale = (pyro.param(f"{auto._pyro_name}.{kind}.w").detach().double() for kind in ("locs", "scales"))
        return loc, torch.diag(scale**2)
    loc, scale = auto.loc.detach().double(), auto.scale.detach().double()
    if name == "AutoMultivariateNormal":
        factor = scale[:, None] * auto.scale_tril.detach().double()
        return loc, factor @ factor.T
    factor = auto.cov_factor.detach().double() * scale[:, None]
    return loc, torch.diag(scale**2) + factor @ factor.T


def best_kl(family: str, precision: torch.Tensor) -> float:
    """The family's smallest KL to the Gaussian posterior: the factorized optimum's, or 0 (full rank; low rank
    ``round(sqrt(d))`` >= d - 1, which holds any covariance here)."""
    return truth.best_factorized_gaussian_kl(precision) if family == "AutoNormal" else 0.0


def fit(family: str, data: torch.Tensor, seed: int, **settings) -> tuple[dict, float]:
    """One fit at ``settings`` over elbogap's defaults for global latents: its verdict and its excess KL."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    guide = GlobalAutoGuide(family, model, data)
    config = Config(model="regression", guides=[f"auto:{family}"], **settings).validate()
    trainer = make_trainer(config, model, guide, Dataset("regression", data, data[:0], kind="global"), seed)
    cap = config.steps if config.steps is not None else 20000
    trainer.run(cap)
    features, targets = data[:, :-1].double(), data[:, -1].double()
    mean, cov, precision = truth.regression_posterior(features, targets, 1.0, 1.0)
    loc, covariance = gaussian_of(guide)
    return trainer.convergence(cap), truth.gaussian_kl(loc, covariance, mean, cov) - best_kl(family, precision)


def main(args) -> None:
    torch.set_num_threads(1)
    datasets = {f"{rows} rows, correlation {rho}": truth.regression_data(rows, 3, seed=rows, correlation=rho)
                for rows in (100, 1000) for rho in (0.5, 0.9)}
    settings = {"plateau, defaults": {}, "plateau, cap 100": {"steps": 100}, "plateau, cap 300": {"steps": 300}}
    settings.update({f"trend, {steps} fixed steps": {"schedule": "fixed", "steps": steps, "lr": 0.05}
                     for steps in (100, 300, 1000, 3000)})
    print("| rule and settings | fits | called converged | of them off (miss) | called unconverged | of them settled "
          "(false alarm) | cannot tell (of them off) | largest excess KL called converged | mean steps | seconds |")
    print("|---" * 10 + "|")
    for label, setting in settings.items():
        if args.rules and not label.startswith(tuple(args.rules)):
            continue
        started, verdicts = time.perf_counter(), []
        for data in datasets.values():
            for family in FAMILIES:
                for seed in range(args.seeds):
                    verdict, excess = fit(family, data, seed, **setting)
                    verdicts.append((verdict["converged"], excess, verdict.get("steps", setting.get("steps"))))
        called = [excess for converged, excess, _ in verdicts if converged]
        flagged = [excess for converged, excess, _ in verdicts if converged is False]
        unclear = [excess for converged, excess, _ in verdicts if converged is None]  # the trend rule cannot tell
        misses, alarms = sum(e > OFF for e in called), sum(e <= SETTLED for e in flagged)
        worst = f"{max(called):.3f}" if called else "–"
        steps = sum(s or 0 for *_, s in verdicts) / len(verdicts)
        print(f"| {label} | {len(verdicts)} | {len(called)} | {misses} | {len(flagged)} | {alarms} | "
              f"{len(unclear)} ({sum(e > OFF for e in unclear)}) | {worst} | {steps:.0f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per data set and family")
    parser.add_argument("--rules", type=lambda text: text.split(","), default=None,
                        help="comma list of the rows' first words to run (plateau, trend); all by default")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
