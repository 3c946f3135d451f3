"""A reported standard error against the spread of its estimate over repeats: the statistics of a calibration check."""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from elbogap.inference.weights import interval_halfwidth


@dataclass(frozen=True)
class Calibration:
    r"""How a reported standard error compares with the spread of its estimate over repeats.

    The error of repeat :math:`r` is :math:`e_r = \hat\theta_r - \theta_r` against the truth
    :math:`\theta_r` where one is known (it may change between repeats, as the points of a sandwich
    do), else :math:`e_r = \hat\theta_r`. ``spread`` is the sd of :math:`e_r`, ``stderr`` the root mean
    square of the reported standard errors, :math:`\sqrt{\overline{s_r^2}}`: the spread errors would have if each
    :math:`s_r` were exact, as :math:`\mathrm{Var}\, e = \mathrm{E}\, s^2` (the mean of :math:`s_r`
    understates it where they differ between repeats, as a fitted reference's do: 1.17 times on 30 repeats of
    the tempered program's evidence, whose s.e. spanned a factor of 8); ``covers_truth`` the share of repeats with
    :math:`|e_r| \le h_r`, ``covers_mean`` with :math:`|e_r - \bar e| \le h_r`, where :math:`h_r` is the
    half-width of elbogap's 95% interval: :math:`t_{0.975,\nu} s_r` for an error with :math:`\nu` degrees of
    freedom (one point's IWAE or AIS error), :math:`1.96 s_r` where none are given. Repeats
    without a finite standard error (NaN or infinite: the estimator declined to give one) count in
    ``declined`` and in neither share, nor in ``stderr``, nor in ``spread`` (the error bar is judged where
    it was given; the long-run mean :math:`\bar e` is over all repeats); a standard error of exactly 0
    counts in ``zero``.
    """

    repeats: int
    bias: float | None
    spread: float
    stderr: float
    zero: int
    declined: int
    covers_truth: float | None
    covers_mean: float

    @property
    def ratio(self) -> float:
        if math.isnan(self.stderr):
            return math.nan
        return self.spread / self.stderr if self.stderr > 0 else math.inf


def calibrate(estimates: Iterable[float], stderrs: Iterable[float],
              truths: Iterable[float] | None = None, dof: float | None = None) -> Calibration:
    """The :class:`Calibration` of repeated ``estimates`` with reported ``stderrs`` (of ``dof`` degrees of freedom,
    normal where None) against ``truths``."""
    estimates = torch.as_tensor(list(estimates), dtype=torch.float64)
    stderrs = torch.as_tensor(list(stderrs), dtype=torch.float64)
    errors = estimates - torch.as_tensor(list(truths), dtype=torch.float64) if truths is not None else estimates
    given = stderrs.isfinite()
    halfwidths = interval_halfwidth(stderrs, dof)

    def covered(centre):
        inside = (errors - centre).abs() <= halfwidths
        return float(inside[given].double().mean()) if given.any() else math.nan

    return Calibration(
        repeats=len(estimates),
        bias=float(errors.mean()) if truths is not None else None,
        spread=float(errors[given].std() if 1 < int(given.sum()) < len(errors) else errors.std()),
        stderr=float(stderrs[given].pow(2).mean().sqrt()) if given.any() else math.nan,
        zero=int((stderrs == 0).sum()),
        declined=int((~given).sum()),
        covers_truth=covered(0.0) if truths is not None else None,
        covers_mean=covered(errors.mean()),
    )
