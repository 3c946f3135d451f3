r"""Whether a fit converged, judged by a stated rule, and a schedule that trains until it has.

Two rules, one per way of training:

- **A fixed number of steps** (``--schedule fixed``, the default for models whose latents are per data point):
  the ELBO's gain over the last ``fraction`` of the steps. Where the kind of model scores its ELBO's terms on
  fixed draws (a VAE: 1,024 training rows, 4 draws each), the run scores them at the window's first and last
  steps, and the gain is the mean of the rows' differences, its standard error from their spread (common random
  numbers: the two scorings differ by what the parameters changed). Otherwise the per-step ELBOs of the window are
  averaged in ``blocks`` consecutive blocks, a least-squares line is fitted to the block means, and the gain is
  the line's over the window, its standard error from the blocks' residual spread (``blocks - 2`` degrees of
  freedom); the minibatches' noise makes that error ten times the default tolerance on a VAE. The fit counts as
  converged where the gain is shown below ``tolerance``, :math:`\text{gain} + t_{0.975}\,\mathrm{se} \le
  \text{tolerance}`; as still rising where it is shown above it, :math:`\text{gain} - t_{0.975}\,\mathrm{se} >
  \text{tolerance}`; and as not judged (``converged`` None, with the reason) where the interval holds the tolerance:
  the rule cannot tell. It sees a fit still rising when training stopped; it cannot see what a larger learning rate
  would have reached.
- **Until converged** (``--schedule converge``, the default for models with global latents): Adam at a
  constant learning rate, checked every ``window`` steps by the ELBO, on a fixed set of draws (common random
  numbers, so that two checks differ by what the parameters changed, not by the draws), of the average of the
  window's iterates (Polyak averaging: a check reads where the parameters are, not their jitter). The ELBO is
  still rising at this rate while the line through the last half of the rate's checks (at least ``2 patience``)
  rises significantly (beyond 2 standard errors from the checks' scatter about the line) and would gain more than
  ``plateau * tolerance`` if it went on as long again as training has run so far (a slow drift counts). Once it
  is not, the ELBO has reached the level this rate allows, the mean of the last ``patience`` checks, and the rate
  drops by ``factor``. A drop that changes that level by less than ``tolerance``, with the level at the smaller
  rate known within ``tolerance`` (the standard error of its checks' mean), shows that the jitter and the slow
  drift at the larger rate cost less than the tolerance, and at the smaller rate less still: the fit has
  converged, training stops, and the parameters are the last window's average. (Checks that scatter by more
  than the tolerance cannot show that: the rate drops again.) A step whose loss or parameters
  are not finite, or a stage whose ELBO falls, returns to the best check's state at ``factor`` times the rate (a
  learning rate found by backing off, at most ``max_backoffs`` times). A fit started from another fit (a warm
  start, ``keep_start``) scores its start, which is then the first level to beat: a first stage that settles
  below it returns there, so the fit ends at the better of its start and where it went (and, as any fit, is
  called converged only once a drop of the rate changes its level by less than the tolerance). Training stops
  unconverged at the step cap, or after ``max_drops`` drops that each still gained. The plateau-and-drop idea is
  Pyro's ``ReduceLROnPlateau``; the stopping test on the level reached at successive rates and the averaged
  iterates follow Welandawe et al. [1], simplified.

References:

[1] A Framework for Improving the Reliability of Black-box Variational Inference (first titled Robust, Automated,
    and Accurate Black-box Variational Inference), Manushi Welandawe, Michael Riis Andersen, Aki Vehtari,
    Jonathan H. Huggins, arXiv:2203.15945
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy import stats

SCHEDULES = ("fixed", "converge")


@dataclass(frozen=True)
class ConvergenceSettings:
    """The rules' constants (see the module); ``tolerance`` is in the units of the ELBO the rule reads.

    :param float tolerance: the ELBO (nats) a fit may still gain and count as converged.
    :param float plateau: the share of ``tolerance`` a rise projected as long again as training has run must exceed
        for the schedule to stay at its learning rate.
    :param float fraction: the share of a fixed run's last steps whose trend is read.
    :param int blocks: block means that trend is fitted to.
    :param int window: steps between two checks of the schedule.
    :param int patience: checks compared at a time.
    :param float factor: what a drop multiplies the learning rate by.
    :param int max_drops: the most drops before the schedule stops.
    :param int max_backoffs: the most returns to the best check's state, each at ``factor`` times the learning rate
        that failed, after a step whose loss or parameters are not finite or a stage whose ELBO fell.
    """

    tolerance: float = 0.02
    plateau: float = 2.5
    fraction: float = 0.1
    blocks: int = 10
    window: int = 50
    patience: int = 3
    factor: float = 0.1
    max_drops: int = 4
    max_backoffs: int = 4


def trend(elbos: list[float], blocks: int = 10) -> tuple[float, float, int]:
    r"""The ELBO a line fitted to ``blocks`` block means of ``elbos`` gains over them, its standard error, and the
    degrees of freedom of that error (``blocks - 2``). Blocks of consecutive steps average out the steps'
    correlation, so their residuals are close to independent."""
    size = len(elbos) // blocks
    if size < 1 or blocks < 3:
        return math.nan, math.nan, 0
    means = torch.tensor(elbos[len(elbos) - size * blocks:], dtype=torch.float64).reshape(blocks, size).mean(1)
    position = torch.arange(blocks, dtype=torch.float64)
    centred = position - position.mean()
    slope = float((centred * (means - means.mean())).sum() / centred.pow(2).sum())
    residuals = means - means.mean() - slope * centred
    slope_stderr = math.sqrt(float(residuals.pow(2).sum()) / (blocks - 2) / float(centred.pow(2).sum()))
    return slope * blocks, slope_stderr * blocks, blocks - 2


def window_steps(steps: int, settings: ConvergenceSettings) -> int:
    """The last steps of a fixed run the trend rule reads: the share ``fraction`` of them, at least 5 per block, and
    at most all but the first: its first scoring on fixed draws follows a step (at 50 steps a window of all 50 was
    never scored, and the minibatch line called a fit 4 times short of its gap converged)."""
    return min(max(settings.blocks * 5, round(settings.fraction * steps)), max(steps - 1, 1))


def paired_gain(before: torch.Tensor, after: torch.Tensor) -> dict:
    r"""What the ELBO gained between two scorings of the same terms on the same draws (common random numbers):
    the mean of the terms' differences, its standard error :math:`\mathrm{sd}/\sqrt{n}` and the degrees of freedom
    :math:`n - 1` of that error (:math:`n` terms, e.g. training rows)."""
    difference = (after - before).double()
    count = len(difference)
    stderr = float(difference.std() / math.sqrt(count)) if count > 1 else math.nan
    return {"gain": float(difference.mean()), "gain_stderr": stderr, "dof": count - 1, "terms": count}


def fixed_verdict(losses: list[float], settings: ConvergenceSettings, scale: float = 1.0,
                  paired: dict | None = None) -> dict:
    """The trend rule on a fixed run: the ELBO's gain over the last :func:`window_steps` steps against the tolerance.

    Where the run scored its ELBO terms on fixed draws at the window's first and last steps (``paired``, from
    :func:`paired_gain`), the gain is theirs: two scorings on common random numbers differ by what the parameters
    changed, to a few thousandths of a nat per point. Otherwise the gain is the line through the window's minibatch
    losses (per-step negative ELBOs, per data point; ``scale`` turns them into the units of ``settings.tolerance``,
    e.g. the number of data points for a whole data set's ELBO), whose minibatch noise can hide a gain ten times the
    tolerance (``read_from`` says which)."""
    window = window_steps(len(losses), settings)
    record = {"rule": "trend", "tolerance": settings.tolerance, "window": min(window, len(losses))}
    if len(losses) < settings.blocks * 5:
        return {**record, "converged": None, "reason": f"too few steps ({len(losses)}) to read a trend from"}
    if paired is not None:
        gain, stderr, dof = scale * paired["gain"], scale * paired["gain_stderr"], paired["dof"]
        record.update(read_from="fixed_draws", terms=paired["terms"])
        where = f", on fixed draws of {paired['terms']} training rows"
    else:
        gain, stderr, dof = trend([-scale * loss for loss in losses[-window:]], settings.blocks)
        record["read_from"] = "minibatches"
        where = ", from the minibatch ELBOs"
    margin = float(stats.t.ppf(0.975, dof)) * stderr
    converged = True if gain + margin <= settings.tolerance else False if gain - margin > settings.tolerance else None
    record.update(converged=converged, gain=gain, gain_stderr=stderr)
    if converged is False:
        record["reason"] = (f"the ELBO was still rising when training stopped: {gain:.3g} nats over the last "
                            f"{window} steps (s.e. {stderr:.2g}{where}), above the tolerance {settings.tolerance:g}")
    elif not math.isfinite(stderr):
        record["reason"] = (f"the trend rule cannot tell whether the ELBO was still rising: it gained {gain:.3g} nats "
                            f"over the last {window} steps{where}, with no standard error to judge that by")
    elif converged is None:
        record["reason"] = (f"the trend rule cannot tell whether the ELBO was still rising: it gained {gain:.3g} nats "
                            f"over the last {window} steps (s.e. {stderr:.2g}{where}), and the tolerance "
                            f"{settings.tolerance:g} lies within t(0.975) = {margin / stderr:.2f} standard errors of "
                            "that")
    return record


class ConvergeSchedule:
    """The plateau-and-drop schedule of the module, asked after every step; ``done`` ends training.

    Each check scores the average of the window's iterates (Polyak averaging: the ELBO a check reads moves with the
    parameters, not with their step-to-step jitter). The state of the best check so far is kept: a step whose loss
    or parameters are not finite, or a stage whose ELBO falls (by more than ``max(tolerance, 2 se)``), returns
    there at ``factor`` times the learning rate that failed, at most ``max_backoffs`` times.

    :param elbo: the ELBO now, on fixed draws, in the units of ``settings.tolerance``.
    :param ConvergenceSettings settings: its constants.
    :param bool keep_start: the fit starts from a fit of its own (a warm start): the start is scored and is the first
        level to beat, so a first stage that settles below it (by more than the noise) returns there at a smaller
        rate. Convergence is still judged between the levels of two rates (the start was not reached at one).
    """

    def __init__(self, elbo: Callable[[], float], settings: ConvergenceSettings, keep_start: bool = False):
        self.elbo, self.settings, self.keep_start = elbo, settings, keep_start
        self.start_level: float | None = None  # the start's ELBO, where it is kept
        self.checks: list[list[float]] = []  # [step, elbo, learning rate]
        self.levels: list[float] = []  # the plateau's level at each learning rate so far
        self.stage_start = 1  # index into checks where the current rate began (not the first check: a fit just begun)
        self.done, self.converged, self.reason = False, False, ""
        self.backoffs = 0
        self._sums, self._count = None, 0  # the iterates of the window so far, summed
        self._best: tuple[float, dict] | None = None  # the best check's value and state, to return to

    def start(self, trainer, value: float | None = None) -> None:
        """Keep the state training starts from, to return to if the first window diverges; where the start is kept
        (``keep_start``), score it (``value``: its ELBO, where the caller scored it already)."""
        if self._best is not None:
            return
        self._best = (-math.inf, trainer.snapshot())
        if self.keep_start and self.start_level is None and not self.checks:
            self.start_level = float(self.elbo() if value is None else value)
            self._best = (self.start_level, self._best[1])

    def best_state(self) -> dict | None:
        """Where a kept start is kept: the best check's value and state (tensors), which a checkpoint stores beside
        :meth:`state_dict` (JSON) so that a resumed fit can still return there; None for a fit without one."""
        if not self.keep_start or self._best is None:
            return None
        return {"value": self._best[0], "state": self._best[1]}

    def load_best(self, saved: dict | None) -> None:
        if saved is not None:
            self._best = (float(saved["value"]), saved["state"])

    def back_off(self, trainer, why: str = "a step's loss or parameters were not finite") -> bool:
        """Return to the best check's state at ``factor`` times the current learning rate; False (and ``done``,
        unconverged) after ``max_backoffs`` returns, where a fit that keeps its start still ends at the best state."""
        if self._best is None or self.backoffs >= self.settings.max_backoffs:
            self.done, self.reason = True, f"{why} again after {self.backoffs} returns to a smaller learning rate"
            if self.keep_start and self._best is not None:  # the better of its start and where it went
                trainer.restore(self._best[1])
            return False
        failed = trainer.svi.lrs[0] if trainer.svi.lrs else 0.0
        trainer.restore(self._best[1])
        restored = trainer.svi.lrs[0] if trainer.svi.lrs else 0.0
        if restored > 0:
            trainer.svi.scale_lr(self.settings.factor * failed / restored)
        self.backoffs += 1
        self.checks.append([trainer.step_count, math.nan, self.settings.factor * failed])
        self.stage_start, self._sums = len(self.checks), None  # a new stage at the smaller rate
        return True

    def after_step(self, trainer) -> None:
        if self.accumulate(trainer):
            self.check(trainer)

    def accumulate(self, trainer) -> bool:
        """Add the step's parameters to the window's sum; whether a check is due now."""
        if self.done:
            return False
        with torch.no_grad():
            if self._sums is None:
                self._sums, self._count = [p.detach().clone() for p in trainer.svi.params], 1
            else:
                for total, p in zip(self._sums, trainer.svi.params, strict=True):
                    total.add_(p.detach())
                self._count += 1
        return trainer.step_count % self.settings.window == 0

    def averaged(self) -> list[torch.Tensor]:
        """The average of the window's iterates, which a check scores."""
        return [total / self._count for total in self._sums]

    def check(self, trainer, value: float | None = None) -> None:
        """Score the window's averaged iterates (``value``: their ELBO, where the caller scored them already), then
        go on, drop the learning rate, back off or stop, as the rule of the module says."""
        params = trainer.svi.params
        lr = trainer.svi.lrs[0] if trainer.svi.lrs else 0.0
        with torch.no_grad():
            current = [p.detach().clone() for p in params]
            for p, average in zip(params, self.averaged(), strict=True):
                p.copy_(average)
        value = float(self.elbo() if value is None else value)
        self._sums = None
        self.checks.append([trainer.step_count, value, lr])
        if math.isfinite(value) and value > self._best[0]:
            self._best = (value, trainer.snapshot())
        action = self._judge(lr, trainer.step_count)
        if action == "drop":
            trainer.svi.scale_lr(self.settings.factor)
        if not self.done:  # training goes on from where the iterates were; a finished fit keeps their average
            with torch.no_grad():
                for p, saved in zip(params, current, strict=True):
                    p.copy_(saved)
        if action == "back off":
            self.back_off(trainer, "the ELBO fell")

    def _judge(self, lr: float, step: int) -> str:
        """Read the checks at this learning rate: ``"drop"`` it, ``"back off"`` (the ELBO fell), or go on (``""``);
        ``done`` where the rule has its answer."""
        stage = [value for _, value, _ in self.checks[self.stage_start:]]
        patience = self.settings.patience
        if stage and not math.isfinite(stage[-1]):
            return "back off"
        if len(stage) < 2 * patience:
            return ""
        # the line through the stage's last half (at least 2 P checks): its rise over P windows, and that rise's
        # standard error from the residuals (the checks' spread about the line, not about their mean, which a steady
        # rise would inflate); a longer stage gives the line the power to see a slow drift
        span = max(2 * patience, len(stage) // 2)
        change, stderr, _ = trend(stage[-span:], blocks=span)
        change, stderr = change * patience / span, stderr * patience / span
        # a rise that goes on as long again as training has run (a slow drift, which a fit crawling toward its
        # optimum along a narrow valley shows) would gain this much more: rising is a significant rise worth that
        ahead = change * step / (patience * self.settings.window)
        if change > 2 * stderr and ahead > self.settings.plateau * self.settings.tolerance:
            return ""  # still rising at this learning rate
        noise = max(self.settings.tolerance, 2 * stderr)
        if change < -noise:
            return "back off"
        last = torch.tensor(stage[-patience:], dtype=torch.float64)
        level = float(last.mean())
        level_stderr = float(last.std() / math.sqrt(patience))  # the level's own precision, from its checks' scatter
        previous = self.levels[-1] if self.levels else self.start_level
        gain = level - previous if previous is not None else math.inf
        if gain < -noise:
            return "back off"  # the smaller rate settled lower than the larger one: the fit is not stable
        self.levels.append(level)
        tolerance = self.settings.tolerance
        if len(self.levels) > 1 and gain < tolerance and level_stderr <= tolerance:  # a kept start is no rate
            self.done, self.converged = True, True
            self.reason = (f"a learning-rate drop to {lr:.2g} changed the ELBO by {gain:.3g}, within the tolerance "
                           f"{tolerance:g}")
            return ""
        if len(self.levels) > self.settings.max_drops:
            self.done = True
            self.reason = (f"after {self.settings.max_drops} learning-rate drops the last still raised the ELBO by "
                           f"{gain:.3g}, above the tolerance {tolerance:g}" if gain >= tolerance else
                           f"after {self.settings.max_drops} learning-rate drops the ELBO's checks still scatter by "
                           f"{level_stderr:.3g} (the s.e. of their level), beyond the tolerance {tolerance:g}: the fit "
                           "has not settled")
            return ""
        self.stage_start = len(self.checks)
        return "drop"

    def verdict(self, steps: int, cap: int) -> dict:
        """The record of the rule: ``converged``, why, and the checks it read."""
        record = {"rule": "plateau", "tolerance": self.settings.tolerance, "converged": self.converged,
                  "drops": max(len(self.levels) - 1, 0), "levels": self.levels, "checks": self.checks,
                  "steps": steps, "backoffs": self.backoffs}
        if len(self.levels) >= 2:
            record["gain"] = self.levels[-1] - self.levels[-2]
        if self.start_level is not None:
            record["start_level"] = self.start_level
            if len(self.levels) == 1:
                record["gain"] = self.levels[0] - self.start_level
        if not self.done:
            record["reason"] = f"stopped at the cap of {cap} steps before the ELBO settled"
        else:
            record["reason"] = self.reason
        return record

    def state_dict(self) -> dict:
        return {"checks": self.checks, "levels": self.levels, "stage_start": self.stage_start, "done": self.done,
                "converged": self.converged, "reason": self.reason, "backoffs": self.backoffs,
                "start_level": self.start_level}

    def load_state_dict(self, state: dict) -> None:
        self.checks, self.levels = [list(c) for c in state["checks"]], list(state["levels"])
        self.stage_start, self.done = int(state["stage_start"]), bool(state["done"])
        self.converged, self.reason = bool(state["converged"]), str(state["reason"])
        self.backoffs = int(state.get("backoffs", 0))
        self.start_level = state.get("start_level")
