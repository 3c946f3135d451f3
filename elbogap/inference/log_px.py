r"""Ways to compute :math:`\log p(x)`: exact, by 2-D quadrature, by importance sampling, by AIS.

Each estimator is one registered :class:`LogPxMethod` that says when it applies, whether its
value depends on the guide being judged, and how the report should describe it; evaluation,
the report and the figures ask the registry rather than compare names. The setting
``--log-px`` takes a method's name or ``auto`` (see :func:`plan`). Each estimator returns
per-point estimates and per-point errors of shape ``(batch,)``.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from elbogap.errors import UsageError
from elbogap.inference.log_joint import log_joint


@dataclass(frozen=True)
class LogPxMethod:
    r"""One estimator of :math:`\log p(x)`.

    :param str name: the value of ``--log-px`` that selects it.
    :param bool guide_independent: whether its value is the same whichever guide is judged
        (IWAE's is not: its proposal is the guide's own q).
    :param str description: how the report states it, a template over the split's metrics.
    :param applies: whether it can run on a model.
    :param str requirement: what it needs, for the one-line refusal where it does not apply.
    """

    name: str
    guide_independent: bool
    description: str
    applies: Callable = lambda model: True
    requirement: str = ""

    def describe(self, metrics: dict) -> str:
        return self.description.format(**metrics)


METHODS: dict[str, LogPxMethod] = {method.name: method for method in (
    LogPxMethod("exact", True, "exact (closed form)",
                lambda model: getattr(model, "has_exact_posterior", False),
                "a model with a closed-form evidence (--model linear)"),
    LogPxMethod("quadrature", True, "2-D quadrature (midpoint rule, two grids of {log_px_samples} points in all)",
                lambda model: model.latent_dim == 2, "a 2-D latent space"),
    LogPxMethod("iwae", False, "importance-weighted estimate with K={log_px_samples} samples from q (a lower bound "
                "in expectation whose bias depends on the guide judged)"),
    LogPxMethod("ais", True, "annealed importance sampling from the {ais[init]}, {ais[chains]} chains x "
                "{ais[steps]} temperatures x {ais[leapfrog_steps]} leapfrog steps (a lower bound in expectation)"),
)}

#: the values ``--log-px`` accepts.
SETTINGS = ("auto", *METHODS)


@dataclass(frozen=True)
class LogPxPlan:
    """Which estimator serves every point of a split, and whether AIS also runs on a subset."""

    method: str
    ais_subset: bool = False


def choose_method(model) -> str:
    """``"exact"`` where the model has a closed form, ``"quadrature"`` for 2-D latents, else ``"iwae"``."""
    return next(name for name in ("exact", "quadrature", "iwae") if METHODS[name].applies(model))


def plan(setting: str | None, model) -> LogPxPlan:
    """What ``--log-px setting`` computes for ``model``.

    ``auto`` (or None) keeps the exact evidence and quadrature where they apply; for any other
    model every point gets the IWAE estimate and a subset of points (the gap points and
    ``--ais-points``) gets guide-independent AIS, from which the KL gap is computed. A named
    method runs on every point, or is refused in one line where it does not apply.
    """
    if setting in (None, "auto"):
        method = choose_method(model)
        return LogPxPlan(method, ais_subset=method == "iwae")
    if setting not in METHODS:
        raise UsageError(f"unknown --log-px {setting!r}; choose one of {', '.join(SETTINGS)}")
    if not METHODS[setting].applies(model):
        raise UsageError(f"--log-px {setting} needs {METHODS[setting].requirement}; "
                         "use --log-px auto, ais or iwae for this model")
    return LogPxPlan(setting)


def exact_log_px(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's closed-form :math:`\\log p(x)`; its error is zero."""
    log_px = model.log_px(x)
    return log_px, torch.zeros_like(log_px)


