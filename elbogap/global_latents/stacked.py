r"""Many fits of one autoguide trained as one program: parameters stacked along a leading fits dimension.

A calibration study fits each guide to each of M simulated data sets; one Pyro SVI loop per fit spends its time in
Pyro's per-step overhead, not in arithmetic. Here G autoguides of one family, each built and initialized as a lone
run builds it (its own seed), are trained together: their parameters are stacked along a leading dimension
(:func:`torch.func.stack_module_state`), each fit's :math:`q_g` is read as a density over the model's flat
unconstrained latent vector (:func:`flat_posterior`), and one step draws :math:`z_{g,p} = T_g(\epsilon_{g,p})` for
every fit at once (``torch.func.vmap`` over the stacked parameters) and scores the model at all of them
(``vmap`` over fits, data sets and particles of the user's program, :meth:`GlobalLatentModel.joint_parts`). The loss
is the sum over fits of each fit's negative ELBO estimate

.. math:: -\sum_g \frac1P \sum_p \big[\log p(z_{g,p}, D_g) + \log|J(z_{g,p})| - \log q_g(z_{g,p})\big],

so each fit's gradient is its own; Adam (Pyro's ``ClippedAdam``: gradients clamped to ``[-10, 10]``) keeps a
learning rate and a step count per fit, and each fit has its own
:class:`~elbogap.inference.convergence.ConvergeSchedule` (its checks scored together), so it drops its rate, backs
off after a non-finite step and stops as a lone run would; a fit that stopped is no longer updated. A fit whose
loss stays non-finite gives up alone: the others go on.

The draws of fit g come from its own generator (the stream ``stacked_fit`` of its seed), so a fit's results do
not depend on which fits it was trained with (up to floating-point rounding of the batched arithmetic). Given the
guides a lone run builds (the same initial parameters), they are statistically equivalent to that run, not bitwise
equal: the lone run draws through Pyro's traces from the global generator, and its checks score draws of one
stream every run shares. Whether a program can be stacked is decided by a probe that compares the
stacked densities with one call per fit (:func:`probe`), as the evidence's chain batching does.
"""

import math

import torch
import torch.distributions as td
from pyro.infer import autoguide
from torch import nn
from torch.func import functional_call, vmap

from elbogap import streams
from elbogap.global_latents.autoguides import AUTOGUIDES
from elbogap.inference.convergence import ConvergenceSettings, ConvergeSchedule, fixed_verdict
from elbogap.inference.stacking import (
    NotStackable,
    RowAdam,
    Stack,
    load_adam,
    noise_size,
    reparameterized,
    unvalidated,
)
from elbogap.inference.train import all_finite

#: draws of each fit's ELBO check (common random numbers: the same at every check of a fit)
CHECK_DRAWS = 256


def flat_posterior(auto) -> td.Distribution:
    """An autoguide's q as one distribution over the model's flat unconstrained vector (the sites' order)."""
    if isinstance(auto, autoguide.AutoContinuous):
        return auto.get_posterior()
    locs, scales = [], []
    for name, _ in auto.prototype_trace.iter_stochastic_nodes():
        loc, scale = auto._get_loc_and_scale(name)
        locs.append(loc.reshape(-1))
        scales.append(scale.reshape(-1))
    return td.Independent(td.Normal(torch.cat(locs), torch.cat(scales)), 1)


