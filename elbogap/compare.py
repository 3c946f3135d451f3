"""The main job: train a model with each guide and seed, evaluate both splits, collect results."""

import sys
from collections.abc import Callable

import pyro
import torch

from elbogap.config import Config
from elbogap.data import Dataset, load_data
from elbogap.errors import UsageError
from elbogap.guides import build_guide
from elbogap.inference import evaluate, refit_guide, train
from elbogap.model import build_model
from elbogap.versions import versions


def resolve_likelihood(config: Config, data: Dataset) -> str:
    """The configured likelihood, or Bernoulli for binary data and Gaussian otherwise."""
    binary = data.is_binary
    if config.likelihood is None:
        return "bernoulli" if binary and config.model == "vae" else "gaussian"
    if config.likelihood == "bernoulli" and not binary:
        raise UsageError(
            f"{data.name} is not binary but the likelihood is Bernoulli; "
            "use --likelihood gaussian (or binarize the data first)"
        )
    return config.likelihood


def build(config: Config, data: Dataset, guide_name: str):
    """A fresh model and guide for ``data`` as the configuration describes them."""
    model = build_model(config.model, data.data_dim, config.latent_dim, config.hidden_dims,
                        config.activation, resolve_likelihood(config, data))
    guide = build_guide(guide_name, model, len(data.train), config.hidden_dims, config.activation,
                        config.flow_depth, config.mixture_size, config.rank)
    return model, guide


def evaluate_split(model, guide, x: torch.Tensor, config: Config, fit_local: bool) -> dict:
    """Metrics of one split; a per-datapoint guide first fits its parameters with the model fixed."""
    if not guide.amortized:
        if fit_local:
            guide = type(guide)(len(x), guide.latent_dim)
        refit_guide(model, guide, x)
    return evaluate(model, guide, x, elbo_samples=config.eval_samples, iw_samples=config.iw_samples,
                    quadrature_points=config.quadrature_points).metrics


def training_curve(losses: list[float], points: int = 100) -> list[list[float]]:
    """``[step, mean ELBO over the preceding window]`` at about ``points`` places."""
    window = max(1, len(losses) // points)
    return [[end, -sum(losses[end - window:end]) / window]
            for end in range(window, len(losses) + 1, window)]


def run_one(config: Config, data: Dataset, guide_name: str, seed: int, progress: bool = False) -> dict:
    """Train the model jointly with one guide from ``seed``, then evaluate the train and test splits."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = build(config, data, guide_name)
    fit = train(model, guide, data.train, config.steps, config.batch_size, config.lr, config.objective,
                config.particles, seed=seed, progress=progress, desc=f"{guide_name} seed {seed}")
    pyro.set_rng_seed(seed + 10_000)  # evaluation draws its own reproducible samples
    metrics = {split: evaluate_split(model, guide, x, config, fit_local=split != "train")
               for split, x in data.splits().items()}
    return {"guide": guide_name, "seed": seed, **metrics, "train_seconds": fit.seconds,
            "curve": training_curve(fit.losses)}


def compare(config: Config, progress: bool = False,
            on_run: Callable[[dict], None] | None = None) -> dict:
    """Run every guide with every seed on one data set and model.

    Returns ``{"config", "versions", "runs"}``; each run holds its guide, seed, the metrics of
    :func:`~elbogap.inference.evaluation` for ``"train"`` and ``"test"``, and ``train_seconds``
    (the SVI loop alone). ``on_run(results)`` is called after every run, so partial results
    can be saved as they arrive.
    """
    config.validate()
    torch.set_default_dtype(torch.float32)
    data = load_data(config.data, config.test_fraction, config.data_seed)
    for name in config.guides:  # fail on a bad guide before any training, not in the middle
        build(config, data, name)
    results = {"config": config.to_dict(), "versions": versions(), "runs": []}
    for guide_name in config.guides:
        for seed in config.seeds:
            results["runs"].append(run_one(config, data, guide_name, seed, progress))
            if on_run is not None:
                on_run(results)
            if progress:
                last = results["runs"][-1]["test"]
                print(f"{guide_name:>10} seed {seed}: test log p(x) {last['log_px']:.3f}, "
                      f"ELBO {last['elbo']:.3f}, gap {last['kl_gap']:.3f}", file=sys.stderr)
    return results
