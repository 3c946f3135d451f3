"""The IAF's autoregressive order: the program's sampling order (elbogap's) against one Pyro draws at random.

    python benchmarks/iaf_order.py [--cases sparse-groups,centred-eight-schools] [--seeds 0,1,2,3]

For each case of ``benchmarks/global_cases.py`` and seed, ``auto:AutoIAFNormal`` is trained once from Pyro's start
as a run trains it at the defaults (until converged, lr 0.01, 32 particles; no second start), in each order, and its
KL gap is the exact log p(D) minus its ELBO of D from the evaluation's precise draws. One intra-op thread.
"""

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import pyro
import pyro.distributions.transforms as T
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import elbogap.global_latents.guides as guides  # noqa: E402
from benchmarks.global_cases import cases  # noqa: E402
from elbogap import streams  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.data import Dataset  # noqa: E402
from elbogap.factory import for_data  # noqa: E402
from elbogap.global_latents.evaluation import precise_draws, summarize_draws  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.global_latents.training import converging_trainer  # noqa: E402


def random_order(latent_dim: int):
    """Pyro's own AutoIAFNormal transform: one affine autoregressive transform in an order drawn at random."""
    return T.iterated(1, T.affine_autoregressive, latent_dim)


def gap(case, seed: int, order: str) -> tuple[float, float, int, bool, float]:
    """The IAF's gap, its s.e., steps, verdict and seconds, trained in ``order`` from ``seed``."""
    pyro.clear_param_store()
    streams.seeded("training", seed)
    data = case.data
    dataset = Dataset(case.name, data, data[:0], kind="global")
    config = for_data(Config(model="case.py:model", guides=["auto:AutoIAFNormal"]).validate(), dataset,
                      "auto:AutoIAFNormal")
    model = GlobalLatentModel(case.program, data, case.name)
    pyro_order = mock.patch.object(guides, "sampling_order_iaf", random_order)
    with pyro_order if order == "random" else contextlib.nullcontext():
        guide = guides.global_guide("auto:AutoIAFNormal", model, data)
    trainer = converging_trainer(config, model, guide, dataset, seed)
    cap = config.total_steps(len(data))
    started = time.perf_counter()
    trainer.run(cap)
    seconds = time.perf_counter() - started
    streams.seeded("evaluation", seed)
    summary = summarize_draws(precise_draws(model, guide, data, config.iw_samples, config.evidence_stderr), len(data))
    return (case.log_evidence - summary["elbo"], summary["elbo_stderr"], trainer.step_count,
            trainer.convergence(cap)["converged"], seconds)


def main(args) -> None:
    torch.set_num_threads(1)
    print("| case | order | gap per seed (s.e. at most) | mean | converged | steps | seconds per fit |")
    print("|---|---|---|---|---|---|---|")
    for case in cases(args.cases):
        for order in ("random", "sampling"):
            rows = [gap(case, seed, order) for seed in args.seeds]
            gaps = [row[0] for row in rows]
            print(f"| {case.name} | {order} | {', '.join(f'{g:.3f}' for g in gaps)} "
                  f"({max(row[1] for row in rows):.3f}) | {statistics.fmean(gaps):.3f} | "
                  f"{sum(row[3] for row in rows)} of {len(rows)} | "
                  f"{min(row[2] for row in rows)}-{max(row[2] for row in rows)} | "
                  f"{statistics.fmean(row[4] for row in rows):.1f} |", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=lambda text: text.split(","), default=["sparse-groups",
                                                                              "centred-eight-schools"])
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2, 3])
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
