r"""Ways to compute :math:`\log p(x)` per point: every estimator of :mod:`elbogap.estimators` (exact,
quadrature for 1-D and 2-D latents, IWAE from q's draws, AIS, importance sampling from the prior, ...), each row of
the data a unit.

Each estimator is one file of :mod:`elbogap.estimators`, seen here as a :class:`LogPxMethod` that says when it
applies, whether its value depends on the guide being judged, and how the report should describe it; evaluation,
the report and the figures ask the registry rather than compare names, and each method
carries its ``estimate``, which returns a :class:`LogPxEstimate`: per-point estimates and
per-point errors of shape ``(batch,)``. The setting ``--log-px`` takes a method's name or
``auto``; :func:`plan` turns it into data, the methods to run and on which rows.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from elbogap.errors import UsageError
from elbogap.estimators import Estimator, EstimatorSettings, Judged, LogPxEstimate, estimators
from elbogap.inference.ais import AISSettings
from elbogap.model.target import PointsTarget

if TYPE_CHECKING:
    from elbogap.progress import Progress


@dataclass(frozen=True)
class LogPxSettings:
    """What the estimators need besides the model, the guide and the points.

    :param int quadrature_points: grid points per axis of :func:`quadrature_log_px`.
    :param ais: an :class:`~elbogap.inference.ais.AISSettings` (its defaults where None).
    :param int q_samples: the draws of q per point already taken, from which IWAE is computed.
    :param progress: show AIS's progress (a bool or a :class:`~elbogap.progress.Progress`).
    :param int iw_samples: the draws per point of an importance estimate that draws its own (``--iw-samples``).
    :param bool refine_quadrature: whether the quadrature integrates again on finer grids the points whose error is
        large (:data:`~elbogap.estimators.quadrature.REFINE_ABOVE`); off for the cheap curve during training.
    """

    quadrature_points: int = 32
    ais: "AISSettings | None" = None
    q_samples: int = 0
    progress: "bool | Progress" = False
    iw_samples: int = 1000
    refine_quadrature: bool = True


def per_point_target(model, x: torch.Tensor | None = None) -> PointsTarget:
    """The points ``x`` of a per-point model as a target of :mod:`elbogap.estimators` (each row a unit; without
    ``x``, enough to ask an estimator whether it applies)."""
    return PointsTarget(model, x)


def exact_log_px(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's closed-form :math:`\\log p(x)` and its error, zero (:mod:`elbogap.estimators.exact`)."""
    estimate = estimators()["exact"].estimate(per_point_target(model, x), EstimatorSettings())
    return estimate.values, estimate.stderr


