"""Compare your own Pyro VAE with elbogap's families, through the notebook API alone.

The VAE below is written the way Pyro's tutorial writes it: a class with ``model(x)`` and
``guide(x)``, its own site names, ``pyro.module`` registrations and a plate without subsampling.
``elbogap.compare`` trains it (as model and guide) beside built-in guides on the same model
class, and returns a table; ``elbogap.evaluate`` measures one trained pair without training.

    python scripts/notebook_compare.py --steps 2000 --seeds 0,1
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import elbogap


class TutorialVAE(nn.Module):
    """z ~ N(0, I), x ~ Bernoulli(decoder(z)); q(z|x) = N(encoder(x)): as the Pyro VAE tutorial has it."""

    def __init__(self, data_dim: int = 64, latent_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Softplus(), nn.Linear(hidden, data_dim))
        self.encoder = nn.Sequential(nn.Linear(data_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * latent_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("batch", x.shape[0]):
            code = pyro.sample("code", dist.Normal(torch.zeros(x.shape[0], self.latent_dim), 1.0).to_event(1))
            pyro.sample("pixels", dist.Bernoulli(logits=self.decoder(code)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("batch", x.shape[0]):
            loc, raw_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("code", dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-3).to_event(1))


def main(args: argparse.Namespace) -> elbogap.Comparison:
    seeds = [int(seed) for seed in args.seeds.split(",")]
    result = elbogap.compare(TutorialVAE, {"tutorial": TutorialVAE, "diag": "diag", "iaf": "iaf"}, "digits",
                             seeds=seeds, steps=args.steps, out=args.out, figures=args.figures)
    print(f"{'guide':>10} {'log p(x)':>10} {'ELBO':>10} {'KL gap':>8}  ({result.runs[0]['test']['log_px_method']})")
    for row in result.table():
        print(f"{row['guide']:>10} {row['log_px']:10.3f} {row['elbo']:10.3f} {row['kl_gap']:8.3f}")

    # one trained pair, measured again without training: the tutorial VAE of the first seed
    model, guide, data = result.load("tutorial", seeds[0])
    evaluation = elbogap.evaluate(model, guide, data.test[:200], elbo_samples=64)
    print(f"tutorial, seed {seeds[0]}, 200 test points: KL gap {evaluation.metrics['kl_gap']:.3f} "
          f"± {evaluation.metrics['kl_gap_stderr']:.3f}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--steps", type=int, default=2000)
    parser.add_argument("-s", "--seeds", default="0")
    parser.add_argument("-o", "--out", default="notebook-results")
    parser.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
