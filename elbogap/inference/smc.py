r"""Tempered sequential Monte Carlo from the prior to the posterior, with an adaptive schedule [1, 2].

Particles drawn from the prior :math:`p(z)` move through :math:`f_\beta \propto p(z)\, p(D \mid z)^\beta`.
Each step picks the next :math:`\beta` so that the effective sample size of the incremental weights
:math:`w_i = p(D \mid z_i)^{\beta' - \beta}` is ``ess_fraction`` of the particles (by bisection, no new
evaluations), resamples them (systematic resampling), and moves each by a few HMC transitions that leave
:math:`f_{\beta'}` invariant, in coordinates whitened by the particles' own mean and covariance
(:class:`~elbogap.inference.whitened.WhitenedPath`), with a step size adapted toward ``target_accept``
from one move to the next. The schedule follows the posterior's shape, whatever it is, with no tuning.

:math:`\sum_t \log \frac1N \sum_i w_i^{(t)}` estimates :math:`\log p(D)`, but resampling makes its
error hard to state; elbogap uses SMC to place a Gaussian reference near the posterior (the final
particles' mean and covariance, :func:`~elbogap.inference.whitened.moment_match`), from which
independent AIS chains then estimate the evidence with an error bar (:mod:`elbogap.global_latents.evidence`).
Pyro has no SMC over a joint density (its ``SMCFilter`` filters state-space models).

References:

[1] Sequential Monte Carlo samplers, Pierre Del Moral, Arnaud Doucet, Ajay Jasra, arXiv:cond-mat/0212648
[2] Towards automatic model comparison: an adaptive sequential Monte Carlo approach, Yan Zhou,
    Adam M. Johansen, John A. D. Aston, arXiv:1303.3123
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from elbogap.inference.ais import ChainState, hmc_transition
from elbogap.inference.weights import effective_sample_size, log_mean_exp
from elbogap.inference.whitened import LogParts, WhitenedPath, moment_match


@dataclass(frozen=True)
class SMCSettings:
    """:param int particles: particles :math:`N`.
    :param float ess_fraction: the effective sample size each step keeps, as a share of :math:`N`.
    :param int moves: HMC transitions per temperature; ``final_moves`` at :math:`\\beta = 1`.
    :param int leapfrog_steps: leapfrog steps per transition.
    :param float target_accept: the acceptance rate the step size is steered toward.
    :param int max_temperatures: the most steps of :math:`\\beta` before stopping short of 1 (then ``beta`` < 1).
    """

    particles: int = 256
    ess_fraction: float = 0.5
    moves: int = 3
    final_moves: int = 10
    leapfrog_steps: int = 5
    target_accept: float = 0.65
    max_temperatures: int = 500


class SMCResult(NamedTuple):
    """The final particles ``(N, d)`` at ``beta`` (1 unless stopped short), the SMC estimate of
    :math:`\\log p(D)`, the number of temperatures, the last step size and the mean acceptance of the moves."""

    z: torch.Tensor
    log_evidence: float
    beta: float
    temperatures: int
    step_size: float
    acceptance: float


def next_beta(log_lik: torch.Tensor, beta: float, fraction: float) -> float:
    """The largest :math:`\\beta' \\le 1` whose incremental weights keep ``fraction`` of the particles effective."""
    count = len(log_lik)

    def keeps(candidate: float) -> bool:
        return float(effective_sample_size(((candidate - beta) * log_lik)[:, None])[0]) >= fraction * count

    if keeps(1.0):
        return 1.0
    low, high = beta, 1.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if keeps(middle) else (low, middle)
    return max(low, math.nextafter(beta, 2.0))


def systematic_resample(log_w: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """Indices of ``count`` (default ``len(log_w)``) draws by systematic resampling: one uniform for all, lower
    variance than multinomial."""
    count = len(log_w) if count is None else count
    cumulative = (log_w - log_w.logsumexp(0)).exp().double().cumsum(0)
    positions = (torch.rand((), dtype=torch.float64) + torch.arange(count, dtype=torch.float64)) / count
    return torch.searchsorted(cumulative.clamp(max=1.0), positions).clamp(max=len(log_w) - 1).to(log_w.device)


def tempered_smc(log_parts: LogParts, start: torch.Tensor, settings: SMCSettings | None = None,
                 bar=None) -> SMCResult:
    """Tempered SMC of the target ``log_parts`` from prior draws ``start`` ``(N, d)`` (see the module).

    ``bar``, a tqdm bar, advances by one per temperature.
    """
    settings = settings or SMCSettings()
    z = start
    log_prior, log_lik = log_parts(z)
    beta, log_evidence, temperatures = 0.0, 0.0, 0
    step_size = torch.full((1,), 0.5, dtype=z.dtype, device=z.device)
    accepted = []
    while beta < 1.0 and temperatures < settings.max_temperatures:
        log_lik = log_lik.detach().double().nan_to_num(nan=-math.inf)
        following = next_beta(log_lik, beta, settings.ess_fraction)
        increments = (following - beta) * log_lik
        log_evidence += float(log_mean_exp(increments[:, None])[0])
        z = z[systematic_resample(increments)]
        beta, temperatures = following, temperatures + 1
        z, step_size, rates = _move(log_parts, z, beta, step_size, settings)
        _, log_lik = log_parts(z.detach())
        accepted += rates
        if bar is not None:
            bar.update()
            bar.set_postfix(beta=f"{beta:.3g}", refresh=False)
    return SMCResult(z.detach(), log_evidence, beta, temperatures, float(step_size[0]),
                     sum(accepted) / max(len(accepted), 1))


def _move(log_parts, z, beta, step_size, settings):
    """HMC transitions at ``beta`` in coordinates whitened by the particles; the step size adapted between them."""
    mean, scale_tril = moment_match(z.detach())
    path = WhitenedPath(log_parts, mean, scale_tril, start="prior")
    u = path.to_u(z.detach())[:, None, :]
    values, grads = path.parts(u)
    state = ChainState(u, values, grads, torch.zeros(values.shape[1:], dtype=u.dtype, device=u.device))
    rates = []
    for _ in range(settings.final_moves if beta >= 1.0 else settings.moves):
        state, accept = hmc_transition(path, state, beta, step_size, settings.leapfrog_steps)
        rate = float(accept.double().mean())
        rates.append(rate)
        step_size = step_size * math.exp(0.5 * (rate - settings.target_accept))
    return path.to_z(state.z[:, 0, :]), step_size, rates