def quadrature_log_px(model, x: torch.Tensor, num_points: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\log p(x)` of a model with a 1-D or 2-D :math:`z` by the zoomed midpoint rule on ``num_points`` per
    axis, and its discretization error (:mod:`elbogap.estimators.quadrature`)."""
    estimator, target = estimators()["quadrature"], per_point_target(model, x)
    if not estimator.applies(target):
        raise ValueError(f"quadrature needs {estimator.requirement}")
    estimate = estimator.estimate(target, EstimatorSettings(grid_points=num_points))
    return estimate.values, estimate.stderr


#: how the report names each start of AIS (``--ais-init``)
START_WORDS = {"prior": "prior", "laplace": "Laplace approximations at each point's posterior modes",
               "q": "guide's q(z|x)"}


@dataclass(frozen=True)
class LogPxMethod:
    r"""An estimator of :mod:`elbogap.estimators` as a ``--log-px`` method: each row of the data a unit.

    Its fields (``name``, ``guide_independent``, ``description``, ``requirement``, ``uses_iw_draws``, ``kept_as``,
    ``check``, ``systematic``, ``caveat``) are the estimator's, read through; what it adds is the per-point call.
    """

    estimator: Estimator

    def __getattr__(self, name: str):
        if name == "estimator":  # not set yet (a copy being built): no field to read through
            raise AttributeError(name)
        return getattr(self.estimator, name)

    def applies(self, model) -> bool:
        """Whether it can run on the points of ``model``."""
        return self.estimator.applies(per_point_target(model))

    def estimate(self, model, guide, x, index, settings: LogPxSettings, from_q: dict) -> LogPxEstimate:
        """Its estimate on the rows ``x`` (``index`` their rows in the guide's data), with ``from_q``, the per-point
        results of the draws of q on these rows: an estimator that needs the guide judged gets it with them
        (:class:`~elbogap.estimators.Judged`)."""
        judged = Judged(guide, index, from_q, settings.q_samples) if self.estimator.needs_guide else None
        return self.estimator.estimate(per_point_target(model, x), EstimatorSettings(
            samples=settings.iw_samples, grid_points=settings.quadrature_points, refine=settings.refine_quadrature,
            ais=settings.ais, progress=settings.progress, judged=judged))

    def describe(self, metrics: dict) -> str:
        if "ais" in metrics:  # AIS's start in words, from the record's init
            metrics = {**metrics, "ais": {**metrics["ais"], "start": START_WORDS[metrics["ais"]["init"]]}}
        return self.description.format(**metrics)


def methods() -> dict[str, LogPxMethod]:
    """Every estimator of :mod:`elbogap.estimators` by name: the exact, quadrature and IWAE first, in the order
    :func:`choose_method` prefers them."""
    registered = {name: LogPxMethod(estimator) for name, estimator in estimators().items()}
    return {**{name: registered[name] for name in PREFERRED}, **registered}


def settings() -> tuple[str, ...]:
    """The values ``--log-px`` accepts."""
    return ("auto", *methods())


@dataclass(frozen=True)
class PlanStep:
    """One estimator and the rows it runs on: ``"all"`` of a split, the ``"subset"`` chosen for AIS, or the rows the
    steps before left ``"unsure"`` (a value with no error bar), which it fills in."""

    method: LogPxMethod
    rows: str = "all"


@dataclass(frozen=True)
class LogPxPlan:
    r"""The estimators of a split's :math:`\log p(x)`, run in order.

    Each step's estimate becomes ``log_px`` on its rows (NaN on the others, which the split's
    averages leave out), so the last step that runs is the one reported.
    """

    steps: tuple[PlanStep, ...]

    @property
    def uses_iw_draws(self) -> bool:
        """Whether a step needs ``--iw-samples`` draws of q; one that fills in the rare unsure rows takes the draws
        the ELBO takes (its check against IWAE holds with any number)."""
        return any(step.method.uses_iw_draws for step in self.steps if step.rows != "unsure")


#: what ``--log-px auto`` runs on every point, the first that applies
PREFERRED = ("exact", "quadrature", "iwae")


def choose_method(model) -> str:
    """``"exact"`` where the model has a closed form, ``"quadrature"`` for 1-D and 2-D latents, else ``"iwae"``."""
    known = methods()
    return next(name for name in PREFERRED if known[name].applies(model))


def plan(setting: str | None, model) -> LogPxPlan:
    """What ``--log-px setting`` computes for ``model``.

    ``auto`` (or None) keeps the exact evidence and quadrature where they apply, and AIS on the points it leaves
    without an error bar (a quadrature that did not settle); for any other
    model every point gets the IWAE estimate and a subset of points (the gap points and
    ``--ais-points``) gets guide-independent AIS, from which the KL gap is computed. A named
    method runs on every point, or is refused in one line where it does not apply.
    """
    if setting in (None, "auto"):
        method = methods()[choose_method(model)]
        if method.guide_independent:
            return LogPxPlan((PlanStep(method), PlanStep(methods()["ais"], "unsure")))
        return LogPxPlan((PlanStep(method), PlanStep(methods()["ais"], "subset")))
    known = methods()
    if setting not in known:
        raise UsageError(f"unknown --log-px {setting!r}; choose one of {', '.join(settings())}")
    if not known[setting].applies(model):
        raise UsageError(f"--log-px {setting} needs {known[setting].requirement}; "
                         "use --log-px auto, ais or iwae for this model")
    return LogPxPlan((PlanStep(known[setting]),))
