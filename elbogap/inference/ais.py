r"""Annealed importance sampling (AIS) of :math:`\log p(x)`, batched over data points and chains.

AIS [1] moves chains through distributions :math:`f_t(z) \propto p(z)\, p(x \mid z)^{\beta_t}`,
:math:`0 = \beta_0 < \dots < \beta_T = 1`, from the prior to the posterior. Each chain starts at
:math:`z_0 \sim p(z)` and carries the log-weight

.. math::

    \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1}) \log p(x \mid z_{t-1}),

where :math:`z_t` follows from :math:`z_{t-1}` by an HMC transition that leaves :math:`f_t`
invariant. Then :math:`\mathbb{E}[w] = p(x)`, so :math:`\log \frac1K \sum_k w_k` over :math:`K`
chains is a stochastic lower bound on :math:`\log p(x)` (Jensen) that does not involve the
guide. Run backwards from an exact posterior draw, the same chain gives a stochastic *upper*
bound [2]: the pair is bidirectional Monte Carlo (:mod:`elbogap.inference.bdmc`).

``init="q"`` anneals from the guide's :math:`q(z \mid x)` instead,
:math:`f_t \propto q^{1-\beta_t} (p(z)\, p(x \mid z))^{\beta_t}`: a diagnostic, since the
estimate then depends on the guide again (through its variance, not its expectation).

Step sizes are tuned per data point in a short pilot run toward a target acceptance rate, one
per temperature band (at least five pilot transitions each, :func:`pilot_steps`), then frozen:
the reported run uses fixed transitions, so it is a valid AIS estimator. Pyro has no AIS, and its
HMC kernel cannot run independent chains per data point; the leapfrog integrator is written here
because Pyro's ``velocity_verlet`` sums the potential to a scalar, and per-chain acceptance needs
per-chain energies.

References:

[1] Annealed Importance Sampling, Radford M. Neal, Statistics and Computing 11, 2001,
    arXiv:physics/9803008
[2] Sandwiching the marginal likelihood using bidirectional Monte Carlo, Roger B. Grosse,
    Zoubin Ghahramani, Ryan P. Adams, arXiv:1511.02543
[3] On the Quantitative Analysis of Decoder-Based Generative Models, Yuhuai Wu, Yuri Burda,
    Ruslan Salakhutdinov, Roger Grosse, arXiv:1611.04273
"""

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from elbogap.errors import UsageError
from elbogap.inference.laplace import TAIL_SHARE, laplace_start
from elbogap.inference.log_joint import ELEMENT_BUDGET
from elbogap.inference.stacking import unvalidated
from elbogap.inference.weights import group_spread_dof, jackknife_stderr, log_mean_exp, log_mean_exp_stderr
from elbogap.model.target import PointsTarget, Target
from elbogap.progress import Progress, as_progress

INITS = ("prior", "laplace", "q")


#: how far above log p(x) AIS from the modes may read on a point whose chains drew none of the start's Student-t
#: tails (:data:`~elbogap.inference.laplace.TAIL_SHARE` of its mass): -log(1 - share), added in quadrature to each
#: point's own error (without it, on Gaussian posteriors 43-48% of points lay outside their intervals). A mean over
#: points adds it whole (``AISResult.bias_bound``): a bound every point may share does not shrink with their count
#: (without it, split means read 3.6e-5 to 6.2e-5 nats high at 2.7 to 11.7 of their error in benchmarks/tail_share.py,
#: and 4e-5 to 5e-5 at 4 to 9 on a tester's linear model)
START_BIAS = -math.log1p(-TAIL_SHARE)


