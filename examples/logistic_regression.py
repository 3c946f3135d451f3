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

from elbogap.example_study import run_study, study_parser


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
    return run_study(model, breast_cancer(), args)


def parse_args(argv=None) -> argparse.Namespace:
    parser = study_parser(__doc__.splitlines()[0], "results-logistic-regression")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
