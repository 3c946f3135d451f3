r"""The seeds of one of elbogap's own models and families trained as one program.

A study runs every family with several seeds; each run's Pyro SVI loop spends most of a step on overhead when the
networks are small. Here the G runs of one family, each built as a lone run builds it (its own seed: initial weights,
minibatch order, binarization), step together: the parameters of every run's decoder and encoder are stacked along a
leading fits dimension (:func:`~elbogap.inference.stacking.stacked_state`) and one step computes, for every fit g at
once (``torch.func.vmap`` over :func:`torch.func.functional_call`), the negative ELBO of its own minibatch
:math:`x_{g,1..B}` of N rows,

.. math:: -\frac{N}{B} \sum_b \frac1P \sum_p \big[\log p(x_{g,b} \mid z_{g,p,b})
          + \beta\,(\log p(z_{g,p,b}) - \log q_g(z_{g,p,b} \mid x_{g,b}))\big],
          \quad z_{g,p,b} = T_g(\epsilon_{g,p,b}; x_{g,b}),

the integrand of Pyro's ``Trace_ELBO`` that the lone run's SVI estimates (``β`` its KL warm-up). The loss is the sum
over fits, so each fit's gradient is its own, and Adam (Pyro's ``ClippedAdam``) keeps a rate and step count per fit
(:class:`~elbogap.inference.stacking.RowAdam`). Fit g's standard normals come from its own generator (the stream
``stacked_fit`` of its seed): its numbers do not depend on which fits it trained with, up to floating-point rounding.
The results are statistically equivalent to the lone run's, not bitwise equal: the lone run draws through Pyro's
traces from the global generator. A fit whose loss or parameters turn non-finite stops alone; the others go on.

After training, :meth:`StackedTraining.after_training` searches every seed's q* on its split's gap points at once
(:class:`StackedRefits`, each fit by :func:`~elbogap.inference.train.refit_guide`'s rule) and saves it for the run's
gap decomposition.
"""

import contextlib
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap

from elbogap import streams
from elbogap.checkpoint import save_checkpoint
from elbogap.guides.base import AmortizedGuide
from elbogap.guides.guide import Guide
from elbogap.inference.snr import GroupSNR, signal_to_noise, summarize
from elbogap.inference.stacking import (
    NotStackable,
    RowAdam,
    Stack,
    load_adam,
    noise_size,
    reparameterized,
    unvalidated,
)
from elbogap.inference.stl import StickingTheLanding
from elbogap.inference.train import REFIT, RefitRule, RefitStall, Trainer, all_finite, frozen
from elbogap.model.base import LatentModel


class FitPair(nn.Module):
    """One run's model and guide as one function: rows ``x (B, D)`` and standard normals ``eps (P, B, k)`` to the
    negative ELBO estimate of the data set, scaled from the rows by ``scale = N / B``, with the KL weight ``beta``;
    with ``stick``, q scores its draws as :class:`~elbogap.inference.stl.StickingTheLanding` does (the same value,
    the gradient without q's score)."""

    def __init__(self, model: LatentModel, guide: AmortizedGuide, stick: bool = False):
        super().__init__()
        self.model, self.guide, self.stick = model, guide, stick

    def forward(self, x: torch.Tensor, eps: torch.Tensor, beta: torch.Tensor, scale: float) -> torch.Tensor:
        q = self.guide.distribution(x)
        z = reparameterized(q, eps)
        log_q = (StickingTheLanding(q) if self.stick else q).log_prob(z)
        log_lik = self.model.likelihood(z).log_prob(x)
        log_prior = self.model.prior().log_prob(z)
        return -scale * (log_lik + beta * (log_prior - log_q)).sum(-1).mean(0)


