r"""Bidirectional Monte Carlo: a sandwich around :math:`\log p(x)` on data simulated from the model [1].

For :math:`(z, x)` drawn from :math:`p(z)\,p(x \mid z)`, :math:`z` is an exact draw from the
posterior :math:`p(z \mid x)`. Forward AIS from the prior gives a stochastic lower bound on
:math:`\log p(x)`; reverse AIS, started at that :math:`z` and annealed from the posterior back
to the prior, estimates :math:`1/p(x)` without bias, so minus its log is a stochastic upper
bound. The width of the sandwich bounds the error of forward AIS with these settings on data
like the model's own [2]: the error bar to quote for AIS on real data at the same settings.

References:

[1] Sandwiching the marginal likelihood using bidirectional Monte Carlo, Roger B. Grosse,
    Zoubin Ghahramani, Ryan P. Adams, arXiv:1511.02543
[2] On the Quantitative Analysis of Decoder-Based Generative Models, Yuhuai Wu, Yuri Burda,
    Ruslan Salakhutdinov, Roger Grosse, arXiv:1611.04273
"""

import math
import time
from dataclasses import dataclass

import torch
from pyro import poutine

from elbogap.inference.ais import (
    AISSettings,
    AnnealingPath,
    anneal,
    initial_draws,
    pilot_steps,
    point_chunk,
    sigmoid_schedule,
    tune_step_sizes,
)
from elbogap.inference.log_joint import flatten_latents, latent_sites, observed_sites
from elbogap.inference.log_px import ImportanceAccumulator
from elbogap.progress import Progress, as_progress


@torch.no_grad()
def simulate(model, example_x: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_points`` pairs ``(x, z)`` drawn from the model's own program, its observed site left free.

    ``example_x`` gives the shape of one observation (its first row is repeated); the model runs
    with ``poutine.uncondition``, so every site, the observation too, is sampled.
    """
    like = example_x[:1].expand(num_points, -1).clone()
    trace = poutine.trace(poutine.uncondition(model.model)).get_trace(like)
    (observed,) = observed_sites(model)[:1]
    z = flatten_latents(model, {name: trace.nodes[name]["value"] for name in latent_sites(model)}, 1)
    return trace.nodes[observed]["value"].detach().to(like.dtype), z.detach()


@dataclass
class BDMCResult:
    """Per-point bounds ``lower`` <= log p(x) <= ``upper`` (each stochastic), with standard errors over chains."""

    lower: torch.Tensor
    lower_stderr: torch.Tensor
    upper: torch.Tensor
    upper_stderr: torch.Tensor

    @property
    def width(self) -> float:
        """Mean of ``upper - lower`` over points, in nats."""
        return float((self.upper - self.lower).double().mean())


def bdmc(model, x: torch.Tensor, z: torch.Tensor, settings: AISSettings | None = None,
         progress: bool | Progress = False) -> BDMCResult:
    """Forward and reverse AIS on simulated pairs ``(x, z)``, with the same frozen step sizes.

    The step sizes are tuned in a pilot run of forward AIS (:func:`~elbogap.inference.ais.tune_step_sizes`)
    and shared by both directions, so the sandwich measures the reported AIS settings. ``progress``
    counts the transitions.
    """
    settings = settings or AISSettings()
    chunk = point_chunk(settings, x.shape[1])
    starts = range(0, len(x), chunk)
    transitions = len(starts) * (pilot_steps(settings) + 2 * settings.steps)
    with as_progress(progress).bar(f"BDMC on {len(x)} points", transitions, unit="transition") as bar:
        parts = [_bdmc_chunk(model, x[i:i + chunk], z[i:i + chunk], settings, bar) for i in starts]
    return BDMCResult(*(torch.cat([getattr(p, key) for p in parts])
                        for key in ("lower", "lower_stderr", "upper", "upper_stderr")))


def _bdmc_chunk(model, x, z, settings, bar=None) -> BDMCResult:
    path = AnnealingPath(model, x)
    step_sizes = tune_step_sizes(path, settings, bar=bar)
    betas = sigmoid_schedule(settings.steps, dtype=x.dtype)
    forward, _, _ = anneal(path, initial_draws(path, settings.chains), betas, step_sizes, settings.leapfrog_steps,
                           bar=bar)
    start = z.expand(settings.chains, *z.shape).clone()
    backward, _, _ = anneal(path, start, betas, step_sizes, settings.leapfrog_steps, reverse=True, bar=bar)
    lower, upper = ImportanceAccumulator(), ImportanceAccumulator()
    lower.add(forward.log_w)
    upper.add(backward.log_w)  # estimates log(1 / p(x)) from above in expectation, after the sign flip
    return BDMCResult(lower.log_mean(), lower.stderr(), -upper.log_mean(), upper.stderr())


def sandwich(model, example_x: torch.Tensor, num_points: int, settings: AISSettings | None = None,
             progress: bool | Progress = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """Simulate ``num_points`` pairs from ``model`` and sandwich their log p(x) with :func:`bdmc`.

    Returns a summary (``points``, ``lower``, ``upper`` and their standard errors as means over
    points, ``width``, ``settings``, ``seconds``) and per-point arrays ``x``, ``lower``, ``upper``.
    """
    settings = settings or AISSettings(init="prior")
    if settings.init != "prior":
        settings = AISSettings(**{**settings.to_dict(), "init": "prior"})  # the sandwich anneals from the prior
    started = time.perf_counter()
    x, z = simulate(model, example_x, num_points)
    result = bdmc(model, x, z, settings, progress)

    def combined(stderr):
        return float(stderr.double().pow(2).sum().sqrt() / len(stderr))

    summary = {
        "points": num_points,
        "lower": float(result.lower.double().mean()), "lower_stderr": combined(result.lower_stderr),
        "upper": float(result.upper.double().mean()), "upper_stderr": combined(result.upper_stderr),
        "width": result.width, "settings": settings.to_dict(), "seconds": time.perf_counter() - started,
    }
    summary["width_stderr"] = math.hypot(summary["lower_stderr"], summary["upper_stderr"])
    summary["reading"] = read_sandwich(summary["width"], summary["width_stderr"])
    return summary, {"x": x, "lower": result.lower, "upper": result.upper}


def read_sandwich(width: float, stderr: float) -> str:
    """What a sandwich of mean ``width`` (upper - lower) with standard error ``stderr`` says about AIS."""
    if width >= -3 * stderr and abs(width) <= 3 * stderr:
        return ("the bounds meet within their standard errors: at these settings AIS is as accurate as its own "
                "noise on data like the model's")
    if width > 0:
        return (f"AIS at these settings may sit up to {width:.3f} nats below log p(x) on data like the model's: "
                "quote it as the error bar, or raise --ais-steps until it is small against the gaps compared")
    return ("the bounds cross by more than their standard errors, which AIS on a normalized model does not do: "
            "check that the model's likelihood is a normalized density in x")
