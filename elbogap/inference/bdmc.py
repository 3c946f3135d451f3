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
    pilot_steps,
    point_chunk,
    sigmoid_schedule,
    tune_step_sizes,
)
from elbogap.inference.log_joint import flatten_latents, latent_sites, observed_sites
from elbogap.inference.weights import (
    errors_a_mean_combines,
    group_spread_dof,
    jackknife_stderr,
    log_mean_exp,
    log_mean_exp_stderr,
)
from elbogap.model.target import PointsTarget
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
    """Per-point bounds ``lower`` <= log p(x) <= ``upper`` (each stochastic), with Monte-Carlo standard errors.

    ``upper_stderr`` is NaN where the reverse chains of a point share their start: chains from one
    exact draw are not independent, and their spread says nothing of that draw's own randomness.
    ``lower_jackknife`` and ``upper_jackknife`` are the jackknife's errors, which means over points
    combine (:func:`~elbogap.inference.weights.jackknife_stderr`). ``dof`` is the degrees of freedom of one
    point's ``lower_stderr`` and ``upper_stderr`` (:func:`~elbogap.inference.weights.group_spread_dof`), for
    its interval (:func:`~elbogap.inference.weights.interval_halfwidth`).
    """

    lower: torch.Tensor
    lower_stderr: torch.Tensor
    upper: torch.Tensor
    upper_stderr: torch.Tensor
    lower_jackknife: torch.Tensor
    upper_jackknife: torch.Tensor
    dof: float = math.inf

    @property
    def width(self) -> float:
        """Mean of ``upper - lower`` over points, in nats."""
        return float((self.upper - self.lower).double().mean())


def bdmc(model, x: torch.Tensor, z: torch.Tensor, settings: AISSettings | None = None,
         progress: bool | Progress = False) -> BDMCResult:
    """Forward and reverse AIS on simulated pairs ``(x, z)``, with the same frozen step sizes.

    ``z`` is one exact posterior draw per point, ``(batch, latent_dim)``, from which every reverse
    chain starts, or one per chain, ``(chains, batch, latent_dim)``, which makes the reverse
    chains independent and gives the upper bound a per-point standard error. The step sizes are
    tuned in a pilot run of forward AIS (:func:`~elbogap.inference.ais.tune_step_sizes`) and
    shared by both directions, so the sandwich measures the reported AIS settings. ``progress``
    counts the transitions.
    """
    settings = settings or AISSettings()
    chunk = point_chunk(settings, x.shape[1])
    starts = range(0, len(x), chunk)
    transitions = len(starts) * (pilot_steps(settings) + 2 * settings.steps)
    with as_progress(progress).bar(f"BDMC on {len(x)} points", transitions, unit="transition") as bar:
        parts = [_bdmc_chunk(model, x[i:i + chunk], z[..., i:i + chunk, :], settings, bar) for i in starts]
    return BDMCResult(*(torch.cat([getattr(p, key) for p in parts])
                        for key in ("lower", "lower_stderr", "upper", "upper_stderr", "lower_jackknife",
                                    "upper_jackknife")), dof=group_spread_dof(settings.chains))


def _bdmc_chunk(model, x, z, settings, bar=None) -> BDMCResult:
    path = AnnealingPath(PointsTarget(model, x))
    step_sizes = tune_step_sizes(path, settings, bar=bar)
    betas = sigmoid_schedule(settings.steps, dtype=x.dtype)
    forward, _, _ = anneal(path, path.start(settings.chains), betas, step_sizes, settings.leapfrog_steps,
                           bar=bar)
    independent = z.dim() == 3
    start = z.clone() if independent else z.expand(settings.chains, *z.shape).clone()
    backward, _, _ = anneal(path, start, betas, step_sizes, settings.leapfrog_steps, reverse=True, bar=bar)
    # reverse weights estimate 1 / p(x) without bias: minus their log-mean is a stochastic upper bound
    nan = torch.full(x.shape[:1], math.nan)
    upper_stderr = log_mean_exp_stderr(backward.log_w) if independent else nan
    upper_jackknife = jackknife_stderr(backward.log_w) if independent else nan
    return BDMCResult(log_mean_exp(forward.log_w), log_mean_exp_stderr(forward.log_w).to(x.dtype),
                      -log_mean_exp(backward.log_w), upper_stderr.to(x.dtype),
                      jackknife_stderr(forward.log_w).to(x.dtype), upper_jackknife.to(x.dtype))


def exact_draws(model, x: torch.Tensor, z: torch.Tensor, chains: int) -> torch.Tensor:
    """One exact posterior draw per reverse chain where the model has a closed-form posterior, else ``z`` itself."""
    if not getattr(model, "has_exact_posterior", False):
        return z
    with torch.no_grad():
        draws = model.posterior(x).sample((chains,))
    return torch.cat([z[None], draws[1:]]).to(z.dtype)


