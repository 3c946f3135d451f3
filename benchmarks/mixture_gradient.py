"""The mixture guide on a target it holds exactly: the KL it reaches and its weights, seed by seed.

    python benchmarks/mixture_gradient.py [--seeds 0,1,2,3,4] [--markdown FILE]

The target is ``tests/inference/test_components.py``'s: a model whose data say nothing of z, so its posterior is
its prior, a 3-component diagonal mixture in 2-D with weights 0.5, 0.3 and 0.2. A 3-component ``mixture`` guide
holds it (KL 0 is reachable). Each seed trains one as the test does (3000 steps on a batch of 32 identical points,
lr 0.05 decaying tenfold, the ELBO summed over components) and reports KL(q || target) from 100,000 draws of q.
One intra-op thread.
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap.guides.mixture import Mixture  # noqa: E402
from elbogap.inference import train  # noqa: E402
from tests.inference.test_components import MixturePrior, kl_to_target  # noqa: E402

STEPS = 3000


def fit(seed: int) -> tuple[float, list[float], float]:
    """KL to the target, the fitted weights (ascending) and the seconds of training, from ``seed``."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    x = torch.zeros(32, 1)
    guide = Mixture(1, 2, hidden_dims=(), mixture_size=3)
    started = time.perf_counter()
    train(MixturePrior(1, 2), guide, x, steps=STEPS, batch_size=32, lr=0.05, lr_decay=0.1 ** (1 / STEPS), jit=False)
    seconds = time.perf_counter() - started
    weights = sorted(guide.distribution(x[:1]).categorical.probs[0].tolist())
    return kl_to_target(guide, x), weights, seconds


def table(seeds: list[int]) -> str:
    rows = ["| seed | KL to the target | fitted weights | seconds |", "|---|---|---|---|"]
    for seed in seeds:
        kl, weights, seconds = fit(seed)
        rows.append(f"| {seed} | {kl:.4f} | {', '.join(f'{w:.3f}' for w in weights)} | {seconds:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = table([int(seed) for seed in args.seeds.split(",")])
    print(out)
    if args.markdown:
        args.markdown.write_text(out + "\n")


if __name__ == "__main__":
    main()