@dataclass(frozen=True)
class AISSettings:
    """How an AIS run is set up; the defaults are those of ``elbogap --log-px ais``, except ``init``: the command's
    default is ``"laplace"`` (as is :func:`elbogap.evaluate`'s), this class's stays ``"prior"`` (the calibration
    benchmarks' rows were measured so).

    :param int steps: intermediate distributions :math:`T` (transitions per chain).
    :param int chains: independent chains :math:`K` per data point.
    :param int leapfrog_steps: leapfrog steps per HMC transition.
    :param str init: ``"prior"``, ``"laplace"`` (Gaussians at each point's posterior modes,
        :func:`~elbogap.inference.laplace.laplace_start`; both guide-independent) or ``"q"`` (from the guide, a
        diagnostic).
    :param float target_accept: acceptance rate the pilot run tunes step sizes toward.
    :param int bands: temperature bands with a step size each.
    :param float pilot_fraction: the pilot run's transitions, as a share of ``steps``.
    :param int pilot_per_band: the pilot run's fewest transitions per band (:func:`pilot_steps`).
    """

    steps: int = 500
    chains: int = 16
    leapfrog_steps: int = 10
    init: str = "prior"
    target_accept: float = 0.65
    bands: int = 10
    pilot_fraction: float = 0.25
    pilot_per_band: int = 5

    @property
    def band_count(self) -> int:
        """The temperature bands in use: ``bands``, or one per temperature where there are fewer."""
        return min(self.bands, self.steps)

    def gradient_evaluations(self) -> int:
        """Decoder gradient evaluations per data point in the reported run; the pilot run adds
        ``pilot_steps(self) * chains * leapfrog_steps`` (:func:`pilot_steps`)."""
        return self.steps * self.chains * self.leapfrog_steps

    def to_dict(self) -> dict:
        return asdict(self)


def sigmoid_schedule(num_steps: int, radius: float = 4.0, dtype=torch.float64) -> torch.Tensor:
    r"""Inverse temperatures :math:`\beta_0 = 0 < \dots < \beta_T = 1` spaced as a rescaled sigmoid [2].

    :math:`\beta_t \propto \sigma(r (2t/T - 1))`, shifted and scaled to run from 0 to 1: small
    steps near the prior, where :math:`\log p(x \mid z)` changes fastest with :math:`\beta`, and
    near the posterior, where the chains must settle.
    """
    grid = torch.sigmoid(torch.linspace(-radius, radius, num_steps + 1, dtype=dtype))
    return (grid - grid[0]) / (grid[-1] - grid[0])


class AnnealingPath:
    r"""The log densities along the path over a target's units, as fixed parts whose weights depend on :math:`\beta`.

    :math:`\log f_\beta(z) = \sum_c a_c(\beta) \, \ell_c(z)` with parts :math:`\ell` =
    (:math:`\log p(z)`, :math:`\log p(x \mid z)`) and weights :math:`(1, \beta)` from the prior,
    or (:math:`\log q`, :math:`\log p(z)`, :math:`\log p(x \mid z)`) and :math:`(1-\beta, \beta,
    \beta)` from ``q``. Each part's gradient is kept, so one model evaluation serves every
    :math:`\beta`: the weight increment and the next transition's first half-step need none.
    The densities and the prior's draws are the ``target``'s (:mod:`elbogap.model.target`).
    """

    def __init__(self, target: Target, q=None):
        self.target, self.q = target, q

    model = property(lambda self: self.target.model)
    x = property(lambda self: self.target.x)
    dtype = property(lambda self: self.target.dtype)
    device = property(lambda self: self.target.device)
    latent_dim = property(lambda self: self.target.latent_dim)

    @property
    def batch_size(self) -> int:
        """Independent targets annealed side by side (data points; one data set for a joint model)."""
        return self.target.batch_size

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target.log_joint(z)

    def select(self, index: torch.Tensor) -> "AnnealingPath":
        """The path from the prior over the units ``index`` alone."""
        return AnnealingPath(self.target.select(index))

    def start(self, chains: int) -> torch.Tensor:
        """``chains`` draws of the start, :math:`p(z)` or :math:`q(z \\mid x)`: ``(chains, batch, latent_dim)``."""
        if self.q is not None:
            return self.q.expand(torch.Size([chains]) + self.q.batch_shape).sample()
        return self.target.start(chains)

    def weights(self, beta: float) -> torch.Tensor:
        coefficients = [1.0 - beta, beta, beta] if self.q is not None else [1.0, beta]
        return torch.tensor(coefficients, dtype=self.x.dtype, device=self.x.device)

    def parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(parts, chains, batch)`` and gradients ``(parts, chains, batch, latent_dim)`` at ``z``."""
        with torch.inference_mode(False), torch.enable_grad():  # AIS needs gradients wherever it is called from
            z = z.detach().clone().requires_grad_(True)
            log_prior, log_lik = self.log_joint(z)
            values = [log_prior, log_lik] if self.q is None else [self.q.log_prob(z), log_prior, log_lik]
            grads = [torch.autograd.grad(value.sum(), z, retain_graph=i + 1 < len(values))[0]
                     for i, value in enumerate(values)]
        return torch.stack([v.detach() for v in values]), torch.stack(grads)


class ChainState(NamedTuple):
    """Chains at one temperature: positions, the path's parts and their gradients there, log-weights."""

    z: torch.Tensor
    values: torch.Tensor
    grads: torch.Tensor
    log_w: torch.Tensor


