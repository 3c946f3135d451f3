"""Stochastic variational inference: fit a model and a guide by maximizing an ELBO."""

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from elbogap import streams
from elbogap.device import rng_state, set_rng_state
from elbogap.errors import UsageError
from elbogap.inference.components import componentwise
from elbogap.inference.convergence import (
    ConvergenceSettings,
    ConvergeSchedule,
    fixed_verdict,
    paired_gain,
    window_steps,
)
from elbogap.inference.objectives import check_gradient
from elbogap.inference.snr import GroupSNR, gradient_snr, parameter_groups
from elbogap.inference.stacking import unvalidated
from elbogap.inference.stl import sticks, stl_guide
from elbogap.inference.svi import FastSVI
from elbogap.progress import Progress, as_progress
from elbogap.sites import broadcasts_draws, latent_sites, repeat_rows


@dataclass
class TrainResult:
    """Per-step training loss (negative ELBO per data point) and wall time of the loop; for a refit, whether it
    stopped by its rule (the ELBO stopped rising after its last learning-rate drop) rather than at its cap."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    converged: bool | None = None


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Hold a module's parameters fixed: no gradients, and hidden from the SVI optimizer; with them the entries of
    Pyro's param store that a user's program registers (its ``param_names``: ``pyro.param`` and ``pyro.module``
    sites), which are no parameters of the module."""
    store = pyro.get_param_store()
    registered = (store[name].unconstrained() for name in getattr(module, "param_names", ()) if name in store)
    held = list({id(param): param for param in (*module.parameters(), *registered)}.values())
    flags = [param.requires_grad for param in held]
    try:
        for param in held:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in zip(held, flags, strict=True):
            param.requires_grad_(flag)


class KLWeight(Messenger):
    r"""Scale the log-densities of the latent sites (``"z"`` for elbogap's models) by ``beta`` in model and guide alike.

    The bound becomes :math:`\mathbb{E}_q \log p(x \mid z) - \beta\,\mathrm{KL}(q(z \mid x) \,\|\, p(z))`:
    KL warm-up [1] raises ``beta`` from 0 to 1. Pyro's ``poutine.scale`` scales every site,
    hence this one-site handler.

    References:

    [1] Ladder Variational Autoencoders, Casper Kaae Sønderby, Tapani Raiko, Lars Maaløe,
        Søren Kaae Sønderby, Ole Winther, arXiv:1602.02282
    """

    def __init__(self, beta: float = 1.0, sites=("z",)):
        super().__init__()
        self.beta, self.sites = beta, frozenset(sites)

    def _process_message(self, msg):
        if msg["name"] in self.sites and self.beta != 1.0:
            msg["scale"] = msg["scale"] * self.beta


def all_finite(params) -> bool:
    """Whether every tensor in ``params`` is finite."""
    return all(bool(torch.isfinite(value).all()) for value in params)


def forget_params(*owners: str) -> None:
    """Drop the param store's entries registered by ``pyro.module(owner, ...)``.

    ``pyro.module`` keeps the first tensor registered under a name: a new guide (or model) under
    the same name would compute with its own tensors while SVI optimized the stale ones. Every
    SVI therefore starts from the modules it is given.
    """
    store = pyro.get_param_store()
    for name in list(store.keys()):
        if name.split("$$$")[0] in owners:
            del store[name]


#: the convergence record's reason where training had nothing to fit
NOTHING_TO_FIT = ("nothing to fit: the guide has no parameters and the model none or held fixed, so it was evaluated "
                  "as it is")


