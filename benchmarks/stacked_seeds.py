"""The seeds of elbogap's VAE trained one at a time against as one program, side by side in one run.

    python benchmarks/stacked_seeds.py [--steps 300] [--fits 2,4,8,16] [--threads 1] [--study 16]
    python benchmarks/stacked_seeds.py --data fashion-mnist --hidden-dims 200,200 --latent-dim 50 \
        --families diag,iaf,full --fits 1,8,64 --device cuda          # issue 29's GPU workload

Per family (by default those of the default study, ``diag``, ``full``, ``iaf``, ``planar``, on the default VAE and
digits, batch 128): milliseconds per step of one lone run's trainer (Pyro's compiled ELBO, as ``compare`` trains it),
and per step and per fit-step of G seeds trained as one program
(:class:`~elbogap.inference.stacked_training.StackedTraining`), and the lone cost over the stacked one per fit-step.
``--data``, ``--hidden-dims``, ``--latent-dim``, ``--train-size`` and ``--device`` pick another workload, as
``compare``'s flags of those names do (on a GPU, every step ends by reading its losses, so the times are the
device's). With ``--study N``, that ``elbogap compare`` with seeds 0..N-1 twice, ``--stacked-fits off`` then
``auto`` (training and q* refits at once), with each one's wall time, where the time went, and the mean test KL and
approximation gaps per guide. On this CPU at a small size:
``--data fashion-mnist --hidden-dims 200,200 --latent-dim 50 --train-size 512 --steps 5 --fits 2``.
"""

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stacked_fits import ms_per_step, print_table  # noqa: E402
from elbogap import streams  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.factory import build, for_data, load_dataset, make_trainer  # noqa: E402
from elbogap.inference.stacked_training import StackedTraining  # noqa: E402

FAMILIES = ("diag", "full", "iaf", "planar")


def trainer_of(config, data, family: str, seed: int):
    pyro.clear_param_store()
    streams.seeded("training", seed)
    model, guide = build(config, data, family)
    return make_trainer(config, model, guide, data, seed)


def lone_ms(config, data, family: str, steps: int) -> float:
    trainer = trainer_of(config, data, family, 0)
    trainer.run(10)  # the compiled loss is traced at the first step
    start = time.perf_counter()
    trainer.run(10 + steps)
    return (time.perf_counter() - start) / steps * 1e3


def stacked_ms(config, data, family: str, fits: int, steps: int) -> float:
    trainers = []
    for seed in range(fits):
        trainers.append(trainer_of(config, data, family, seed))
    return ms_per_step(StackedTraining(trainers, list(range(fits)), config.particles, steps + 10), steps)


def study(seeds: int, stacked: str, flags: list[str] = ()) -> dict:
    """The compare with ``seeds`` seeds (the default study, or ``flags``'s): wall seconds and its phases summed over
    runs."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "elbogap.cli", "compare", "--seeds", ",".join(map(str, range(seeds))),
                        "--stacked-fits", stacked, "--out", out, "--quiet", "--no-figures", *flags], check=True)
        wall = time.perf_counter() - start
        results = json.loads((Path(out) / "results.json").read_text())
    phases: dict[str, float] = {}
    for run in results["runs"]:
        for name, seconds in run["seconds"].items():
            phases[name] = phases.get(name, 0.0) + seconds
    gaps = {}
    for run in results["runs"]:
        gaps.setdefault(run["guide"], []).append((run["test"]["kl_gap"], run["test"]["approx_gap"]))
    return {"wall": wall, "phases": phases,
            "gaps": {guide: tuple(sum(column) / len(column) for column in zip(*v, strict=True))
                     for guide, v in gaps.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fits", default="2,4,8,16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--study", type=int, default=0, help="seeds of the side-by-side default study (0: none)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--study-flags", default="", help="more flags of the study's compare, as one string "
                        "(issue 29's: '--guides diag,iaf,full --epochs 100 --ais-points 1000 --test-size 1000')")
    workload = {"data": None, "hidden_dims": None, "latent_dim": int, "train_size": int, "device": None}
    for name, kind in workload.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = {name: getattr(args, name) for name in workload if getattr(args, name) is not None}
    flags = [part for name, value in chosen.items() for part in (f"--{name.replace('_', '-')}", str(value))]
    flags += shlex.split(args.study_flags)
    if "hidden_dims" in chosen:
        chosen["hidden_dims"] = [int(width) for width in chosen["hidden_dims"].split(",")]
    config = Config(**chosen)
    data = load_dataset(config)
    sizes = [int(size) for size in args.fits.split(",")]
    print(f"torch threads: {args.threads}; {args.steps} steps each; {' '.join(flags) or 'the default study'}\n")
    print_table("lone run", args.families.split(","), sizes,
                lambda family: lone_ms(for_data(config, data, family), data, family, args.steps),
                lambda family, g: stacked_ms(for_data(config, data, family), data, family, g, args.steps))
    if args.study:
        print(f"\nThe compare, seeds 0..{args.study - 1}{', ' + ' '.join(flags) if flags else ''}:\n")
        print("| fits | wall s | training s (summed) | after training s (summed) | mean test KL gap (approximation "
              "gap) per guide |")
        print("|---|---|---|---|---|")
        for stacked in ("off", "auto"):
            result = study(args.study, stacked, flags)
            train = result["phases"].get("train", 0.0)
            rest = sum(result["phases"].values()) - train
            gaps = ", ".join(f"{guide} {gap:.3f} ({approx:.3f})" for guide, (gap, approx) in result["gaps"].items())
            label = "one at a time" if stacked == "off" else "seeds stacked"
            print(f"| {label} | {result['wall']:.1f} | {train:.1f} | {rest:.1f} | {gaps} |")


if __name__ == "__main__":
    main()
