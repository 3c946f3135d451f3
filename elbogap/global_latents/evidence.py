r"""The evidence :math:`\log p(D)` of a model with global latents: AIS from the prior over every latent, and BDMC.

One AIS run anneals chains over the joint vector of all latents, global and per point,
through :math:`f_\beta \propto p(\theta, z)\, p(D \mid \theta, z)^\beta`, with the HMC
transitions, the sigmoid schedule and the pilot-tuned step sizes of
:mod:`elbogap.inference.ais` (one "point": the data set). BDMC simulates data sets
:math:`D^* \sim p(D)` together with the latents that made them (exact posterior draws for
:math:`D^*`) and sandwiches :math:`\log p(D^*)` between forward and reverse AIS.

References:

[1] Annealed Importance Sampling, Radford M. Neal, arXiv:physics/9803008
[2] Sandwiching the marginal likelihood using bidirectional Monte Carlo, Roger B. Grosse,
    Zoubin Ghahramani, Ryan P. Adams, arXiv:1511.02543
"""

import math
import time
from dataclasses import dataclass

import torch

from elbogap.inference.ais import AISSettings, AnnealingPath, anneal, pilot_steps, sigmoid_schedule, tune_step_sizes
from elbogap.inference.bdmc import summarize_sandwich
from elbogap.inference.weights import group_spread_dof, log_mean_exp, log_mean_exp_stderr
from elbogap.progress import Progress, as_progress
from elbogap.threads import intra_op_threads


def one_thread():
    """One intra-op thread: a program's tensors here are small, and on two threads a unary op on an
    expanded (chains, N) tensor was measured 50 times slower (9 ms against 0.19 ms)."""
    return intra_op_threads(1)


class EvidencePath(AnnealingPath):
    """The annealing path over every latent of a model with global latents, for one data set (a batch of one)."""

    def __init__(self, model, data: torch.Tensor):
        super().__init__(model, data)
        self.direct = False

    @property
    def batch_size(self) -> int:
        return 1

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.log_density(z, self.x)

    def start(self, chains: int) -> torch.Tensor:
        return self.model.prior_draws(chains, self.x)[:, None, :].to(self.x.dtype)


@dataclass
class Evidence:
    r""":math:`\log p(D)` by AIS, its standard error over chains, and what the run did.

    ``log_w`` ``(chains,)`` are the chains' log-weights and ``states`` ``(chains, latent_dim)``
    their final positions: weighted by :math:`w_k / \sum w`, they are draws from the posterior
    (a reference where no MCMC ran). ``acceptance`` is the mean acceptance per temperature band.
    """

    log_evidence: float
    stderr: float
    log_w: torch.Tensor
    states: torch.Tensor
    acceptance: torch.Tensor
    step_sizes: torch.Tensor
    seconds: float

    @property
    def dof(self) -> float:
        """Degrees of freedom of ``stderr`` (:func:`~elbogap.inference.weights.group_spread_dof`), for its interval."""
        return group_spread_dof(len(self.log_w))

    def summary(self, settings: AISSettings) -> dict:
        return {"log_evidence": self.log_evidence, "stderr": self.stderr, "dof": self.dof, **settings.to_dict(),
                "acceptance": self.acceptance.tolist(), "seconds": self.seconds,
                "effective_chains": float(self.log_w.double().softmax(0).pow(2).sum().reciprocal())}


def ais_evidence(model, data: torch.Tensor, settings: AISSettings | None = None,
                 progress: bool | Progress = False) -> Evidence:
    r""":math:`\log p(D)` by forward AIS from the prior, :math:`\log \frac1K \sum_k w_k` over ``settings.chains``.

    A pilot run of :func:`~elbogap.inference.ais.pilot_steps` transitions tunes the step sizes, which the
    reported run then uses frozen. ``progress`` shows a bar over the transitions.
    """
    settings = settings or AISSettings()
    started = time.perf_counter()
    path = EvidencePath(model, data)
    with one_thread(), as_progress(progress).bar("AIS on the data set", pilot_steps(settings) + settings.steps,
                                                   unit="transition") as bar:
        step_sizes = tune_step_sizes(path, settings, bar=bar)
        betas = sigmoid_schedule(settings.steps, dtype=data.dtype)
        state, _, acceptance = anneal(path, path.start(settings.chains), betas, step_sizes, settings.leapfrog_steps,
                                      bar=bar)
    log_w = state.log_w.double()
    return Evidence(float(log_mean_exp(log_w)[0]), float(log_mean_exp_stderr(log_w)[0]), log_w[:, 0],
                    state.z[:, 0].detach(), acceptance, step_sizes[:, 0], time.perf_counter() - started)


def bdmc_evidence(model, data: torch.Tensor, count: int, settings: AISSettings | None = None,
                  progress: bool | Progress = False) -> tuple[dict, list[torch.Tensor]]:
    r"""BDMC on ``count`` data sets simulated from the model's prior predictive, shaped like ``data``.

    For each :math:`(D^*, \theta^*, z^*)`, forward AIS from the prior gives a stochastic lower
    bound on :math:`\log p(D^*)` and reverse AIS from :math:`(\theta^*, z^*)` (an exact
    posterior draw) a stochastic upper bound, with the same tuned step sizes. The standard errors
    of the width and the upper bound come from the spread across data sets
    (:func:`~elbogap.inference.bdmc.summarize_sandwich`): the reverse chains of a data set share
    their one exact draw. Returns the
    summary (means over data sets, per data set values, ``width`` and its reading) and the
    simulated data sets.
    """
    settings = settings or AISSettings()
    started = time.perf_counter()
    lower, upper, lower_se, datasets = [], [], [], []
    desc = "BDMC on 1 data set" if count == 1 else f"BDMC on {count} data sets"
    transitions = count * (pilot_steps(settings) + 2 * settings.steps)
    with one_thread(), as_progress(progress).bar(desc, transitions, unit="transition") as bar:
        for _ in range(count):
            simulated, z = model.simulate(data)
            datasets.append(simulated)
            path = EvidencePath(model, simulated)
            step_sizes = tune_step_sizes(path, settings, bar=bar)
            betas = sigmoid_schedule(settings.steps, dtype=data.dtype)
            forward, _, _ = anneal(path, path.start(settings.chains), betas, step_sizes, settings.leapfrog_steps,
                                   bar=bar)
            start = z.to(data.dtype).expand(settings.chains, 1, -1).clone()
            backward, _, _ = anneal(path, start, betas, step_sizes, settings.leapfrog_steps, reverse=True, bar=bar)
            lower.append(float(log_mean_exp(forward.log_w.double())[0]))
            lower_se.append(float(log_mean_exp_stderr(forward.log_w)[0]))
            upper.append(-float(log_mean_exp(backward.log_w.double())[0]))  # the reverse chains share their start

    summary = {"datasets": count, **summarize_sandwich(*(torch.tensor(values, dtype=torch.float64) for values in (
        lower, lower_se, upper, [math.nan] * count))),
               "per_dataset": {"lower": lower, "upper": upper}, "settings": settings.to_dict(),
               "seconds": time.perf_counter() - started}
    return summary, datasets
