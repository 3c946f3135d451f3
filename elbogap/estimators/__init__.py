r"""Estimators of the evidence that run on any target: one file each, registered by being in this package.

A *target* is a model seen as independent units, each with its latents as one flat vector
(:mod:`elbogap.model.target`): the data points of a model whose latents are per point
(:class:`~elbogap.model.target.PointsTarget`), or the whole data set of a model with global latents
(:class:`~elbogap.model.target.DataSetTarget`, a batch of one). It gives ``start(count)``, draws of the prior
``(count, units, d)``, and ``log_joint(z)``, the log prior and log likelihood of each unit at ``z``
``(count, units)``. An :class:`Estimator` turns a target into
:math:`\log p(x)` per unit with its standard error (a :class:`~elbogap.inference.log_px.LogPxEstimate`).

Some estimators read the guide being judged as well (``needs_guide``): IWAE takes the draws of q that the ELBO
took, AIS may start from q. They get it as :class:`Judged` in their settings, and judge one guide, not the model:
:math:`\log p(D)` of a model with global latents is the same for every guide, so its kind offers only the others
(:func:`without_guide`).

Each module of this package calls :func:`register` when :func:`estimators` first imports it; the per-point kind
offers each as a ``--log-px`` method (:func:`elbogap.inference.log_px.methods`), and the kind with global latents
those that need no guide as the estimator of :math:`\log p(D)`. Adding an estimator is adding a file here
(``prior_is.py`` is the example).
"""

import functools
import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class LogPxEstimate:
    r"""Per-point :math:`\log p(x)` estimates and their standard errors, each of shape ``(batch,)``.

    ``sum_stderr`` is the error a mean over points combines, where it is not ``stderr``
    (importance estimates: the jackknife's, see :func:`~elbogap.inference.weights.jackknife_stderr`).
    ``dof`` is the degrees of freedom of one point's ``stderr`` (infinite where it is exact or from many
    independent draws; :func:`~elbogap.inference.weights.group_spread_dof` for importance estimates), which a
    95% interval needs (:func:`~elbogap.inference.weights.interval_halfwidth`).
    ``info`` says how they were computed: ``samples``, the draws (or grid points) behind each
    point's estimate, and any record the method keeps for the split (AIS: ``ais``, its settings
    and diagnostics). ``bias_bound``, where given, is per point how far the estimate may be off beyond ``stderr``'s
    random part, a bound every point may share: a mean over points adds its mean whole (AIS from the modes:
    :data:`~elbogap.inference.ais.START_BIAS`).
    """

    values: torch.Tensor
    stderr: torch.Tensor
    info: dict = field(default_factory=dict)
    sum_stderr: torch.Tensor | None = None
    dof: float = math.inf
    bias_bound: torch.Tensor | None = None


@dataclass(frozen=True)
class Judged:
    """The guide an estimator that ``needs_guide`` reads: ``guide``, the units' rows ``index`` in its data, and
    ``draws``, the per-unit results of the ``samples`` draws of q already taken on them (``log_px_iwae`` and its
    errors: :func:`~elbogap.inference.evaluation.evaluate`)."""

    guide: Any
    index: torch.Tensor
    draws: dict
    samples: int


@dataclass(frozen=True)
class EstimatorSettings:
    """What a target-generic estimator may read from the configuration.

    :param int samples: draws per unit (``--iw-samples``).
    :param int element_budget: the most tensor elements one chunk of draws may hold.
    :param bool keep_draws: keep the draws and their log-weights in the estimate's ``info`` (``draws``, ``log_w``),
        where they serve as a weighted reference posterior (one unit: a model with global latents).
    :param int grid_points: grid points per axis of a quadrature (``--quadrature-points``).
    :param bool refine: whether a quadrature integrates again, on finer grids, the units whose error is large.
    :param ais: an :class:`~elbogap.inference.ais.AISSettings` (its defaults where None).
    :param progress: show a bar where the estimator is long (a bool or a :class:`~elbogap.progress.Progress`).
    :param judged: the guide judged, for an estimator that ``needs_guide`` (:class:`Judged`).
    """

    samples: int = 1000
    element_budget: int = 2**24
    keep_draws: bool = False
    grid_points: int = 24
    refine: bool = True
    ais: Any = None
    progress: Any = False
    judged: Judged | None = None


@dataclass(frozen=True)
class Estimator:
    r"""An estimator of :math:`\log p(x)` per unit of any target.

    :param str name: the value of ``--log-px`` that selects it.
    :param str description: how the report states it, a template over the split's metrics
        (:meth:`~elbogap.inference.log_px.LogPxMethod.describe`).
    :param estimate: ``(target, settings) -> LogPxEstimate``, per unit.
    :param bool guide_independent: whether its value is the same whichever guide is judged.
    :param applies: ``target -> bool``, whether it can run on a target.
    :param str requirement: what it needs, for the one-line refusal where it does not apply.
    :param bool sampled: whether its kept draws are random (k-hat and the effective sample size describe them), not
        deterministic points with weights (a grid).
    :param bool systematic: whether its errors are deterministic bounds (a grid's), which may share their sign across
        units: a mean over units then errs by up to the mean of their errors, where independent random errors add in
        quadrature (the root of the sum of squares, over the count).
    :param str caveat: what its ± is where that is not a Monte-Carlo standard error, said under every table whose
        log p(x) it gave.
    :param bool needs_guide: whether it reads the guide judged (``settings.judged``).
    :param bool uses_iw_draws: whether it needs ``--iw-samples`` draws of q (its own estimate, or the IWAE it is
        checked against).
    :param str kept_as: the per-unit key and split metric its values are also kept under, beside ``log_px``, where the
        split reports them next to IWAE's.
    :param check: ``(per_point, rows) -> metrics``, diagnostics of its estimate on the rows it covered, once the
        split is evaluated.
    """

    name: str
    description: str
    estimate: Callable
    guide_independent: bool = True
    applies: Callable = lambda target: True
    requirement: str = ""
    sampled: bool = True
    systematic: bool = False
    caveat: str = ""
    needs_guide: bool = False
    uses_iw_draws: bool = False
    kept_as: str | None = None
    check: Callable[[dict, torch.Tensor], dict] | None = None


#: the target-generic estimators by name, filled by this package's modules (read them through :func:`estimators`)
ESTIMATORS: dict[str, Estimator] = {}


def register(estimator: Estimator) -> Estimator:
    """Add ``estimator`` to :data:`ESTIMATORS` (a module of this package calls it once, at import)."""
    if ESTIMATORS.get(estimator.name, estimator) is not estimator:
        raise ValueError(f"two estimators are named {estimator.name!r}; rename one of their files' estimators")
    ESTIMATORS[estimator.name] = estimator
    return estimator


def estimators() -> dict[str, Estimator]:
    """Every estimator of this package by name, its modules imported on the first call."""
    _import_modules()
    return ESTIMATORS


def without_guide() -> dict[str, Estimator]:
    """The estimators that read no guide, by name: the model's own evidence, the same for every guide judged."""
    return {name: estimator for name, estimator in estimators().items() if not estimator.needs_guide}


@functools.cache
def _import_modules() -> None:
    """Import each module of this package once (each registers its estimator): every evaluation asks the registry,
    and listing the folder again each time was work done twice."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