def make_svi(model, guide, x: torch.Tensor, batch_size: int, lr: float = 1e-3, objective: str = "elbo",
             num_particles: int = 1, freeze_model: bool = False, lr_decay: float = 1.0,
             kl_weight: KLWeight | None = None, jit: bool = False, gradient: str = "reparam",
             vectorize: bool | None = None, max_plate_nesting: int = 1, fixed_rows: bool = False) -> FastSVI:
    """SVI over ``model.model`` and ``guide.guide`` with Adam (see :class:`FastSVI`) on minibatches
    ``(x[index], index)`` of ``batch_size`` rows (the shape the loss is compiled for).

    The learning rate is multiplied by ``lr_decay`` before every step, and gradients are clamped
    to ``[-10, 10]`` (Pyro's ClippedAdam). With ``freeze_model`` the model's parameter sites
    are hidden from SVI, so only the guide's parameters are optimized. ``gradient`` is the
    estimator of the loss's gradient: ``"reparam"``, or ``"stl"`` (with ``"elbo"`` or
    ``"meanfield"``) and ``"dreg"`` (with ``"iwae"``), which train the guide's program of
    :func:`~elbogap.inference.stl.stl_guide`; a family that cannot take them is refused here.
    ``fixed_rows``: every step sees the same rows (a refit), so a user's program, which may branch on its data, is
    compiled too (``jit_on_fixed_rows``), unless its code takes a Python value from a tensor while it is traced.
    """
    check_gradient(objective, gradient)
    forget_params("guide") if freeze_model else forget_params("guide", "model")
    model_fn = poutine.block(model.model, hide_types=["param"]) if freeze_model else model.model
    guide_fn = guide.guide if gradient == "reparam" else stl_guide(guide, gradient)
    if kl_weight is not None:
        model_fn, guide_fn = kl_weight(model_fn), kl_weight(guide_fn)
    if getattr(guide, "components", None):  # a mixture: its ELBO summed over components (an unbiased gradient)
        check_components(model, objective)
        model_fn, guide_fn = componentwise(model_fn, guide_fn, guide.components)
        objective, jit, max_plate_nesting = "elbo", False, max_plate_nesting + 1
    example = (x[:batch_size], torch.arange(min(batch_size, len(x)), device=x.device))
    # a class without the flag (a user's) may branch on its data, which a traced graph would freeze; on rows fixed
    # for every step (``fixed_rows``) that is safe, and a trace where its code takes a value from a tensor is dropped
    compiles = getattr(model, "jit_compatible", False)
    strict_trace = not compiles and fixed_rows and getattr(model, "jit_on_fixed_rows", False)
    jit = jit and (compiles or strict_trace) and getattr(guide, "jit_compatible", False)
    if vectorize is None:
        vectorize = broadcasts_draws(model)  # else particles are drawn one after another
    with frozen(model) if freeze_model else contextlib.nullcontext():
        return FastSVI(model_fn, guide_fn, example, {"num_data": len(x)}, lr, lr_decay, objective, num_particles, jit,
                       vectorize, gradient, max_plate_nesting, strict_trace)


def check_components(model, objective: str) -> None:
    """Refuse, in one line, what the mixture's training on the sum over its components cannot do."""
    if objective == "iwae":
        raise UsageError("the mixture guide trains on its ELBO summed over components, which the importance-weighted "
                         "bound does not split into; use --objective elbo (or meanfield) with it")
    if not broadcasts_draws(model):
        raise UsageError(f"the mixture guide draws one z per component at once, and the model "
                         f"{getattr(model, 'spec', type(model).__name__)} does not broadcast over a leading dimension "
                         "of its latents; write the model so it does (see your own models in the README), or use "
                         "another family")


