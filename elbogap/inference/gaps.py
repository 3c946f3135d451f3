r"""Why the gap exists: the approximation gap and the amortization gap [1].

For a guide :math:`q` of family :math:`\mathcal{Q}` and the best member :math:`q^*_x` of that
family for one data point (found by optimizing per-datapoint parameters, model fixed),

.. math::

    \underbrace{\log p(x) - \mathcal{L}[q]}_{\text{KL gap}}
    = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q]}_{\text{amortization gap}}.

References:

[1] Inference Suboptimality in Variational Autoencoders, Chris Cremer, Xuechen Li,
    David Duvenaud, arXiv:1801.03558
"""

import math
from typing import NamedTuple

import torch

from elbogap import streams
from elbogap.device import rng_devices
from elbogap.guides.base import Guide
from elbogap.inference.evaluation import ELBO_ROUNDING, ELBO_TERMS, GAP_ROUNDING, evaluate, rounding, with_rounding
from elbogap.inference.train import TrainResult, frozen, refit_guide
from elbogap.inference.weights import errors_a_mean_combines, mean_error


def optimal_guide(model, guide: Guide, x: torch.Tensor, index: torch.Tensor | None = None, given: dict | None = None,
                  **refit_options) -> Guide | None:
    """The best member of ``guide``'s family for each row of ``x``, with the model held fixed.

    Starts where the family says (:meth:`~elbogap.guides.Guide.optimum_start`, from the guide's
    own fit) and stops when the ELBO stops rising (see
    :func:`~elbogap.inference.train.refit_guide`). The exact posterior and per-point fits are
    their own optimum; None where elbogap cannot search the family.
    """
    if index is None:
        index = torch.arange(len(x), device=x.device)
    star = guide.optimum_start(x, index)
    if star is None or star is guide:
        return star
    if given is not None:  # found already, at once with other seeds' (elbogap.inference.stacked_training)
        return restore_star(star, given)
    with frozen(guide):
        star.fit = refit_guide(model, star, x, **refit_options)  # with whether the refit converged
    return star


def given_star(entry: dict | None, x: torch.Tensor) -> dict | None:
    """A run's saved q* for one split (an entry of its ``q_star.pt``) if it was refit on exactly the points ``x``."""
    if entry is None or entry["x"].shape != x.shape or not torch.equal(entry["x"].to(x.device), x):
        return None
    return entry


def restore_star(star: Guide, entry: dict) -> Guide:
    """``star`` (a family's :meth:`~elbogap.guides.Guide.optimum_start`) set to the q* of ``entry``, with its fit."""
    with torch.no_grad():
        star.load_state_dict(entry["state"])
    star.fit = TrainResult(entry["losses"].tolist(), float(entry["seconds"]), bool(entry["converged"]))
    return star


class KnownLogPx(NamedTuple):
    r"""Per-point :math:`\log p(x)`, the standard errors a mean over them combines (each point's jackknife
    error, or over one point its own: :func:`~elbogap.inference.weights.errors_a_mean_combines`), the method
    that gave them, and whether those errors are systematic (bounds that a mean averages:
    :func:`~elbogap.inference.weights.mean_error`), for all of them or per point (a quadrature's points beside those
    AIS filled in), and each point's bias bound beside its random error, which a mean adds whole (AIS from the
    modes; None: none)."""

    values: torch.Tensor
    stderr: torch.Tensor
    method: str
    systematic: bool | torch.Tensor = False
    bias_bound: torch.Tensor | None = None

    @classmethod
    def of(cls, per_point: dict, method: str, rows: torch.Tensor | None = None) -> "KnownLogPx":
        """The log p(x) of an evaluation's ``per_point`` (at ``rows``), with the errors a mean over them combines."""
        values, own, jackknife, systematic, bias = (
            None if key not in per_point else per_point[key] if rows is None else per_point[key][rows]
            for key in ("log_px", "log_px_stderr", "log_px_jackknife_stderr", "log_px_systematic", "log_px_bias_bound"))
        # over one point its own error, which holds its bias bound already
        return cls(values, errors_a_mean_combines(own, jackknife), method, systematic, bias if len(own) > 1 else None)


