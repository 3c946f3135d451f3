"""The gap between the ELBO and log p(D) for Bayesian logistic regression on breast cancer data.

Scikit-learn's bundled Wisconsin diagnostic breast cancer data set (569 tumours, 30 features,
benign or malignant; no download), features standardized. Thirty-one global latents, weights
and bias, with a posterior that is close to Gaussian but correlated, because many features are:
a full-covariance guide should close most of the mean-field gap.

    python examples/logistic_regression.py

The model can also be named on elbogap's command line as ``examples/logistic_regression.py:model``.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from sklearn.datasets import load_breast_cancer

import elbogap

GUIDES = ["auto:AutoNormal", "auto:AutoMultivariateNormal", "auto:AutoLowRankMultivariateNormal", "auto:AutoIAFNormal"]


def breast_cancer() -> torch.Tensor:
    """The data as one ``(569, 31)`` float32 tensor: 30 standardized features, then the label (1: benign)."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(0)) / features.std(0)
    return torch.cat([torch.tensor(features), torch.tensor(labels).unsqueeze(-1)], dim=-1).float()


def model(data):
    features, labels = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_tensor(0.0), 1.0).expand([features.shape[-1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(data.new_tensor(0.0), 5.0))
    with pyro.plate("data", data.shape[0]):
        # (features * w).sum(-1) rather than features @ w: it also broadcasts over a batch of draws of w.
        logits = (features * w).sum(-1) + b
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=labels)


def main(args: argparse.Namespace):
    guides, seeds, steps, reference, extra = args.guides, args.seeds, args.steps, args.reference, {}
    if args.quick:
        guides, seeds, steps, reference = guides[:1], seeds[:1], 50, "none"
        extra = {"evidence_steps": 20, "evidence_chains": 16, "iw_samples": 50, "figures": False}
    result = elbogap.compare(model, guides, breast_cancer(), seeds=seeds, steps=steps, lr=args.lr, out=args.out,
                             reference=reference, progress=True, **extra)
    print(result._repr_markdown_())
    return result


def comma_list(cast):
    return lambda text: [cast(item) for item in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-g", "--guides", type=comma_list(str), default=GUIDES, help="comma list of guides")
    parser.add_argument("-s", "--seeds", type=comma_list(int), default=[0, 1], help="comma list of seeds")
    parser.add_argument("-n", "--steps", type=int, default=2000, help="SVI steps per guide and seed")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (it decays tenfold by the end)")
    parser.add_argument("-o", "--out", default="results-logistic-regression", help="output directory")
    parser.add_argument("--reference", choices=["nuts", "ais", "none"], default="nuts",
                        help="where the reference posterior moments come from")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the first guide and seed, 50 steps, short AIS, no reference")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