class Trainer:
    r"""SVI over minibatches of one data tensor, with state that can be saved and resumed.

    Every epoch visits the rows of ``x`` in a fresh random order; the order (and, with
    ``dynamic_binarize``, a fresh Bernoulli draw of the data, whose rows are then probabilities)
    comes from the stream ``epoch_order`` of ``(seed, epoch)`` (:mod:`elbogap.streams`), so a
    resumed run sees exactly the batches the uninterrupted one would have. The data plate scales
    each minibatch by ``len(x) / batch_size``; ``losses`` holds the negative ELBO per data point
    of every step.

    :param int kl_warmup_steps: raise the KL weight linearly from 0 to 1 over this many steps.
    :param float lr_decay: factor applied to the learning rate before every step.
    :param bool shuffle: visit the rows in a fresh order every epoch (False: always in their order,
        for a program that reads the rows by position, as a model with global latents may).
    :param bool jit: compile the loss (Pyro's ``JitTrace_ELBO``) once the KL weight is 1; see
        :class:`~elbogap.inference.svi.FastSVI`. Only for programs without data-dependent
        Python control flow, such as elbogap's own models and guides.
    :param str gradient: the gradient estimator, ``"reparam"``, ``"stl"`` or ``"dreg"`` (see :func:`make_svi`).
    :param schedule: a :class:`~elbogap.inference.convergence.ConvergeSchedule` that drops the learning rate and
        ends training once the fit converged (None: ``steps`` steps, as ``lr_decay`` decays the rate).
    :param convergence: the constants of the convergence rule :meth:`convergence` applies.
    :param window_check: ``() -> terms``, the ELBO's terms now on fixed draws (a VAE's: per training row), which
        :meth:`check_window` scores at the first and last steps of the trend rule's window (a fixed run's; None: the
        rule reads the minibatch losses).
    :param float loss_scale: turns the per-point losses into the units of the rule's tolerance.
    :param vectorize: draw the particles at once under a plate (None: where the model says it broadcasts).
    :param int max_plate_nesting: how deep the programs' plates nest (the particle plate goes left of them).
    """

    def __init__(self, model, guide, x: torch.Tensor, batch_size: int = 128, lr: float = 1e-3,
                 objective: str = "elbo", num_particles: int = 1, seed: int = 0,
                 freeze_model: bool = False, lr_decay: float = 1.0, kl_warmup_steps: int = 0,
                 dynamic_binarize: bool = False, jit: bool = True, shuffle: bool = True, gradient: str = "reparam",
                 schedule: ConvergeSchedule | None = None, convergence: ConvergenceSettings | None = None,
                 loss_scale: float = 1.0, vectorize: bool | None = None, max_plate_nesting: int = 1,
                 window_check: Callable[[], torch.Tensor] | None = None):
        if batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
        if lr <= 0:
            raise UsageError(f"--lr must be > 0, got {lr}")
        self.model, self.guide, self.x = model, guide, x
        self.batch_size = min(batch_size, len(x))
        self.seed, self.freeze_model, self.shuffle = seed, freeze_model, shuffle
        self.kl_warmup_steps, self.dynamic_binarize = kl_warmup_steps, dynamic_binarize
        self.kl_weight = KLWeight(sites=latent_sites(model))
        self.svi = make_svi(model, guide, x, self.batch_size, lr, objective, num_particles, freeze_model, lr_decay,
                            self.kl_weight, jit, gradient, vectorize, max_plate_nesting)
        self.step_count, self.epoch, self.position = 0, -1, 0
        self.losses: list[float] = []
        self.seconds = 0.0  # time in SVI steps, over every session of this run
        self._order = self._epoch_x = None
        self._snr_groups: dict[str, list[torch.Tensor]] | None = None
        self.schedule, self.loss_scale = schedule, loss_scale
        self.convergence_settings = convergence or ConvergenceSettings()
        self.window_check = window_check if schedule is None else None
        self.window_start: torch.Tensor | None = None  # the terms at the window's first step
        self.window_gain: dict | None = None  # what they gained by its last (paired_gain)

    def _start_epoch(self, epoch: int) -> None:
        # drawn on the CPU whatever the device, so every device sees the same batches
        generator = streams.generator("epoch_order", self.seed, epoch)
        self._order = (torch.randperm(len(self.x), generator=generator) if self.shuffle
                       else torch.arange(len(self.x))).to(self.x.device)
        self._epoch_x = (torch.bernoulli(self.x.cpu(), generator=generator).to(self.x.device)
                         if self.dynamic_binarize else self.x)
        self.epoch = epoch

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._order is None or self.position >= len(self.x):
            self._start_epoch(self.epoch + 1 if self._order is not None else max(self.epoch, 0))
            self.position = 0
        index = self._order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self._epoch_x[index], index

    def step(self) -> float:
        """One SVI step on the next minibatch; returns the negative ELBO per data point."""
        if self.kl_warmup_steps:
            self.kl_weight.beta = min(1.0, self.step_count / self.kl_warmup_steps)
        batch, index = self.next_batch()
        try:
            with frozen(self.model) if self.freeze_model else contextlib.nullcontext():
                loss = self.svi.step(batch, index, num_data=len(self.x), eager=self.kl_weight.beta != 1.0) / len(self.x)
        except ValueError as error:  # a distribution refusing NaN parameters inside the step
            if self.schedule is None or "nan" not in str(error).lower() and all_finite(self.svi.params):
                raise
            loss = math.nan
        if self.schedule is not None and not (math.isfinite(loss) and all_finite(self.svi.params)):
            if self.schedule.back_off(self):  # the best check's state, at a tenth of the learning rate
                return self.losses[-1] if self.losses else math.nan
        self.losses.append(loss)
        self.step_count += 1
        if self.schedule is not None:
            self.schedule.after_step(self)
        return loss

    def snapshot(self) -> dict:
        """What :meth:`restore` needs to return to this step: parameters, optimizer, position in the data."""
        return {"params": [p.detach().clone() for p in self.svi.params], "optim": copy.deepcopy(self.svi.state_dict()),
                "step": self.step_count, "epoch": self.epoch, "position": self.position}

    def restore(self, snapshot: dict) -> None:
        with torch.no_grad():
            for param, saved in zip(self.svi.params, snapshot["params"], strict=True):
                param.copy_(saved)
        self.svi.load_state_dict(copy.deepcopy(snapshot["optim"]))
        self.step_count, self.position = snapshot["step"], snapshot["position"]
        del self.losses[self.step_count:]
        if snapshot["epoch"] != self.epoch and snapshot["epoch"] >= 0:
            self._start_epoch(snapshot["epoch"])

    @property
    def finished(self) -> bool:
        """Whether the schedule ended training (it converged, or gave up) before the step cap."""
        return self.schedule is not None and self.schedule.done

    def convergence(self, cap: int) -> dict:
        """Whether the fit converged, by the schedule's rule or, for a fixed number of steps, by the trend of the
        last steps' ELBO (:mod:`elbogap.inference.convergence`), with the evidence for it; ``cap`` is the most
        steps the run was allowed."""
        if not self.svi.params:
            return {"rule": "none", "converged": True, "reason": NOTHING_TO_FIT}
        if self.schedule is not None:
            return self.schedule.verdict(self.step_count, cap)
        return fixed_verdict(self.losses, self.convergence_settings, self.loss_scale,
                             self.window_gain if self.step_count == cap else None)

    def check_window(self, cap: int) -> None:
        """Score the ELBO's terms on fixed draws (``window_check``) where the trend rule's window over ``cap`` steps
        begins and where it ends, and keep their paired gain for :meth:`convergence`. Called after every step (by
        the stacked training too, with the run's parameters handed over); the scorings leave training's random
        stream alone."""
        if not self.checks_window_at(self.step_count, cap):
            return
        if self.step_count < cap:
            self.window_start = self.window_check()
        elif self.window_start is not None:
            self.window_gain = paired_gain(self.window_start, self.window_check())

    def checks_window_at(self, step: int, cap: int) -> bool:
        """Whether :meth:`check_window` scores after ``step`` of ``cap``: the window's first and last steps."""
        return self.window_check is not None and step in (cap - window_steps(cap, self.convergence_settings), cap)

    def snr_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed minibatch the gradient's signal-to-noise is measured on: ``(rows, index)``.

        The first minibatch of an epoch ordered by the stream ``snr_batch`` of the run's seed (the
        same rows at every measurement of a run, and for every guide trained from that seed;
        without ``shuffle``, the first ``batch_size`` rows), Bernoulli-drawn once from the same
        stream under ``dynamic_binarize``.
        """
        generator = streams.generator("snr_batch", self.seed)
        order = torch.randperm(len(self.x), generator=generator) if self.shuffle else torch.arange(len(self.x))
        index = order[:self.batch_size].to(self.x.device)
        rows = self.x[index]
        if self.dynamic_binarize:
            rows = torch.bernoulli(rows.cpu(), generator=generator).to(self.x.device)
        return rows, index

    def gradient_snr(self, draws: int = 16) -> dict[str, GroupSNR]:
        """The signal-to-noise ratio of the training gradient now, per group of parameters
        (see :func:`~elbogap.inference.snr.gradient_snr`), from ``draws`` gradients on :meth:`snr_batch`.

        The gradients are those of SVI's uncompiled loss (the estimator training uses, at the KL
        weight of the last step) with respect to the parameters SVI fits: the guide's as
        ``"encoder"``, the model's as ``"decoder"`` (none where the model is held fixed). The draws come from the stream
        ``snr_draws`` of the run's seed and step, inside a fork of the generators: training's own
        draws, parameters and gradients are left exactly as they were.
        """
        batch, index = self.snr_batch()
        args, kwargs = (batch, index), {"num_data": len(self.x)}
        with frozen(self.model) if self.freeze_model else contextlib.nullcontext():
            if self._snr_groups is None:
                self._snr_groups = parameter_groups(self.svi.model, self.svi.guide, args, kwargs)
            return gradient_snr(self.svi.loss, self.svi.model, self.svi.guide, args, kwargs, draws=draws,
                                groups=self._snr_groups, seed=streams.seed_for("snr_draws", self.seed, self.step_count))

    def run(self, steps: int, callback: Callable[["Trainer"], None] | None = None,
            progress: bool | Progress = False, desc: str = "") -> TrainResult:
        """Run until ``step_count`` reaches ``steps``; ``callback(self)`` follows every step."""
        if steps < 0:
            raise UsageError(f"--steps must be >= 0, got {steps}")
        if not self.svi.params:  # a step would change nothing (convergence() says so)
            steps = self.step_count
        bar = as_progress(progress).bar(desc, steps, initial=self.step_count)
        if self.schedule is not None:
            self.schedule.start(self)
        while self.step_count < steps and not self.finished:
            start = time.perf_counter()
            loss = self.step()
            self.seconds += time.perf_counter() - start  # callbacks (evaluation, checkpoints) are not training
            bar.update()
            if self.step_count % 25 == 0:
                bar.set_postfix(elbo=f"{-loss:.3f}", refresh=False)  # drawn at the next redraw, not per call
            if callback is not None:
                callback(self)
        bar.close()
        return TrainResult(self.losses, self.seconds)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: parameters, optimizer, RNG, position in the data."""
        return {
            "step": self.step_count, "epoch": self.epoch, "position": self.position, "seconds": self.seconds,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "model": self.model.state_dict(), "guide": self.guide.state_dict(),
            "optim": self.svi.state_dict(), "rng": rng_state(self.x.device),
            "schedule": json.dumps(self.schedule.state_dict() if self.schedule is not None else None),
            "schedule_best": self.schedule.best_state() if self.schedule is not None else None,
            "window_start": self.window_start, "window_gain": json.dumps(self.window_gain),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.model.load_state_dict(state["model"])
            self.guide.load_state_dict(state["guide"])
        self.svi.load_state_dict(state["optim"])
        set_rng_state(state["rng"], self.x.device)
        self.step_count, self.position = int(state["step"]), int(state["position"])
        self.losses = state["losses"].tolist()
        self.seconds = float(state.get("seconds", 0.0))
        self.epoch = int(state["epoch"])
        if self.epoch >= 0:
            self._start_epoch(self.epoch)
        self.window_start = state.get("window_start")  # absent from a checkpoint written before the window check
        self.window_gain = json.loads(state.get("window_gain", "null"))
        schedule = json.loads(state.get("schedule", "null"))
        if self.schedule is not None and schedule is not None:
            self.schedule.load_state_dict(schedule)
            self.schedule.load_best(state.get("schedule_best"))


def train(model, guide, x: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 1e-3,
          objective: str = "elbo", num_particles: int = 1, seed: int = 0,
          freeze_model: bool = False, lr_decay: float = 1.0, progress: bool | Progress = False,
          desc: str = "", jit: bool = True, gradient: str = "reparam") -> TrainResult:
    r"""Maximize an ELBO over the guide's (and, unless frozen, the model's) parameters with SVI.

    Each step takes a minibatch of ``batch_size`` rows of ``x``; the data plate scales it by
    ``len(x) / batch_size`` so that every step estimates the full-data bound. The recorded
    loss is the negative ELBO per data point. See :class:`Trainer` for warm-up, dynamic
    binarization and checkpoints.

    :param model: a :class:`~elbogap.model.LatentModel`.
    :param guide: a :class:`~elbogap.guides.Guide`.
    :param torch.Tensor x: training data, one row per data point.
    :param int steps: number of SVI steps.
    :param str objective: ``"elbo"``, ``"meanfield"`` or ``"iwae"`` (see :func:`make_objective`).
    :param bool freeze_model: keep the model's parameters fixed and fit only the guide.
    :param float lr_decay: factor applied to the learning rate before every step.
    :param bool jit: compile the loss (see :class:`Trainer`).
    :param str gradient: ``"reparam"``, ``"stl"`` or ``"dreg"`` (see :func:`make_svi`).
    """
    trainer = Trainer(model, guide, x, batch_size, lr, objective, num_particles, seed, freeze_model, lr_decay,
                      jit=jit, gradient=gradient)
    return trainer.run(steps, progress=progress, desc=desc)


@dataclass(frozen=True)
class RefitRule:
    """How a refit searches (:func:`refit_guide`, and q* refit at once for stacked seeds): Adam from ``lr`` on
    ``particles`` draws a step, windows of ``window`` steps, the rate dropped tenfold when ``patience`` windows in a
    row each fall short of the best window's mean by less than ``tol`` nats per point, stopped after ``lr_drops``
    drops or ``max_steps`` steps. The ELBO's gradient is estimated by ``gradient``: ``"stl"`` (sticking the
    landing, :mod:`~elbogap.inference.stl`) where the family's density is a closed form
    (``Guide.closed_form_density``: the Gaussians, the mixture, ``local``), else ``"reparam"``: a flow would be inverted
    at every step (twice the time of an iaf refit, for 0.003 nats), which Pyro's inverse cannot do over stacked
    seeds, and a guide program's parameters cannot be held fixed.

    With the reparameterized gradient, the score of q kept Adam's steps noisy up to the end, and q* stopped
    short: on a 5-latent program with a Gaussian posterior, 12 full-rank refits read an approximation gap of
    0.003-0.005 nats where the truth is 0 (with one window of patience, 2 of 12 read 0.016). Sticking the landing
    drops that score, whose draw-by-draw noise vanishes where q is the posterior: 12 of 12 came within 5e-5
    (``benchmarks/refit_rule.py``).
    """

    lr: float = 0.05
    max_steps: int = 4000
    window: int = 50
    tol: float = 5e-4
    particles: int = 8
    lr_drops: int = 2
    patience: int = 2
    gradient: str = "stl"

    def gradient_for(self, guide) -> str:
        """The estimator this rule fits ``guide`` with: ``gradient``, or ``"reparam"`` where the family cannot stick
        the landing."""
        return self.gradient if sticks(guide) and guide.closed_form_density else "reparam"


REFIT = RefitRule()


@dataclass
class RefitStall:
    """Where one refit stands under a :class:`RefitRule`: the best window's mean loss, the windows in a row that fell
    short of it, and the rate's drops so far."""

    best: float = math.inf
    short: int = 0
    drops: int = 0

    def after_window(self, mean_loss: float, rule: RefitRule) -> str:
        """``"go"`` on, ``"drop"`` the rate tenfold, or ``"stop"`` (converged), after a window of ``mean_loss``."""
        self.short = self.short + 1 if self.best - mean_loss < rule.tol else 0
        self.best = min(self.best, mean_loss)
        if self.short < rule.patience:
            return "go"
        self.short = 0
        if self.drops == rule.lr_drops:
            return "stop"
        self.drops += 1
        return "drop"


def refit_guide(model, guide, x: torch.Tensor, lr: float = REFIT.lr, max_steps: int = REFIT.max_steps,
                window: int = REFIT.window, tol: float = REFIT.tol, num_particles: int = REFIT.particles,
                lr_drops: int = REFIT.lr_drops, jit: bool = True, progress: bool | Progress = False,
                desc: str = "", patience: int = REFIT.patience, gradient: str = REFIT.gradient) -> TrainResult:
    r"""Fit the guide's parameters to ``x`` with the model held fixed, until the ELBO stops rising.

    Full-batch SVI. Every ``window`` steps the window's mean loss is compared with the best window's
    so far; when ``patience`` windows in a row improve on it by less than ``tol`` nats per data point the learning
    rate drops tenfold, and after ``lr_drops`` drops fitting stops (or after ``max_steps``; :class:`RefitRule`). This
    is how a
    per-datapoint guide gets its parameters for a split it was not trained on, and how q* is
    found. Pyro's param store is left as it was: a refit in the middle of training does not touch it.
    A program that cannot run under a plate of draws gets its particles as copies of its rows, each copy scaled by
    one over the particles: one call of it a step, where there was one a particle.
    The refit's gradient is the rule's (:class:`RefitRule`: sticking the landing where the family allows it),
    whatever the run's ``--gradient``: q* is a property of the family, and one search for it, the same in every
    study, keeps the approximation/amortization split comparable between runs trained with different estimators.
    With ``progress``, a bar counts the steps toward ``max_steps`` and shows the ELBO per point.
    """
    result = TrainResult()
    if not any(True for _ in guide.parameters()):
        result.converged = True
        return result  # nothing to fit (e.g. the exact posterior)
    # a copy of the param store's entries (the same tensors, so a model's pyro.param sites read their trained
    # values): what the refit adds or drops stays inside, and a refit during training leaves the store as it was
    store = pyro.get_param_store()
    with store.scope(store.get_state()):
        with as_progress(progress).bar(desc or "refit", max_steps) as bar:
            rule = RefitRule(lr=lr, max_steps=max_steps, window=window, tol=tol, particles=num_particles,
                             lr_drops=lr_drops, patience=patience, gradient=gradient)
            return _refit(model, guide, x, rule, jit, result, bar)


def _refit(model, guide, x, rule: RefitRule, jit, result, bar):
    # a program that cannot take a plate of draws gets its particles as copies of the rows, each scaled by
    # 1 / particles through num_data: one call a step instead of one per particle, the same estimate
    copies = 1 if broadcasts_draws(model) else rule.particles
    index = repeat_rows(torch.arange(len(x), device=x.device), copies)
    rows = repeat_rows(x, copies)
    svi = make_svi(model, guide, rows, len(x), rule.lr, "elbo", rule.particles // copies, freeze_model=True, jit=jit,
                   gradient=rule.gradient_for(guide), fixed_rows=True)
    start = time.perf_counter()
    stall = RefitStall()
    # the model and its data were validated when it was loaded and trained; in a program's refit the checks of every
    # draw's support cost a fifth of a step, and a draw of q cannot leave it (q maps into the support)
    with frozen(model), unvalidated():
        while len(result.losses) < rule.max_steps:
            window_losses = [svi.step(rows, index, num_data=len(x)) / len(x) for _ in range(rule.window)]
            result.losses += window_losses
            current = sum(window_losses) / rule.window
            bar.update(rule.window)
            bar.set_postfix(elbo=f"{-current:.4f}", refresh=False)
            verdict = stall.after_window(current, rule)
            if verdict == "stop":
                result.converged = True
                break
            if verdict == "drop":
                svi.scale_lr(0.1)
    result.seconds = time.perf_counter() - start
    result.converged = bool(result.converged)
    return result