def gap_decomposition(model, guide: Guide, x: torch.Tensor, index: torch.Tensor | None = None,
                      refit_options: dict | None = None, log_px: KnownLogPx | None = None,
                      given: dict | None = None, **evaluate_options) -> dict:
    r"""Approximation and amortization gaps on the rows of ``x``, in nats per data point.

    Returns ``gap_points``, ``gap_log_px``, ``gap_elbo`` (of ``guide``), ``elbo_star`` (of
    :math:`q^*`), ``gap_kl`` (= log p(x) - ELBO on these points), ``approx_gap`` = log p(x) -
    elbo_star and ``amort_gap`` = elbo_star - ELBO (so ``approx_gap + amort_gap = gap_kl``), each
    with ``KEY_stderr`` (Monte Carlo, the points held fixed), and ``approx_gap_bound``:
    ``"exact"`` where q* ranges over the whole family, ``"upper"`` where only over the members the
    encoder's features reach (flows, the mixture: see :attr:`~elbogap.guides.Guide.exact_optimum`).
    ``guide`` must have parameters for these rows (``index``) if it is not amortized.

    Both ELBOs are estimated from the same random draws, so the noise of their difference (the
    amortization gap) largely cancels; its standard error is that of the mean of the paired
    per-draw differences, which holds whether or not the draws align. ``log_px`` is a
    guide-independent per-point :math:`\log p(x)` of these rows (exact, quadrature or AIS) where
    the caller has one; without it, log p(x) is evaluated here as ``evaluate_options`` say, with
    :math:`q^*` as the proposal where it is importance-weighted. ``refit_options`` go to
    :func:`optimal_guide`, the rest to :func:`~elbogap.inference.evaluate`. ``given``, q* found already for
    these points (an entry of a stacked run's ``q_star.pt``), is taken instead of a refit where its points are
    ``x``.
    """
    if index is None:
        index = torch.arange(len(x), device=x.device)
    seed = int(torch.randint(2**31, ()))
    star = optimal_guide(model, guide, x, index, given_star(given, x), **(refit_options or {}))
    if star is None:
        return {"gap_points": len(x), "gap_split": (
            "not computed: the approximation/amortization split needs the family's best member for each point, "
            "and elbogap cannot search the family of a guide program; the KL gap is reported whole")}
    if log_px is not None:  # the ELBOs alone, from --eval-samples draws: log p(x) is known already
        evaluate_options = {**evaluate_options, "log_px_method": "iwae", "iw_samples": 1}
    with torch.random.fork_rng(devices=rng_devices(x)):  # common random numbers: the two ELBOs share their base draws
        streams.seeded("common_draws", seed)
        amortized = evaluate(model, guide, x, index, keep_draws=True, **evaluate_options)
        streams.seeded("common_draws", seed)
        best = evaluate(model, star, x, index if star is guide else None, keep_draws=True, **evaluate_options)
    if log_px is None:  # q* is the better proposal where log p(x) is importance-weighted
        log_px = KnownLogPx.of(best.per_point, best.metrics["log_px_method"])
    log_px, log_px_stderr, method, systematic, bias_bound = log_px
    elbo, elbo_star = amortized.per_point["elbo"], best.per_point["elbo"]

    def stderr(*tensors):  # independent per-point errors add in quadrature
        return math.sqrt(sum(float(t.pow(2).sum()) for t in tensors)) / len(x)

    def with_log_px(elbo_stderr):  # log p(x)'s errors beside an ELBO's, averaged where they are bounds
        return math.hypot(stderr(elbo_stderr), mean_error(log_px_stderr, systematic, bias_bound))

    def rounded(per_point, gap: bool = False):  # the float rounding of a mean over the points, of an ELBO or a gap
        terms = {**{key: per_point[key] for key in (*ELBO_TERMS, "elbo")}, "log_px": log_px}
        return (rounding(terms, (*ELBO_TERMS, "log_px"), epsilons=GAP_ROUNDING) if gap
                else rounding(terms, ELBO_TERMS, epsilons=ELBO_ROUNDING))

    differences = best.per_point["elbo_draws"] - amortized.per_point["elbo_draws"]  # (points, draws), paired
    paired = differences.std(1) / math.sqrt(differences.shape[1])  # NaN from a single draw
    fit = getattr(star, "fit", None)
    return {
        "gap_points": len(x),
        "q_star_converged": True if fit is None else fit.converged,  # q itself where it is its own optimum
        "gap_log_px_method": method,
        "gap_log_px": float(log_px.double().mean()),
        "gap_elbo": float(elbo.double().mean()),
        "elbo_star": float(elbo_star.double().mean()),
        "gap_kl": float((log_px - elbo).double().mean()),
        "approx_gap": float((log_px - elbo_star).double().mean()),
        "approx_gap_bound": "exact" if guide.exact_optimum else "upper",
        "amort_gap": float((elbo_star - elbo).double().mean()),
        "gap_log_px_stderr": mean_error(log_px_stderr, systematic, bias_bound),
        "gap_elbo_stderr": with_rounding(stderr(amortized.per_point["elbo_stderr"]), rounded(amortized.per_point)),
        "elbo_star_stderr": with_rounding(stderr(best.per_point["elbo_stderr"]), rounded(best.per_point)),
        "gap_kl_stderr": with_rounding(with_log_px(amortized.per_point["elbo_stderr"]),
                                       rounded(amortized.per_point, True)),
        "approx_gap_stderr": with_rounding(with_log_px(best.per_point["elbo_stderr"]), rounded(best.per_point, True)),
        "amort_gap_stderr": with_rounding(stderr(paired), math.hypot(rounded(amortized.per_point),
                                                                     rounded(best.per_point))),
    }