def summarize_sandwich(lower: torch.Tensor, lower_stderr: torch.Tensor, upper: torch.Tensor,
                       upper_stderr: torch.Tensor) -> dict:
    r"""Means of per-point (or per-data-set) bounds, with standard errors, the width and its reading.

    The simulated points are independent draws from the model, so the mean width
    :math:`\bar W = \frac1N \sum_n (U_n - L_n)` estimates the expected width on data like the
    model's, with standard error :math:`\mathrm{sd}(W_n)/\sqrt N` from the spread across points:
    honest whatever the tails of the weights, since each point's bounds are independent of every
    other's. ``lower_stderr`` combines the per-point errors of forward AIS (points held fixed;
    :func:`bdmc`'s ``lower_jackknife``, the error a sum needs). ``upper_stderr`` does the same
    where every reverse chain had its own exact draw; otherwise
    :math:`\sqrt{\mathrm{sd}(W_n)^2/N - s_L^2}`, conservative by the spread of the expected width
    across points. One point gives no spread: NaN, with a ``note``.
    """
    count = len(lower)
    lower, upper = lower.double(), upper.double()
    widths = upper - lower
    summary = {"lower": float(lower.mean()), "upper": float(upper.mean()), "width": float(widths.mean())}
    summary["lower_stderr"] = float(lower_stderr.double().pow(2).sum().sqrt() / count)
    summary["width_stderr"] = float(widths.std() / math.sqrt(count)) if count > 1 else math.nan
    if bool(upper_stderr.isnan().any()):
        summary["upper_stderr"] = math.sqrt(max(summary["width_stderr"] ** 2 - summary["lower_stderr"] ** 2, 0.0))
    else:
        summary["upper_stderr"] = float(upper_stderr.double().pow(2).sum().sqrt() / count)
    if count < 2:
        summary["note"] = ("one simulated point (or data set) gives no spread to estimate the width's standard error "
                           "from: simulate at least 2 (--bdmc 2), 10 or more for a usable error bar")
        if math.isnan(summary["upper_stderr"]) or bool(upper_stderr.isnan().any()):
            summary["upper_stderr"] = math.nan
    summary["reading"] = read_sandwich(summary["width"], summary["width_stderr"])
    return summary


def sandwich(model, example_x: torch.Tensor, num_points: int, settings: AISSettings | None = None,
             progress: bool | Progress = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """Simulate ``num_points`` pairs from ``model`` and sandwich their log p(x) with :func:`bdmc`.

    Returns a summary (``points``, and from :func:`summarize_sandwich` ``lower``, ``upper``,
    ``width`` and their standard errors, ``reading``; ``settings``, ``seconds``) and per-point
    arrays ``x``, ``lower``, ``upper``. Where the model's posterior is a closed form, each reverse
    chain starts from its own exact draw (:func:`exact_draws`). The bounds' errors combine the points'
    jackknife errors, or for one point are that point's own (``BDMCResult.lower_stderr``, ``upper_stderr``).
    """
    settings = settings or AISSettings(init="prior")
    if settings.init != "prior":
        settings = AISSettings(**{**settings.to_dict(), "init": "prior"})  # the sandwich anneals from the prior
    started = time.perf_counter()
    x, z = simulate(model, example_x, num_points)
    result = bdmc(model, x, exact_draws(model, x, z, settings.chains), settings, progress)
    lower_errors = errors_a_mean_combines(result.lower_stderr, result.lower_jackknife)
    upper_errors = errors_a_mean_combines(result.upper_stderr, result.upper_jackknife)
    summary = {"points": num_points, **summarize_sandwich(result.lower, lower_errors, result.upper, upper_errors),
               "settings": settings.to_dict(), "seconds": time.perf_counter() - started}
    return summary, {"x": x, "lower": result.lower, "upper": result.upper}


def read_sandwich(width: float, stderr: float) -> str:
    """What a sandwich of mean ``width`` (upper - lower) with standard error ``stderr`` says about AIS."""
    if math.isnan(stderr):
        return (f"the bounds are {width:.3f} nats apart; with one simulated point there is no standard error to read "
                "that against")
    if width >= -3 * stderr and abs(width) <= 3 * stderr:
        return ("the bounds meet within their standard errors: at these settings AIS is as accurate as its own "
                "noise on data like the model's")
    if width > 0:
        return (f"AIS at these settings may sit up to {width:.3f} nats below log p(x) on data like the model's: "
                "quote it as the error bar, or raise --ais-steps until it is small against the gaps compared")
    return ("the bounds cross by more than their standard errors, which AIS on a normalized model does not do: "
            "check that the model's likelihood is a normalized density in x")
