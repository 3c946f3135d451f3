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

from elbogap.example_study import run_study, study_parser


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
    return run_study(model, random_effects_data(args.num_subjects, seed=args.data_seed), args)


def parse_args(argv=None) -> argparse.Namespace:
    parser = study_parser(__doc__.splitlines()[0], "results-random-effects")
    parser.add_argument("-N", "--num-subjects", type=int, default=200, help="subjects (rows) in the synthetic data")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