class FlatGuide(nn.Module):
    """One autoguide as a function of standard normals: ``eps (P, k) -> z (P, d), log q(z) (P,)``."""

    def __init__(self, auto):
        super().__init__()
        self.auto = auto

    def forward(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = flat_posterior(self.auto)
        z = reparameterized(q, eps)
        return z, q.log_prob(z)


def stacker(config, data, guide_name: str, runs, seeds) -> "StackedFits":
    """The seeds ``seeds`` of ``guide_name`` (``runs``: each run's model, guide and trainer, built as the run builds
    them) as one :class:`StackedFits` on the study's data set (:class:`NotStackable` where they cannot be)."""
    model, guide, trainer = runs[0]
    if why := refusal(config, model, guide_name):
        raise NotStackable(why)
    if trainer.batch_size < len(data.train):
        raise NotStackable("the program subsamples its rows (stacked fits take every row at each step)")
    cap = config.total_steps(len(data.train))
    converge = config.schedule == "converge"
    return StackedFits(model, [guide for _, guide, _ in runs], data.train, seeds, config.lr, config.particles, cap,
                       ConvergenceSettings(tolerance=config.convergence_tol), converge,
                       1.0 if converge else config.lr_decay ** (1 / max(cap, 1)),
                       [trainer.schedule is not None and trainer.schedule.keep_start for _, _, trainer in runs])


def refusal(config, model, guide_name: str) -> str | None:
    """Why the fits of ``guide_name`` on ``model`` cannot be trained at once with these settings (None: they can,
    if the probe of :class:`StackedFits` agrees)."""
    if config.stacked_fits == "off":
        return "--stacked-fits off"
    if config.objective != "elbo" or config.gradient != "reparam":
        return f"--objective {config.objective} --gradient {config.gradient} (stacked fits train the ELBO, reparam)"
    if model.param_names:
        return f"the model has parameters of its own ({', '.join(model.param_names[:3])}), fitted with each guide"
    if not guide_name.startswith("auto:"):
        return f"{guide_name} is a guide program (stacked fits are Pyro's autoguides)"
    return None


class StackedFits(Stack):
    r"""G fits of one autoguide family trained as one program (see the module).

    :param model: the :class:`~elbogap.global_latents.model.GlobalLatentModel` (its program scores every fit).
    :param guides: one :class:`~elbogap.global_latents.guides.GlobalAutoGuide` per fit, each initialized as a lone
        run initializes it.
    :param torch.Tensor data: ``(G, N, D)``, each fit's data set, or ``(N, D)``, one for all.
    :param seeds: each fit's seed (its draws come from the stream ``stacked_fit`` of it).
    :param float lr: Adam's initial learning rate.
    :param int particles: draws of q per step and fit.
    :param int cap: the most steps a fit takes.
    :param ConvergenceSettings rule: the convergence rule's constants (in nats of the data set's ELBO).
    :param bool converge: train each fit until its :class:`ConvergeSchedule` says it converged (else ``cap``
        steps at a rate multiplied by ``lr_decay`` every step, judged by the trend rule).
    :param float lr_decay: what each step multiplies a fit's rate by (1 under the convergence schedule).
    :param keep_start: per fit, whether it starts from a fit of its own whose level its schedule keeps
        (:class:`ConvergeSchedule`'s ``keep_start``; its start scored with the others').
    """

    def __init__(self, model, guides, data: torch.Tensor, seeds, lr: float, particles: int, cap: int,
                 rule: ConvergenceSettings, converge: bool = True, lr_decay: float = 1.0,
                 keep_start: list[bool] | None = None):
        self.model, self.count = model, len(guides)
        self.data = data
        self.num_data = data.shape[-2]
        self.seeds, self.particles, self.cap, self.lr_decay = list(seeds), particles, cap, lr_decay
        names = [getattr(guide, "name", type(guide).__name__) for guide in guides]
        if not all(name in AUTOGUIDES and AUTOGUIDES[name].stacks for name in names):
            stacking = ", ".join(family.name for family in AUTOGUIDES.values() if family.stacks)
            raise NotStackable(f"{names[0]} is not one of the autoguides whose fits stack ({stacking})")
        self.flats = [FlatGuide(guide.auto) for guide in guides]
        with torch.no_grad():
            self.noise = noise_size(flat_posterior(guides[0].auto))
        self.stack_modules(self.flats)
        self.adam = RowAdam(self.leaves, lr, lr_decay)
        self.steps = [0] * self.count
        self.losses: list[list[float]] = [[] for _ in range(self.count)]
        self.generators = [streams.generator("stacked_fit", seed, 0) for seed in self.seeds]
        self.check_noise = torch.stack([torch.randn(CHECK_DRAWS, self.noise, generator=streams.generator(
            "stacked_fit", seed, 1)) for seed in self.seeds])
        self.rule = rule
        keep_start = keep_start or [False] * self.count
        self.schedules = [ConvergeSchedule(None, rule, keep) if converge else None for keep in keep_start]
        self.views = [FitView(self, g) for g in range(self.count)]
        probe(self)

    # --- the stacked program -----------------------------------------------------------------------

    def draw(self, fits: list[int], eps: torch.Tensor, params: dict | None = None):
        """``z (F, P, d)`` and ``log q (F, P)`` of the fits ``fits`` from standard normals ``eps (F, P, k)``."""
        params = params if params is not None else {name: value[fits] for name, value in self.params.items()}
        buffers = {name: value[fits] for name, value in self.buffers.items()}
        base = self.flats[0]
        with unvalidated():  # one fit's NaN must not stop the others: it backs off alone
            return vmap(lambda p, b, e: functional_call(base, (p, b), (e,), tie_weights=False))(params, buffers, eps)

    def log_joint(self, fits: list[int], z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(z, D_g) + \log|J|` of each fit's draws ``z (F, P, d)``: ``(F, P)``."""
        model = self.model

        def one_fit(z_fit, data):
            return vmap(lambda one: model.joint_parts(one, data))(z_fit)

        with unvalidated():
            if self.data.dim() == 3:
                parts = vmap(one_fit)(z, self.data[fits])
            else:
                parts = vmap(lambda z_fit: one_fit(z_fit, self.data))(z)
        return parts.sum(-1)

    def elbos(self, fits: list[int], eps: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """Each fit's ELBO estimate (nats of its data set) from ``eps``: ``(F,)``, differentiable; more draws than a
        step's particles are scored a step's worth at a time (the memory a chunk of fits was sized for)."""
        total = 0.0
        for start in range(0, eps.shape[1], self.particles):
            z, log_q = self.draw(fits, eps[:, start:start + self.particles], params)
            total = total + (self.log_joint(fits, z) - log_q).sum(-1)
        return total / eps.shape[1]

    # --- training ----------------------------------------------------------------------------------

    def active(self) -> list[int]:
        return [g for g in range(self.count) if self.steps[g] < self.cap
                and not (self.schedules[g] is not None and self.schedules[g].done)]

    def start(self) -> None:
        kept = [g for g, s in enumerate(self.schedules) if s is not None and s.keep_start and s.start_level is None
                and not s.checks]
        with torch.no_grad():  # the starts a schedule keeps, scored together on the checks' draws
            values = dict(zip(kept, self.elbos(kept, self.check_noise[kept]).tolist(), strict=True)) if kept else {}
        for g, schedule in enumerate(self.schedules):
            if schedule is not None:
                schedule.start(self.views[g], values.get(g))

    def step(self, fits: list[int]) -> None:
        eps = torch.stack([torch.randn(self.particles, self.noise, generator=self.generators[g]) for g in fits])
        elbos = self.elbos(fits, eps)
        for leaf in self.leaves:
            leaf.grad = None
        (-elbos.sum()).backward()
        finite = torch.isfinite(elbos)  # an infinite gradient is clamped, as ClippedAdam does; a NaN one backs off
        for leaf in self.leaves:
            if leaf.grad is None:  # a parameter the loss does not reach
                leaf.grad = torch.zeros_like(leaf)
        self.update([g for g, ok in zip(fits, finite.tolist(), strict=True) if ok])
        values = (-elbos.detach() / self.num_data).tolist()
        due = []
        for g, ok, loss in zip(fits, finite.tolist(), values, strict=True):
            view, schedule = self.views[g], self.schedules[g]
            if schedule is not None and not (ok and view.params_finite()):
                if schedule.back_off(view):
                    continue
            self.losses[g].append(loss if ok else math.nan)
            self.steps[g] += 1
            if schedule is not None and schedule.accumulate(view):
                due.append(g)
        if due:
            self.check(due)

    @property
    def lr(self) -> torch.Tensor:
        """Each fit's learning rate now, ``(G,)``."""
        return self.adam.lr

    def update(self, fits: list[int]) -> None:
        """ClippedAdam's step for the rows ``fits``, each at its own rate and step count."""
        self.adam.update(fits)

    @torch.no_grad()
    def check(self, due: list[int]) -> None:
        """The ELBO checks of the fits ``due``, at their windows' averaged iterates, scored together."""
        averages = [self.schedules[g].averaged() for g in due]
        params = {name: torch.stack([average[index] for average in averages])
                  for name, index in self.leaf_index.items()}
        values = self.elbos(due, self.check_noise[due], params).tolist()
        for g, value in zip(due, values, strict=True):
            self.schedules[g].check(self.views[g], value)

    def params_finite(self, g: int) -> bool:
        return self.views[g].params_finite()

    def load_into(self, g: int, trainer) -> None:
        """Fit ``g``'s lone trainer as its run would stand now: steps, losses, schedule and Adam's state (after
        :meth:`write_back`, its parameters too)."""
        trainer.step_count, trainer.losses = self.steps[g], list(self.losses[g])
        if trainer.schedule is not None and self.schedules[g] is not None:
            # its checks, levels and kept start's score; not the best check's state, which is the stack's row (a run
            # resumed alone after a stop can return to its checks' states from then on, not to its start)
            trainer.schedule.load_state_dict(self.schedules[g].state_dict())
        load_adam(self.adam, g, trainer, self.flats[g], self.leaf_index)

    # --- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What :meth:`load_state_dict` needs to go on training every fit where it was: parameters, Adam's state,
        rates, steps, losses, schedules and each fit's generator (a window's running average is not kept: a fit
        resumed mid-window averages the rest of it, as a resumed lone run does)."""
        return {"leaves": [leaf.detach().clone() for leaf in self.leaves], **self.adam.state_dict(),
                "steps": list(self.steps),
                "losses": [torch.tensor(losses, dtype=torch.float64) for losses in self.losses],
                "schedules": [None if s is None else s.state_dict() for s in self.schedules],
                "schedule_bests": [None if s is None else s.best_state() for s in self.schedules],
                "generators": [generator.get_state() for generator in self.generators]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for leaf, saved in zip(self.leaves, state["leaves"], strict=True):
            leaf.copy_(saved)
        self.adam.load_state_dict(state)
        self.steps = [int(step) for step in state["steps"]]
        self.losses = [saved.tolist() for saved in state["losses"]]
        bests = state.get("schedule_bests", [None] * len(self.schedules))
        for schedule, saved, best in zip(self.schedules, state["schedules"], bests, strict=True):
            if schedule is not None and saved is not None:
                schedule.load_state_dict(saved)
                schedule.load_best(best)
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)

    # --- results -----------------------------------------------------------------------------------

    def verdict(self, g: int) -> dict:
        """Fit ``g``'s convergence record, as :meth:`~elbogap.inference.train.Trainer.convergence` gives it."""
        if self.schedules[g] is not None:
            return self.schedules[g].verdict(self.steps[g], self.cap)
        return fixed_verdict(self.losses[g], self.rule, self.num_data)

    @torch.no_grad()
    def final_draws(self, count: int, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` draws of every fit's q after training (the stream ``stacked_fit`` of its seed, counter 2):
        ``z (G, count, d)`` and the log weights ``log p(z, D_g) - log q_g(z)`` ``(G, count)``."""
        fits = list(range(self.count))
        generators = [streams.generator("stacked_fit", seed, 2) for seed in self.seeds]
        draws, log_w, chunk = [], [], chunk or self.particles
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            eps = torch.stack([torch.randn(size, self.noise, generator=generator) for generator in generators])
            z, log_q = self.draw(fits, eps)
            draws.append(z)
            log_w.append(self.log_joint(fits, z) - log_q)
        return torch.cat(draws, 1), torch.cat(log_w, 1)


class FitView:
    """Fit ``g`` of a stack as :class:`ConvergeSchedule` sees a trainer: its parameters (views into the stacked
    tensors), learning rate, step count, and a snapshot of them with its Adam state to return to."""

    def __init__(self, stack: StackedFits, g: int):
        self.stack, self.g = stack, g
        self.svi = self

    @property
    def params(self) -> list[torch.Tensor]:
        return [leaf[self.g] for leaf in self.stack.leaves]

    @property
    def lrs(self) -> list[float]:
        return [float(self.stack.lr[self.g])]

    def scale_lr(self, factor: float) -> None:
        self.stack.lr[self.g] *= factor

    @property
    def step_count(self) -> int:
        return self.stack.steps[self.g]

    def params_finite(self) -> bool:
        return all_finite(self.params)

    def snapshot(self) -> dict:
        g = self.g
        return {"params": [p.detach().clone() for p in self.params], "step": self.stack.steps[g],
                "adam": self.stack.adam.row(g)}

    @torch.no_grad()
    def restore(self, snapshot: dict) -> None:
        g, stack = self.g, self.stack
        for leaf, saved in zip(stack.leaves, snapshot["params"], strict=True):
            leaf[g] = saved
        stack.adam.set_row(g, snapshot["adam"])  # its rate stays: the schedule sets it after a back-off
        stack.steps[g] = snapshot["step"]
        del stack.losses[g][snapshot["step"]:]


def probe(stack: StackedFits) -> None:
    """Raise :class:`NotStackable` unless the stacked draws and densities equal one call per fit at a few draws.

    Decided by trying, as the evidence's chain batching is: a program ``vmap`` cannot run (data-dependent control
    flow, in-place writes, ``.item()``) or runs differently fails here, before training.
    """
    fits = list(range(min(2, stack.count)))
    eps = torch.randn(len(fits), 2, stack.noise, generator=torch.Generator().manual_seed(0))
    def refused(what: str, error: Exception) -> NotStackable:
        return NotStackable(f"vmap cannot {what} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:100] if str(error) else ''})")

    try:  # the guide's draws alone first, so the line says which side vmap cannot run
        z, log_q = stack.draw(fits, eps)
    except Exception as error:  # a transform with data-dependent shapes (a block autoregressive flow's)
        raise refused("draw from the guide", error) from None
    try:  # the backward pass too: a program whose gradient vmap cannot take fails here, not in training
        stacked = stack.log_joint(fits, z)
        (stacked - log_q).sum().backward()
        for leaf in stack.leaves:
            leaf.grad = None
        z, log_q, stacked = z.detach(), log_q.detach(), stacked.detach()
    except Exception as error:  # any program vmap cannot run: one fit at a time
        raise refused("run the program", error) from None
    with torch.no_grad(), unvalidated():
        for i, g in enumerate(fits):
            lone_z, lone_log_q = stack.flats[g](eps[i])
            data = stack.data[g] if stack.data.dim() == 3 else stack.data
            lone = torch.stack([stack.model.joint_parts(one, data).sum() for one in lone_z])
            if not (torch.allclose(z[i], lone_z, rtol=1e-4, atol=1e-4)
                    and torch.allclose(log_q[i], lone_log_q, rtol=1e-4, atol=1e-3)
                    and torch.allclose(stacked[i], lone, rtol=1e-4, atol=1e-3, equal_nan=True)):
                raise NotStackable("the stacked program's densities differ from one fit's")
