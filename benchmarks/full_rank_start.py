"""Full rank from the seed's mean-field fit: the covariance of the expected curvature against the mean field's own.

For each example model and seed, the seed's AutoNormal fit is trained as a study trains it; then
AutoMultivariateNormal is trained until converged (the default schedule and cap) from two starts at that fit's mean:

- *mean field*: its covariance the mean field's (``scale_tril`` the identity in Pyro's parametrization), the start
  before 2026-12-07;
- *curvature*: the covariance of q's expected curvature (:mod:`elbogap.global_latents.curvature`), today's start.

Each fit's ELBO of D is then read from 20,000 draws (s.e. a few hundredths of a nat), beside its steps, its verdict and
its seconds (one intra-op thread).

    python benchmarks/full_rank_start.py [--seeds 0,1] [--models random_effects,eight_schools,logistic_regression]
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.nn import PyroParam

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import eight_schools  # noqa: E402
import logistic_regression  # noqa: E402
import random_effects  # noqa: E402

from elbogap import streams  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.data import Dataset  # noqa: E402
from elbogap.factory import for_data, make_trainer  # noqa: E402
from elbogap.global_latents.evaluation import guide_draws  # noqa: E402
from elbogap.global_latents.guides import GlobalAutoGuide  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.global_latents.warm_start import mean_field_fits, start_at  # noqa: E402
from elbogap.progress import as_progress  # noqa: E402

MODELS = {
    "random_effects": (random_effects.model, lambda: random_effects.random_effects_data()),
    "eight_schools": (eight_schools.model, eight_schools.eight_schools),
    "logistic_regression": (logistic_regression.model, logistic_regression.breast_cancer),
}
FULL = "AutoMultivariateNormal"


def run(name: str, seed: int, out: Path) -> list[str]:
    program, data_of = MODELS[name]
    data = data_of()
    model = GlobalLatentModel(program, data, name)
    dataset = Dataset(name, data, data[:0], kind="global")
    config = for_data(Config(model=f"{name}.py:model", guides=[f"auto:{FULL}"]).validate(), dataset)
    run_dir = out / name / "runs" / f"seed{seed}"
    fit = mean_field_fits(model, dataset, config, [seed], [run_dir], as_progress(False))[seed]
    check = fit["check"]
    rows = [f"| {name} | {seed} | mean field (AutoNormal) | {check['elbo']:.3f} ± {check['elbo_stderr']:.3f} | "
            f"{check['steps']} | {check['converged']} | – |"]
    for start in ("mean field", "curvature"):
        pyro.clear_param_store()
        streams.seeded("training", seed)
        guide = GlobalAutoGuide(FULL, model, data)
        record = start_at(model, data, guide, fit, seed)
        if start == "mean field":  # the start before the curvature: the mean field's covariance
            auto = guide.auto
            auto.scale = PyroParam(fit["scale"].clone(), auto.scale_constraint)
            auto.scale_tril = PyroParam(torch.eye(model.latent_dim), auto.scale_tril_constraint)
        trainer = make_trainer(config, model, guide, dataset, seed=seed, keep_start=True)
        started = time.perf_counter()
        trainer.run(config.total_steps(len(data)))
        seconds = time.perf_counter() - started
        verdict = trainer.convergence(config.total_steps(len(data)))
        streams.seeded("evaluation", seed)
        log_w = guide_draws(model, guide, data, 20_000).log_w.double()
        label = start if start == "mean field" else f"curvature ({record['covariance']})"
        rows.append(f"| {name} | {seed} | full rank from {label} | {float(log_w.mean()):.3f} ± "
                    f"{float(log_w.std()) / len(log_w) ** 0.5:.3f} | {trainer.step_count} | {verdict['converged']} | "
                    f"{seconds:.0f} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default="/tmp/full_rank_start")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | seed | fit | ELBO of D | steps | converged | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for row in run(name, seed, Path(args.out)):
                print(row, flush=True)


if __name__ == "__main__":
    main()