def refusal(config, model, guide, guide_name: str) -> str | None:
    """Why the seeds of ``guide`` on ``model`` cannot be trained at once with these settings (None: they can, if
    the probe of :class:`StackedTraining` agrees)."""
    if config.stacked_fits == "off":
        return "--stacked-fits off"
    if config.objective != "elbo" or config.gradient != "reparam":
        return f"--objective {config.objective} --gradient {config.gradient} (stacked seeds train the ELBO, reparam)"
    if config.schedule != "fixed":
        return f"--schedule {config.schedule} (stacked seeds of a per-point model train a fixed number of steps)"
    if not isinstance(model, LatentModel) or type(model).model is not LatentModel.model:
        return "the model is a program of its own (stacked seeds score elbogap's models)"
    if guide.program or type(guide).guide is not Guide.guide:
        return f"{guide_name} is a guide program (stacked seeds train elbogap's families)"
    if not isinstance(guide, AmortizedGuide):
        return f"{guide_name} is not amortized by an encoder (stacked seeds train elbogap's amortized families)"
    if guide.components:
        return f"{guide_name} trains on its ELBO summed over its components"
    return None


class StackedTraining(Stack):
    """The lone runs ``trainers`` (one :class:`~elbogap.inference.train.Trainer` per seed, each built as its run
    builds it) stepped as one program (see the module).

    Each trainer keeps serving its own minibatches (its epoch order, binarization and position), so after
    :meth:`write_back` and :meth:`load_into` it stands where its lone run would after as many steps.

    :param seeds: each fit's seed (its draws come from the stream ``stacked_fit`` of it).
    :param int particles: draws of q per row and step.
    :param int cap: the steps each fit takes.
    """

    def __init__(self, trainers: list[Trainer], seeds, particles: int, cap: int,
                 gap_points: dict[str, torch.Tensor] | None = None):
        self.trainers, self.count, self.cap, self.particles = trainers, len(trainers), cap, particles
        self.seeds, self.gap_points = list(seeds), gap_points or {}
        self.pairs = [FitPair(trainer.model, trainer.guide) for trainer in trainers]
        self.stack_modules(self.pairs)
        group = trainers[0].svi.optimizer.param_groups[0]
        self.adam = RowAdam(self.leaves, group["lr"], group["lrd"])
        self.steps = [trainer.step_count for trainer in trainers]
        self.losses = [list(trainer.losses) for trainer in trainers]
        self.schedules = [None] * self.count
        self.failed = [False] * self.count
        self.generators = [streams.generator("stacked_fit", seed, 0) for seed in seeds]
        self._snr_rows = None
        x = trainers[0].x
        with torch.no_grad():
            self.noise = noise_size(trainers[0].guide.distribution(x[:1]))
        self.num_data = len(x)
        probe(self)

    def beta(self, g: int) -> float:
        """Fit ``g``'s KL weight at its next step (its trainer's warm-up)."""
        warmup = self.trainers[g].kl_warmup_steps
        return min(1.0, self.steps[g] / warmup) if warmup else 1.0

    def losses_of(self, fits: list[int], x: torch.Tensor, eps: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """Each fit's negative ELBO estimate of its data set, ``(F,)``, from its rows ``x (F, B, D)`` and normals
        ``eps (F, P, B, k)``."""
        return pair_losses(self, fits, x, eps, betas, self.num_data / x.shape[1])

    def active(self) -> list[int]:
        return [g for g in range(self.count) if not self.failed[g] and self.steps[g] < self.cap]

    def step(self, fits: list[int]) -> None:
        rows = torch.stack([self.trainers[g].next_batch()[0] for g in fits])
        shape = (self.particles, rows.shape[1], self.noise)
        eps = torch.stack([torch.randn(shape, generator=self.generators[g]) for g in fits]).to(rows)
        betas = torch.tensor([self.beta(g) for g in fits], dtype=rows.dtype, device=rows.device)
        losses = self.losses_of(fits, rows, eps, betas)
        for leaf in self.leaves:
            leaf.grad = None
        losses.sum().backward()
        for leaf in self.leaves:
            if leaf.grad is None:  # a parameter the loss does not reach
                leaf.grad = torch.zeros_like(leaf)
        finite = torch.isfinite(losses).tolist()
        self.adam.update([g for g, ok in zip(fits, finite, strict=True) if ok])
        rows = self.finite_rows()
        for g, ok, loss in zip(fits, finite, (losses.detach() / self.num_data).tolist(), strict=True):
            if not (ok and rows[g]):  # its run trains alone and meets the fault itself
                self.failed[g] = True
                continue
            self.losses[g].append(loss)
            self.steps[g] += 1

    def gradient_snr(self, fits: list[int], draws: int) -> dict[int, dict[str, GroupSNR]]:
        """Each of ``fits``' training-gradient signal-to-noise now, at once: ``draws`` gradients of its stacked loss
        on its run's fixed minibatch (:meth:`~elbogap.inference.Trainer.snr_batch`) at the KL weight of its last step,
        its normals from the stream ``snr_draws`` of its seed and step, summarized per group as
        :meth:`~elbogap.inference.Trainer.gradient_snr` does (the guide's parameters as ``"encoder"``, the model's as
        ``"decoder"``). The lone run's measurement, whose Pyro traces draw the same normals: its numbers, up to
        float rounding."""
        if self._snr_rows is None:
            self._snr_rows = torch.stack([trainer.snr_batch()[0] for trainer in self.trainers])
        rows = self._snr_rows[fits]
        warmups = [self.trainers[g].kl_warmup_steps for g in fits]
        betas = torch.tensor([min(1.0, max(self.steps[g] - 1, 0) / warmup) if warmup else 1.0
                              for g, warmup in zip(fits, warmups, strict=True)], dtype=rows.dtype, device=rows.device)
        generators = [streams.generator("snr_draws", self.seeds[g], self.steps[g]) for g in fits]
        groups = self.snr_groups()
        shape = (self.particles, rows.shape[1], self.noise)
        per_group: dict[str, list[torch.Tensor]] = {name: [] for name in groups}
        for _ in range(draws):
            eps = torch.stack([torch.randn(shape, generator=generator) for generator in generators]).to(rows)
            losses = pair_losses(self, fits, rows, eps, betas, self.num_data / rows.shape[1])
            grads = torch.autograd.grad(losses.sum(), self.leaves, allow_unused=True, materialize_grads=True)
            for name, leaves in groups.items():
                per_group[name].append(torch.cat([grads[i][fits].reshape(len(fits), -1) for i in leaves], dim=1))
        measured: dict[int, dict[str, GroupSNR]] = {g: {} for g in fits}
        for name, draws_of_group in per_group.items():
            grads = torch.stack(draws_of_group).detach()  # (draws, fits, entries)
            for i, g in enumerate(fits):
                measured[g][name] = summarize(signal_to_noise(grads[:, i]))
        return measured

    def snr_groups(self) -> dict[str, list[int]]:
        """The leaves of the guide's parameters (``"encoder"``) and of the model's others (``"decoder"``; none where the
        model is held fixed), as :func:`~elbogap.inference.snr.parameter_groups` groups a lone run's."""
        encoder = sorted({self.leaf_index[name] for name in self.leaf_index if name.startswith("guide.")})
        decoder = sorted({index for name, index in self.leaf_index.items() if name.startswith("model.")} - set(encoder))
        if self.trainers[0].freeze_model:
            decoder = []
        return {name: leaves for name, leaves in (("encoder", encoder), ("decoder", decoder)) if leaves}

    def params_finite(self, g: int) -> bool:
        """Whether fit ``g`` stepped on finite losses and its parameters are finite."""
        return not self.failed[g] and all_finite(leaf[g] for leaf in self.leaves)

    def load_into(self, g: int, trainer: Trainer) -> None:
        """Fit ``g``'s trainer as its lone run would stand now: steps, losses, the KL weight of its last step and
        Adam's state (after :meth:`write_back`, its parameters too); it already serves the minibatches that
        follow."""
        trainer.step_count, trainer.losses = self.steps[g], list(self.losses[g])
        warmup = trainer.kl_warmup_steps  # the weight of its last step, as its gradient SNR is measured at
        trainer.kl_weight.beta = min(1.0, max(self.steps[g] - 1, 0) / warmup) if warmup else 1.0
        load_adam(self.adam, g, trainer, self.pairs[g], self.leaf_index)


    def after_training(self, config, data, run_dirs: list) -> dict[int, dict[str, float]]:
        """Each run's q* on its split's gap points (``gap_points``, the points its evaluation splits the gap on),
        refit at once (:class:`StackedRefits`) and saved to ``RUN_DIR/q_star.pt``, where the run's evaluation
        takes it instead of refitting alone; per fit, the seconds of its share (``gaps_SPLIT``). Fits that went
        non-finite are left out."""
        fits = [g for g in range(self.count) if self.params_finite(g)]
        if not fits:
            return {}
        seconds: dict[int, dict[str, float]] = {g: {} for g in fits}
        found: dict[int, dict] = {g: {} for g in fits}
        for counter, (split, x) in enumerate(self.gap_points.items()):
            started = time.perf_counter()
            refits = StackedRefits([self.trainers[g].model for g in fits], [self.trainers[g].guide for g in fits], x,
                                   [self.seeds[g] for g in fits], counter)
            refits.run()
            refits.write_back()
            share = (time.perf_counter() - started) / len(fits)
            for i, g in enumerate(fits):
                if refits.failed[i]:
                    continue  # its run searches alone
                seconds[g][f"gaps_{split}"] = share
                found[g][split] = {"x": x, "state": refits.stars[i].state_dict(), "seconds": share,
                                   "losses": torch.tensor(refits.losses[i], dtype=torch.float64),
                                   "converged": refits.converged[i]}
        for g in fits:
            if found[g]:
                Path(run_dirs[g]).mkdir(parents=True, exist_ok=True)
                save_checkpoint(Path(run_dirs[g]) / Q_STAR, found[g])
        return seconds


#: where a stacked run finds its q*, refit at once with its stack's
Q_STAR = "q_star.pt"


class StackedRefits(Stack):
    r"""q* of G runs on the same points ``x``, each run's model and family held fixed, searched as one program.

    Each fit starts where its family says (:meth:`~elbogap.guides.Guide.optimum_start`) and follows
    :func:`~elbogap.inference.train.refit_guide`'s rule (:class:`~elbogap.inference.train.RefitRule`): full batch,
    its particles a step, its gradient estimator, and every ``window`` steps the window's mean loss per point
    against the best window's; ``patience`` windows in a row that gain less than ``tol`` drop its rate tenfold, and
    after ``lr_drops`` drops it stops, converged (else at ``max_steps``). Its draws come from the stream
    ``stacked_refit`` of its seed (``counter``: the split).
    """

    def __init__(self, models, guides, x: torch.Tensor, seeds, counter: int, rule: RefitRule = REFIT):
        index = torch.arange(len(x), device=x.device)
        self.stars = [guide.optimum_start(x, index) for guide in guides]
        self.x, self.rule, self.count = x, rule, len(self.stars)
        pairs = []
        for model, star in zip(models, self.stars, strict=True):
            pair = FitPair(model, star, rule.gradient_for(star) == "stl")
            pair.add_module("family", star.family)  # stacked too: a flow's heads and conditioners are each run's
            pairs.append(pair)
        with contextlib.ExitStack() as held:  # fixed: stacked without gradient, so not leaves
            for model, star in zip(models, self.stars, strict=True):
                held.enter_context(frozen(model))
                held.enter_context(frozen(star.family))
            self.stack_modules(pairs)
        self.adam = RowAdam(self.leaves, rule.lr)
        self.generators = [streams.generator("stacked_refit", seed, counter) for seed in seeds]
        with torch.no_grad():
            self.noise = noise_size(self.stars[0].distribution(x))
        self.losses: list[list[float]] = [[] for _ in range(self.count)]
        self.stalls = [RefitStall() for _ in range(self.count)]
        self.converged, self.failed = [False] * self.count, [False] * self.count

    def active(self) -> list[int]:
        return [g for g in range(self.count) if not (self.converged[g] or self.failed[g])
                and len(self.losses[g]) < self.rule.max_steps]

    def step(self, fits: list[int]) -> None:
        shape = (self.rule.particles, len(self.x), self.noise)
        eps = torch.stack([torch.randn(shape, generator=self.generators[g]) for g in fits]).to(self.x)
        betas = torch.ones(len(fits), dtype=self.x.dtype, device=self.x.device)
        losses = pair_losses(self, fits, self.x, eps, betas, 1.0, shared_rows=True)
        for leaf in self.leaves:
            leaf.grad = None
        losses.sum().backward()
        finite = torch.isfinite(losses).tolist()
        self.adam.update([g for g, ok in zip(fits, finite, strict=True) if ok])
        rows = self.finite_rows()
        for g, ok, loss in zip(fits, finite, (losses.detach() / len(self.x)).tolist(), strict=True):
            if not (ok and rows[g]):
                self.failed[g] = True
                continue
            self.losses[g].append(loss)
            if len(self.losses[g]) % self.rule.window:
                continue
            verdict = self.stalls[g].after_window(sum(self.losses[g][-self.rule.window:]) / self.rule.window, self.rule)
            if verdict == "stop":
                self.converged[g] = True
            elif verdict == "drop":
                self.adam.lr[g] *= 0.1


def pair_losses(stack: Stack, fits: list[int], x: torch.Tensor, eps: torch.Tensor, betas: torch.Tensor,
                scale: float, shared_rows: bool = False) -> torch.Tensor:
    """The negative ELBOs ``(F,)`` of the :class:`FitPair` fits ``fits`` of ``stack`` (``vmap`` over their stacked
    parameters), on rows ``x`` ``(F, B, D)``, or ``(B, D)`` for every fit with ``shared_rows``."""
    every = len(fits) == len(stack.modules)
    params = stack.params if every else {name: value[fits] for name, value in stack.params.items()}
    buffers = stack.buffers if every else {name: value[fits] for name, value in stack.buffers.items()}
    base = stack.modules[0]

    def one(p, b, rows, e, beta):
        return functional_call(base, (p, b), (rows, e, beta, scale), tie_weights=False)

    with unvalidated():  # one fit's NaN must not stop the others, and checks cost a step's time
        return vmap(one, in_dims=(0, 0, None if shared_rows else 0, 0, 0))(params, buffers, x, eps, betas)


def probe(stack: StackedTraining) -> None:
    """Raise :class:`NotStackable` unless the stacked losses of two fits equal one call of each fit's own model and
    guide on the same rows and normals, and their gradient runs (decided by trying)."""
    fits = list(range(min(2, stack.count)))
    x = stack.trainers[0].x[:3]
    rows = torch.stack([x] * len(fits))
    eps = torch.randn(len(fits), 2, len(x), stack.noise, generator=torch.Generator().manual_seed(0)).to(x)
    betas = torch.ones(len(fits), dtype=x.dtype, device=x.device)
    try:
        stacked = stack.losses_of(fits, rows, eps, betas)
        stacked.sum().backward()
    except Exception as error:  # a family vmap cannot run: one seed at a time
        raise NotStackable(f"vmap cannot run the family ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:100] if str(error) else ''})") from None
    finally:
        for leaf in stack.leaves:
            leaf.grad = None
    with torch.no_grad():
        lone = torch.stack([stack.pairs[g](x, eps[i], betas[i], stack.num_data / len(x)) for i, g in enumerate(fits)])
    if not torch.allclose(stacked.detach(), lone, rtol=1e-4, atol=1e-3):
        raise NotStackable("the stacked losses differ from one fit's")


def stacker(config, data, guide_name: str, runs, seeds, gap_points: dict | None = None) -> StackedTraining:
    """The seeds ``seeds`` of ``guide_name`` (``runs``: each run's model, guide and trainer, built as the run builds
    them) as one :class:`StackedTraining` (:class:`NotStackable` where they cannot be); ``gap_points``, per split,
    the points on which their q* is refit at once after training."""
    model, guide, _ = runs[0]
    if why := refusal(config, model, guide, guide_name):
        raise NotStackable(why)
    return StackedTraining([trainer for _, _, trainer in runs], seeds, config.particles,
                           config.total_steps(len(data.train)), gap_points)