def _combine(weights: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(weights, parts, dims=1)


def hmc_transition(path: AnnealingPath, state: ChainState, beta: float, step_size: torch.Tensor,
                   leapfrog_steps: int) -> tuple[ChainState, torch.Tensor]:
    r"""One HMC transition leaving :math:`f_\beta` invariant, accepted or rejected per chain.

    ``step_size`` has shape ``(batch,)``: one per data point, shared by its chains. Returns the
    new state and the acceptance probabilities ``(chains, batch)``.
    """
    weights = path.weights(beta)
    eps = step_size[None, :, None]
    momentum = torch.randn_like(state.z)
    z, values, grads = state.z, state.values, state.grads
    p = momentum + 0.5 * eps * _combine(weights, grads)
    for i in range(leapfrog_steps):
        z = z + eps * p
        values, grads = path.parts(z)
        gradient = _combine(weights, grads)
        p = p + (eps if i + 1 < leapfrog_steps else 0.5 * eps) * gradient
    current = _combine(weights, state.values) - 0.5 * momentum.pow(2).sum(-1)
    proposed = _combine(weights, values) - 0.5 * p.pow(2).sum(-1)
    log_accept = (proposed - current).nan_to_num(nan=-math.inf).clamp(max=0.0)
    accept = torch.rand_like(log_accept).log() < log_accept
    keep = accept[..., None]
    new = ChainState(torch.where(keep, z, state.z), torch.where(accept, values, state.values),
                     torch.where(keep[None], grads, state.grads), state.log_w)
    return new, log_accept.exp()


@dataclass
class AISResult:
    """Per-point estimates and what the run did.

    ``log_px`` and ``stderr`` have shape ``(batch,)``; ``jackknife_stderr`` too, the error a mean
    over points combines (:func:`~elbogap.inference.weights.jackknife_stderr`); ``log_w`` ``(chains, batch)``;
    ``step_sizes`` ``(bands, batch)``; ``acceptance`` ``(bands,)``, the mean acceptance
    probability of the reported run in each temperature band; ``bias_bound`` ``(batch,)``, how far above log p(x)
    each point may read beyond its chains' spread (:data:`START_BIAS` from the modes, else 0), which a mean over
    points adds whole.
    """

    log_px: torch.Tensor
    stderr: torch.Tensor
    log_w: torch.Tensor
    step_sizes: torch.Tensor
    acceptance: torch.Tensor
    jackknife_stderr: torch.Tensor | None = None
    bias_bound: torch.Tensor | None = None

    @property
    def dof(self) -> float:
        """Degrees of freedom of one point's ``stderr`` (:func:`~elbogap.inference.weights.group_spread_dof`)."""
        return group_spread_dof(self.log_w.shape[0])


def _band_of(step: int, num_steps: int, bands: int) -> int:
    return min(bands - 1, (step - 1) * bands // num_steps)


def anneal(path: AnnealingPath, z: torch.Tensor, betas: torch.Tensor, step_sizes: torch.Tensor,
           leapfrog_steps: int, adapt_toward: float | None = None,
           reverse: bool = False, bar=None) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
    r"""Move chains ``z`` along the increasing ``betas``, or down them with ``reverse`` (reverse AIS).

    The log-weight gains :math:`\log f_{\text{next}}(z) - \log f_{\text{current}}(z)` before
    each transition, which then leaves :math:`f_{\text{next}}` invariant. A reverse run uses, at
    each temperature, the step size the forward run uses there. ``step_sizes`` ``(bands, batch)``
    are used as given, or, with ``adapt_toward``
    (a target acceptance rate), adapted after every transition; the pilot run records the
    geometric mean of each band's step sizes. Returns the final state, the (adapted) step sizes
    and the mean acceptance per band. ``bar``, a tqdm bar, advances by one per transition.
    """
    bands = step_sizes.shape[0]
    num_steps = len(betas) - 1
    values, grads = path.parts(z)
    state = ChainState(z, values, grads, torch.zeros(values.shape[1:], dtype=z.dtype, device=z.device))
    log_eps = step_sizes.log().clone()
    band_log_eps = torch.zeros_like(log_eps)
    accept_sum = torch.zeros(bands, dtype=torch.float64)
    band_count = torch.zeros(bands, dtype=torch.float64)
    current = log_eps[0].clone()
    for t in range(1, num_steps + 1):
        # forward: transition t at betas[t]; reverse: at betas[T - t], which the forward run reaches at step T - t
        position = max(1, num_steps - t) if reverse else t
        band = _band_of(position, num_steps, bands)
        if reverse:
            beta_prev, beta = float(betas[num_steps - t + 1]), float(betas[num_steps - t])
        else:
            beta_prev, beta = float(betas[t - 1]), float(betas[t])
        increment = _combine(path.weights(beta) - path.weights(beta_prev), state.values)
        state = state._replace(log_w=state.log_w + increment)
        eps = current.exp() if adapt_toward is not None else log_eps[band].exp()
        state, accept = hmc_transition(path, state, beta, eps, leapfrog_steps)
        accept_sum[band] += float(accept.double().mean())
        band_count[band] += 1
        if bar is not None:
            bar.update()
        if adapt_toward is not None:
            band_log_eps[band] += current
            # a multiplicative step toward the target rate, per data point (mean over its chains)
            current = current + 0.5 * (accept.mean(0) - adapt_toward)
    if adapt_toward is not None:
        log_eps = band_log_eps / band_count.clamp_min(1).to(band_log_eps)[:, None]
    return state, log_eps.exp(), accept_sum / band_count.clamp_min(1)


def pilot_steps(settings: AISSettings) -> int:
    """Transitions of the pilot run that tunes the step sizes: ``pilot_fraction * steps``, and at least
    ``pilot_per_band`` per temperature band.

    Each band's step size is the mean of the adapted ones over its transitions. With one or two (50 temperatures
    and a quarter of them in the pilot, over 10 bands) it is little more than a draw from the adaptation's path: the
    step sizes, and with them each point's AIS bias, change from run to run by more than the chains' spread within a
    run shows, so the error bars cover too little (89% for a 95% interval), and the bias is twice what it is after a
    pilot of five per band (``benchmarks/pilot.py``; BENCHMARKS, "The AIS pilot's length").
    """
    return max(settings.pilot_per_band * settings.band_count, round(settings.pilot_fraction * settings.steps))


def tune_step_sizes(path: AnnealingPath, settings: AISSettings, initial_step: float = 0.5, bar=None) -> torch.Tensor:
    """A pilot run of :func:`pilot_steps` transitions that adapts step sizes; ``(bands, batch)``."""
    batch = path.batch_size
    start = torch.full((settings.band_count, batch), initial_step, dtype=path.dtype, device=path.device)
    betas = sigmoid_schedule(pilot_steps(settings), dtype=path.dtype)
    _, step_sizes, _ = anneal(path, path.start(settings.chains), betas, start,
                              settings.leapfrog_steps, adapt_toward=settings.target_accept, bar=bar)
    return step_sizes


def point_chunk(settings: AISSettings, data_dim: int) -> int:
    """Data points per chunk, so that one chunk's tensors (chains x points x data) stay bounded."""
    return max(1, 4 * ELEMENT_BUDGET // (settings.chains * max(data_dim, 1)))


def ais_log_px(model, x: torch.Tensor, settings: AISSettings | None = None, guide=None,
               index: torch.Tensor | None = None, progress: bool | Progress = False) -> AISResult:
    r""":math:`\log p(x)` per row of ``x`` by forward AIS, a chunk of points at a time.

    Each chunk first tunes its step sizes in a pilot run, then runs ``settings.chains`` chains
    per point with those step sizes frozen. The estimate is :math:`\log \frac1K \sum_k w_k` and
    its error the spread of log-means over groups of independent chains, carried to :math:`K`
    (:func:`~elbogap.inference.weights.log_mean_exp_stderr`; NaN with one chain). ``guide``
    (and ``index``, for a per-datapoint guide) are needed only for ``settings.init == "q"``. ``progress`` shows a bar
    over every transition, with the time left.
    """
    settings = settings or AISSettings()
    if settings.init not in INITS:
        raise ValueError(f"unknown AIS start {settings.init!r}; choose one of {', '.join(INITS)}")
    if settings.init == "q" and guide is None:
        raise ValueError("AIS from q needs the guide")
    if index is None:
        index = torch.arange(len(x), device=x.device)
    if x.is_inference():  # data made under inference_mode cannot be saved for backward
        with torch.inference_mode(False):
            x = x.clone()
    chunk = point_chunk(settings, x.shape[1])
    starts = range(0, len(x), chunk)
    transitions = len(starts) * (pilot_steps(settings) + settings.steps)
    with as_progress(progress).bar(f"AIS on {len(x)} points", transitions, unit="transition") as bar:
        parts = [_ais_chunk(model, x[i:i + chunk], index[i:i + chunk], settings, guide, bar) for i in starts]
    weights = [len(p.log_px) for p in parts]
    acceptance = sum(w * p.acceptance for w, p in zip(weights, parts, strict=True)) / len(x)
    return AISResult(torch.cat([p.log_px for p in parts]), torch.cat([p.stderr for p in parts]),
                     torch.cat([p.log_w for p in parts], 1), torch.cat([p.step_sizes for p in parts], 1), acceptance,
                     torch.cat([p.jackknife_stderr for p in parts]), torch.cat([p.bias_bound for p in parts]))


def _ais_chunk(model, x, index, settings, guide, bar=None) -> AISResult:
    q = laplace_start(PointsTarget(model, x)) if settings.init == "laplace" else None
    if settings.init == "q":
        if not guide.density_anywhere:
            raise UsageError(f"--ais-init q needs a guide whose density can be evaluated at any z, and "
                             f"{type(guide).__name__}'s is known at its own draws only; use --ais-init prior")
        with torch.no_grad():
            q = guide.distribution(x, index)
            try:
                q.log_prob(q.sample().clone())  # a fresh tensor: no flow's cache can answer for it
            except (NotImplementedError, KeyError):  # Pyro's planar flow: a KeyError from its cache
                raise UsageError(f"--ais-init q needs a guide whose density can be evaluated at any z, and "
                                 f"{type(guide).__name__}'s cannot (its flow has no inverse); "
                                 "use --ais-init prior") from None
    path = AnnealingPath(PointsTarget(model, x), q)
    with unvalidated():  # a leapfrog step may diverge far out: q's density there is scored, and the step rejected
        step_sizes = tune_step_sizes(path, settings, bar=bar)
        betas = sigmoid_schedule(settings.steps, dtype=x.dtype)
        state, _, acceptance = anneal(path, path.start(settings.chains), betas, step_sizes,
                                      settings.leapfrog_steps, bar=bar)
    stderr = log_mean_exp_stderr(state.log_w)
    bias = torch.full_like(stderr, START_BIAS if settings.init == "laplace" else 0.0)
    if settings.init == "laplace":  # the start's tails, seldom drawn: a point may read up to START_BIAS high
        stderr = (stderr**2 + bias**2).sqrt()  # each point's own interval; a mean adds the bound whole
    return AISResult(log_mean_exp(state.log_w), stderr.to(state.log_w.dtype), state.log_w, step_sizes, acceptance,
                     jackknife_stderr(state.log_w).to(state.log_w.dtype), bias.to(state.log_w.dtype))
