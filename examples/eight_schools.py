"""The gap between the ELBO and log p(D) on the eight schools, a small hierarchical model.

The SAT coaching experiments of Rubin [1]: an estimated effect ``y`` and its standard error
``sigma`` for each of eight schools, pooled through a common mean ``mu`` and a spread ``tau``.
The model is written non-centered (``theta = mu + tau * theta_raw``) so that NUTS samples it
without divergences. The posterior is a funnel in ``tau``: mean-field guides miss the coupling
between ``tau`` and the school effects, and the comparison shows how many nats that costs.

    python examples/eight_schools.py

The model can also be named on elbogap's command line as ``examples/eight_schools.py:model``.

References:

[1] Estimation in Parallel Randomized Experiments, Donald B. Rubin,
    Journal of Educational Statistics 6(4), 1981
"""

import argparse

import pyro
import pyro.distributions as dist
import torch

import elbogap

EFFECTS = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
STANDARD_ERRORS = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
GUIDES = ["auto:AutoNormal", "auto:AutoMultivariateNormal", "auto:AutoLowRankMultivariateNormal", "auto:AutoIAFNormal"]


def eight_schools() -> torch.Tensor:
    """The data as one ``(8, 2)`` float32 tensor, columns ``[y, sigma]``."""
    return torch.tensor([EFFECTS, STANDARD_ERRORS]).T.contiguous()


def model(data):
    y, sigma = data[:, 0], data[:, 1]
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(data.new_tensor(5.0)))
    with pyro.plate("schools", data.shape[0]):
        theta_raw = pyro.sample("theta_raw", dist.Normal(data.new_tensor(0.0), 1.0))
        pyro.sample("y", dist.Normal(mu + tau * theta_raw, sigma), obs=y)


def main(args: argparse.Namespace):
    guides, seeds, steps, reference, extra = args.guides, args.seeds, args.steps, args.reference, {}
    if args.quick:
        guides, seeds, steps, reference = guides[:1], seeds[:1], 50, "none"
        extra = {"evidence_steps": 20, "evidence_chains": 16, "iw_samples": 50, "figures": False}
    result = elbogap.compare(model, guides, eight_schools(), seeds=seeds, steps=steps, lr=args.lr, out=args.out,
                             reference=reference, progress=True, **extra)
    print(result._repr_markdown_())
    return result


def comma_list(cast):
    return lambda text: [cast(item) for item in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-g", "--guides", type=comma_list(str), default=GUIDES, help="comma list of guides")
    parser.add_argument("-s", "--seeds", type=comma_list(int), default=[0, 1], help="comma list of seeds")
    parser.add_argument("-n", "--steps", type=int, default=3000, help="SVI steps per guide and seed")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (it decays tenfold by the end)")
    parser.add_argument("-o", "--out", default="results-eight-schools", help="output directory")
    parser.add_argument("--reference", choices=["nuts", "ais", "none"], default="nuts",
                        help="where the reference posterior moments come from")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the first guide and seed, 50 steps, short AIS, no reference")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