def _grid(lower: torch.Tensor, upper: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of a ``num_points x num_points`` grid on each box, and each box's cell area.

    ``lower`` and ``upper`` have shape ``(batch, 2)``; the centres have shape
    ``(num_points**2, batch, 2)``.
    """
    steps = (torch.arange(num_points, dtype=lower.dtype, device=lower.device) + 0.5) / num_points
    width = upper - lower
    axis = lower.unsqueeze(0) + steps[:, None, None] * width.unsqueeze(0)  # (n, batch, 2)
    z1 = axis[:, None, :, 0].expand(num_points, num_points, -1)
    z2 = axis[None, :, :, 1].expand(num_points, num_points, -1)
    centres = torch.stack([z1, z2], dim=-1).reshape(num_points * num_points, -1, 2)
    return centres, (width / num_points).prod(-1)


#: tensor elements one chunk of work may touch: tens of MB, so a chunk stays in the CPU cache.
ELEMENT_BUDGET = 2**21


def _log_joint_chunked(model, x, z):
    """:math:`\\log p(x, z)` for ``z`` of shape ``(points, 1 or batch, 2)``, a chunk of points at a time."""
    chunk_size = max(1, ELEMENT_BUDGET // max(x.numel(), 1))  # each grid point touches batch x data_dim
    parts = [sum(log_joint(model, x, z_chunk)) for z_chunk in z.split(chunk_size)]
    return torch.cat(parts)


@torch.inference_mode()
def quadrature_log_px(model, x: torch.Tensor, num_points: int = 32,
                      bound: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\log p(x) = \log \int p(x, z)\,dz` by the midpoint rule on a 2-D grid.

    Two stages: a shared ``num_points``-square grid on :math:`[-b, b]^2` finds, for each point,
    the box holding the posterior (grid cells within :math:`e^{-30}` of the largest joint
    density, padded by a cell); a second ``num_points``-square grid on that box gives the
    estimate. The reported error is the change from halving the second grid's resolution, a
    bound on the discretization error of the finer grid.

    :param int num_points: grid points per axis in each stage.
    :param float bound: half-width :math:`b` of the first, prior-scale grid.
    """
    if model.latent_dim != 2:
        raise ValueError("quadrature needs a 2-D latent space")
    dtype, device = x.dtype, x.device
    batch = x.shape[0]
    lower = torch.full((batch, 2), -bound, dtype=dtype, device=device)
    coarse, _ = _grid(lower, -lower, num_points)
    log_p = _log_joint_chunked(model, x, coarse[:, :1])  # one decoder pass serves every point
    keep = log_p > log_p.max(0).values - 30.0
    cell = 2 * bound / num_points
    inf = torch.tensor(float("inf"), dtype=dtype, device=device)
    lo = torch.where(keep[..., None], coarse, inf).amin(0) - cell
    hi = torch.where(keep[..., None], coarse, -inf).amax(0) + cell
    fine, area = _grid(lo, hi, num_points)
    log_p = _log_joint_chunked(model, x, fine)
    estimate = torch.logsumexp(log_p, 0) + area.log()
    half = log_p.reshape(num_points, num_points, batch)[::2, ::2].reshape(-1, batch)
    coarser = torch.logsumexp(half, 0) + (4 * area).log()
    return estimate, (estimate - coarser).abs()


class ImportanceAccumulator:
    r"""Running sums over importance log-weights :math:`\log w_k = \log p(x, z_k) - \log q(z_k \mid x)`.

    Samples arrive in chunks; the estimate :math:`\log \frac1K \sum_k w_k` and its delta-method
    standard error :math:`\sqrt{(K \sum w^2 / (\sum w)^2 - 1) / K}` are computed in log space.
    """

    def __init__(self):
        self.count = 0
        self.log_sum = None
        self.log_sum_sq = None

    def add(self, log_w: torch.Tensor) -> None:
        """Add log-weights of shape ``(samples, batch)``."""
        chunk_sum = torch.logsumexp(log_w, 0)
        chunk_sq = torch.logsumexp(2 * log_w, 0)
        if self.log_sum is None:
            self.log_sum, self.log_sum_sq = chunk_sum, chunk_sq
        else:
            self.log_sum = torch.logaddexp(self.log_sum, chunk_sum)
            self.log_sum_sq = torch.logaddexp(self.log_sum_sq, chunk_sq)
        self.count += log_w.shape[0]

    def log_mean(self) -> torch.Tensor:
        return self.log_sum - math.log(self.count)

    def stderr(self) -> torch.Tensor:
        ratio = (self.log_sum_sq - 2 * self.log_sum + math.log(self.count)).exp()
        return ((ratio - 1).clamp_min(0) / self.count).sqrt()

    def effective_sample_size(self) -> torch.Tensor:
        """Kish's :math:`(\\sum w)^2 / \\sum w^2` per point."""
        return (2 * self.log_sum - self.log_sum_sq).exp()
