"""The gap between the ELBO and log p(D) in a random-intercept model: global and per-point latents.

Each row of the data is one subject measured ``K`` times; the response follows a common
regression line shifted by the subject's own intercept:

.. math::

    z_i \\sim \\mathcal{N}(0, \\tau^2), \\qquad
    y_{ik} \\sim \\mathcal{N}(a + z_i + b\\, x_{ik},\\ \\sigma^2), \\quad k = 1, \\dots, K,

with global latents ``intercept`` :math:`a`, ``slope`` :math:`b`, ``tau`` and ``sigma`` (both
positive) and one latent ``z`` per subject inside the data plate. In the posterior the subject
intercepts are coupled to the global intercept (they trade off against it) and their spread to
``tau``, couplings that a mean-field guide cannot hold. The data are synthetic (seeded).

    python examples/random_effects.py

The model can also be named on elbogap's command line as ``examples/random_effects.py:model``.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch

import elbogap

GUIDES = ["auto:AutoNormal", "auto:AutoMultivariateNormal", "auto:AutoLowRankMultivariateNormal", "auto:AutoIAFNormal"]


def random_effects_data(num_subjects: int = 200, num_measurements: int = 4, seed: int = 0, intercept: float = 1.0,
                        slope: float = 0.8, tau: float = 0.8, sigma: float = 0.5) -> torch.Tensor:
    """A float32 data set ``(num_subjects, 2 K)``: each row ``K`` covariates, then the ``K`` responses.

    Covariates are standard normal; the defaults are the true global values.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_subjects, num_measurements, generator=generator)
    z = tau * torch.randn(num_subjects, 1, generator=generator)
    y = intercept + z + slope * x + sigma * torch.randn(num_subjects, num_measurements, generator=generator)
    return torch.cat([x, y], dim=-1)


def model(data):
    num_measurements = data.shape[1] // 2
    x, y = data[:, :num_measurements], data[:, num_measurements:]
    intercept = pyro.sample("intercept", dist.Normal(data.new_tensor(0.0), 5.0))
    slope = pyro.sample("slope", dist.Normal(data.new_tensor(0.0), 1.0))
    tau = pyro.sample("tau", dist.HalfNormal(data.new_tensor(1.0)))
    sigma = pyro.sample("sigma", dist.HalfNormal(data.new_tensor(1.0)))
    with pyro.plate("data", data.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, tau))
        # The trailing [..., None] lines the globals up with the K measurements of a row, also when a
        # leading batch of draws is added to every site.
        loc = (intercept + z)[..., None] + slope[..., None] * x
        pyro.sample("y", dist.Normal(loc, sigma[..., None]).to_event(1), obs=y)


def main(args: argparse.Namespace):
    guides, seeds, steps, reference, extra = args.guides, args.seeds, args.steps, args.reference, {}
    if args.quick:
        guides, seeds, steps, reference = guides[:1], seeds[:1], 50, "none"
        extra = {"evidence_steps": 20, "evidence_chains": 16, "iw_samples": 50, "figures": False}
    data = random_effects_data(args.num_subjects, seed=args.data_seed)
    result = elbogap.compare(model, guides, data, seeds=seeds, steps=steps, lr=args.lr, out=args.out,
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
    parser.add_argument("-o", "--out", default="results-random-effects", help="output directory")
    parser.add_argument("--reference", choices=["nuts", "ais", "none"], default="nuts",
                        help="where the reference posterior moments come from")
    parser.add_argument("-N", "--num-subjects", type=int, default=200, help="subjects (rows) in the synthetic data")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the first guide and seed, 50 steps, short AIS, no reference")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
