"""Per-step cost of the gradient estimators, side by side in one process: reparam, stl and dreg.

For each guide family, four trainers built as ``elbogap compare`` builds them (the default data,
sklearn's digits, and the default VAE, at batch 128), each in its own Pyro param store:

  elbo reparam   Trace_ELBO, compiled (JitTrace_ELBO): today's default;
  elbo stl       the same loss on the sticking-the-landing guide, compiled;
  iwae reparam   RenyiELBO(alpha=0) with K particles (uncompiled: Pyro has no compiled one);
  iwae dreg      IWAE, K particles, the sticking guide (uncompiled: its gradient hooks would not survive tracing).

The trainers run interleaved, a block of steps each in turn, so that a slow spell of a shared
machine hits all of them alike; each one's time is the sum of its blocks, after a warm-up that
includes the one-time compile. Ratios compare stl with elbo reparam and dreg with iwae reparam.

    OMP_NUM_THREADS=1 python benchmarks/gradients.py --out gradients.json
"""

import argparse
import json
import platform
import time

import pyro
import torch

from elbogap.config import Config
from elbogap.factory import build, load_dataset, make_trainer

ESTIMATORS = {  # label: (objective, gradient, particles from --particles)
    "elbo reparam": ("elbo", "reparam", False),
    "elbo stl": ("elbo", "stl", False),
    "iwae reparam": ("iwae", "reparam", True),
    "iwae dreg": ("iwae", "dreg", True),
}


def trainers_for(config: Config, data, guide: str, particles: int) -> dict:
    """One trainer per estimator, each with its own param store state (their modules share names)."""
    store, trainers = pyro.get_param_store(), {}
    for label, (objective, gradient, many) in ESTIMATORS.items():
        settings = config.replace(objective=objective, gradient=gradient, particles=particles if many else 1)
        with store.scope() as state:
            pyro.set_rng_seed(0)
            model, guide_object = build(settings, data, guide)
            trainers[label] = (make_trainer(settings, model, guide_object, data, seed=0), state)
    return trainers


def run_block(trainer, state, steps: int) -> float:
    with pyro.get_param_store().scope(state):
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        return time.perf_counter() - start


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    config = Config(latent_dim=args.latent_dim, batch_size=args.batch_size)
    data = load_dataset(config)
    results = {"torch": torch.__version__, "pyro": pyro.__version__,
               "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "data": config.data, "train_points": len(data.train),
               "latent_dim": args.latent_dim, "batch_size": args.batch_size, "particles": args.particles,
               "steps_timed": args.blocks * args.block, "guides": {}}
    print(f"{config.data}: {len(data.train)} training points, VAE latent {args.latent_dim}, batch {args.batch_size}, "
          f"K = {args.particles} for iwae, {torch.get_num_threads()} torch thread(s); ms per step")
    print(f"{'guide':<6} " + " ".join(f"{label:>13}" for label in ESTIMATORS)
          + f" {'stl/reparam':>12} {'dreg/iwae':>10}")
    for guide in args.guides:
        trainers = trainers_for(config, data, guide, args.particles)
        for trainer, state in trainers.values():
            run_block(trainer, state, args.warm_up)
        seconds = dict.fromkeys(trainers, 0.0)
        for _ in range(args.blocks):
            for label, (trainer, state) in trainers.items():
                seconds[label] += run_block(trainer, state, args.block)
        per_step = {label: 1000 * total / (args.blocks * args.block) for label, total in seconds.items()}
        compiled = {label: trainer.svi.compiled for label, (trainer, _) in trainers.items()}
        ratios = {"stl/reparam": per_step["elbo stl"] / per_step["elbo reparam"],
                  "dreg/iwae": per_step["iwae dreg"] / per_step["iwae reparam"]}
        results["guides"][guide] = {"ms_per_step": per_step, "compiled": compiled, "ratios": ratios}
        print(f"{guide:<6} " + " ".join(f"{per_step[label]:13.2f}" for label in ESTIMATORS)
              + f" {ratios['stl/reparam']:11.2f}x {ratios['dreg/iwae']:9.2f}x", flush=True)
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-g", "--guides", type=lambda text: text.split(","), default=["diag", "full", "iaf"])
    parser.add_argument("--latent-dim", type=int, default=Config.latent_dim)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("-k", "--particles", type=int, default=10, help="K of the iwae estimators")
    parser.add_argument("--block", type=int, default=50, help="steps per block")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per trainer")
    parser.add_argument("--warm-up", type=int, default=20, help="steps per trainer before timing (compiles)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--out", help="write the numbers as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    numbers = main(args)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(numbers, file, indent=2)
