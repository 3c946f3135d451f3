"""Fits one at a time against fits stacked into one program, per fit-step, side by side in one run.

    python benchmarks/stacked_fits.py [--steps 200] [--fits 1,8,32,100] [--threads 1]

On the eight schools (examples/eight_schools.py) at the family's default settings (32 particles a step): one lone
fit, as ``compare`` and ``elbogap calibrate --stacked-fits off`` train it (elbogap's Trainer over Pyro's
Trace_ELBO), then G fits of one autoguide trained as one program
(:class:`~elbogap.global_latents.stacked.StackedFits`, each on its own simulated data set, as a calibration study
stacks them). Each runs ``--steps`` steps at a fixed learning rate (no convergence checks, which both do every 50
steps); the table gives milliseconds per step and per fit-step, and the lone cost over the stacked one.
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from eight_schools import eight_schools, model  # noqa: E402

from elbogap.config import Config  # noqa: E402
from elbogap.data import Dataset  # noqa: E402
from elbogap.factory import for_data, make_trainer  # noqa: E402
from elbogap.global_latents.guides import global_guide  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.global_latents.stacked import StackedFits  # noqa: E402
from elbogap.inference.convergence import ConvergenceSettings  # noqa: E402

FAMILIES = ("AutoNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal", "AutoIAFNormal")


def lone_ms(base, data, name: str, steps: int) -> float:
    dataset = Dataset("eight schools", data, data[:0], kind="global")
    config = for_data(Config(model="eight_schools", schedule="fixed", steps=steps), dataset, f"auto:{name}")
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = global_guide(f"auto:{name}", base, data)
    trainer = make_trainer(config, base, guide, dataset, 0)
    trainer.run(10)
    start = time.perf_counter()
    trainer.run(10 + steps)
    return (time.perf_counter() - start) / steps * 1e3


def stacked_ms(base, data, name: str, fits: int, steps: int) -> float:
    dataset = Dataset("eight schools", data, data[:0], kind="global")
    config = for_data(Config(model="eight_schools"), dataset, f"auto:{name}")
    data_sets, guides = [], []
    for g in range(fits):
        pyro.set_rng_seed(g)
        data_sets.append(base.simulate(data)[0])
        guides.append(global_guide(f"auto:{name}", base, data_sets[-1]))
    stack = StackedFits(base, guides, torch.stack(data_sets), range(fits), config.lr, config.particles, steps + 10,
                        ConvergenceSettings(), converge=False)
    return ms_per_step(stack, steps)


def print_table(lone_label: str, families, sizes: list[int], lone, stacked) -> None:
    """One row per family: ``lone(family)`` ms/step, ``stacked(family, G)`` ms/step (and per fit) for each G, and
    the lone cost over the stacked one per fit-step at the largest G."""
    print(f"| family | {lone_label}, ms/step | " + " | ".join(f"{g} stacked: ms/step (per fit)" for g in sizes)
          + f" | lone / stacked per fit-step at {sizes[-1]} |")
    print("|---|---|" + "---|" * len(sizes) + "---|")
    for family in families:
        alone = lone(family)
        times = [stacked(family, g) for g in sizes]
        cells = " | ".join(f"{ms:.2f} ({ms / g:.3f})" for ms, g in zip(times, sizes, strict=True))
        print(f"| {family} | {alone:.2f} | {cells} | {alone / (times[-1] / sizes[-1]):.1f}x |", flush=True)


def ms_per_step(stack, steps: int) -> float:
    """Milliseconds per step of every fit of ``stack``, after 10 steps to warm up."""
    active = list(range(len(stack.modules)))
    for _ in range(10):
        stack.step(active)
    start = time.perf_counter()
    for _ in range(steps):
        stack.step(active)
    return (time.perf_counter() - start) / steps * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--fits", default="1,8,32,100")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = eight_schools()
    base = GlobalLatentModel(model, data, "eight_schools")
    sizes = [int(size) for size in args.fits.split(",")]
    print(f"torch threads: {args.threads}; {args.steps} steps each\n")
    print_table("lone fit", FAMILIES, sizes, lambda name: lone_ms(base, data, name, args.steps),
                lambda name, g: stacked_ms(base, data, name, g, args.steps))


if __name__ == "__main__":
    main()
