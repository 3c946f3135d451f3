r"""What every stack of fits shares: parameters stacked along a leading fits dimension, draws from given noise, and
Adam with a rate and a step count per fit.

A study is many fits of one family (its seeds, or simulated data sets). Trained one at a time, each spends its steps
in Pyro's per-step overhead; trained as one program (``torch.func.vmap`` over parameters stacked by
:func:`torch.func.stack_module_state`, :func:`torch.func.functional_call`), they share it. Two stacks use these
pieces: :class:`~elbogap.global_latents.stacked.StackedFits` (Pyro's autoguides on a model with global latents) and
:class:`~elbogap.inference.stacked_training.StackedTraining` (elbogap's models with their amortized families).
"""

import contextlib

import pyro
import torch
import torch.distributions as td
from torch import nn
from torch.func import stack_module_state

#: Adam's constants, as Pyro's ClippedAdam
BETAS, EPS, CLIP = (0.9, 0.999), 1e-8, 10.0


@contextlib.contextmanager
def unvalidated():
    """Distributions and Pyro without argument checks: a draw or a leapfrog step may leave the support (NaN, then
    rejected or backed off from), and ``vmap`` cannot run the checks' data-dependent branches."""
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


class NotStackable(Exception):
    """The fits cannot be trained as one program; the message says why, for the one line that says so."""


def noise_size(q: td.Distribution) -> int:
    """Standard normals one draw of ``q`` takes per batch element (see :func:`reparameterized`)."""
    if isinstance(q, td.Independent | td.TransformedDistribution):
        return noise_size(q.base_dist)
    if isinstance(q, td.LowRankMultivariateNormal):
        return q.cov_factor.shape[-1] + q.loc.shape[-1]
    if isinstance(q, td.MultivariateNormal | td.Normal):
        return q.loc.shape[-1]
    raise NotStackable(f"its q is a {type(q).__name__}, which stacked fits do not draw")


def reparameterized(q: td.Distribution, eps: torch.Tensor) -> torch.Tensor:
    """A draw of ``q`` from given standard normals ``eps`` ``(..., noise_size(q))`` (leading draw dimensions
    broadcast against q's batch shape).

    Written here: torch's ``rsample`` draws its own noise, which ``vmap`` cannot give each fit.
    """
    if isinstance(q, td.Independent):
        return reparameterized(q.base_dist, eps)
    if isinstance(q, td.TransformedDistribution):
        z = reparameterized(q.base_dist, eps)
        for transform in q.transforms:
            z = transform(z)
        return z
    # the draws as rows times the factor's transpose, one matrix product: the factor times each draw as a column
    # broadcast the factor to one copy per draw under vmap, 830 ms a step for 2 fits at 1,201 latents against 21 ms
    if isinstance(q, td.LowRankMultivariateNormal):
        rank = q.cov_factor.shape[-1]
        return (q.loc + (eps[..., None, :rank] @ q.cov_factor.mT).squeeze(-2)
                + q.cov_diag.sqrt() * eps[..., rank:])
    if isinstance(q, td.MultivariateNormal):
        return q.loc + (eps[..., None, :] @ q.scale_tril.mT).squeeze(-2)
    return q.loc + q.scale * eps


def stacked_state(modules: list[nn.Module]) -> tuple[dict, dict]:
    """The modules' parameters and buffers stacked along a leading fits dimension, parameters as leaves.

    Names a module shares between tensors (an autoguide keeps its first parameter twice) get one stacked tensor.
    """
    params, buffers = stack_module_state(modules)
    base = modules[0]
    by_id = {id(value): name for name, value in base.named_parameters()}
    for name, value in base.named_parameters(remove_duplicate=False):
        if name not in params:
            params[name] = params[by_id[id(value)]]
    return params, buffers


class Stack:
    """What every stack of fits does: its fits' modules stacked (:meth:`stack_modules`), trained until none is active
    (:meth:`run`), and each fit's parameters written back into its own module (:meth:`write_back`). Subclasses say
    which fits are active and what one step of them is."""

    def stack_modules(self, modules: list[nn.Module]) -> None:
        """Stack ``modules`` (one per fit): ``params`` and ``buffers`` by name, ``leaves`` the distinct parameters
        that are fitted (tied names share one; a parameter held fixed, without gradient, is none), ``leaf_index``
        the leaf of each name that has one."""
        self.modules = modules
        self.params, self.buffers = stacked_state(modules)
        self.leaves = list({id(value): value for value in self.params.values() if value.requires_grad}.values())
        self.leaf_index = {name: next(i for i, leaf in enumerate(self.leaves) if leaf is value)
                           for name, value in self.params.items() if value.requires_grad}

    @torch.no_grad()
    def finite_rows(self) -> list[bool]:
        """Per fit, whether every one of its fitted parameters is finite: one check per leaf over all its rows (a
        check per fit and leaf at every step took 5% of a 4-seed study of ``diag`` in a py-spy profile)."""
        finite = torch.ones(len(self.modules), dtype=torch.bool, device=self.leaves[0].device)
        for leaf in self.leaves:
            finite &= leaf.reshape(len(finite), -1).isfinite().all(1)
        return finite.tolist()

    def active(self) -> list[int]:
        raise NotImplementedError

    def step(self, fits: list[int]) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """What happens before the first step of :meth:`run`."""

    def gradient_snr(self, fits: list[int], draws: int) -> dict[int, dict] | None:
        """Each of ``fits``' training-gradient signal-to-noise now, measured at once (per fit, per group, as
        :meth:`~elbogap.inference.Trainer.gradient_snr` gives it); None where the stack does not (each run measures
        its own)."""
        return None

    def after_training(self, config, data, run_dirs: list) -> dict[int, dict[str, float]]:
        """What the stack does for its runs once they are trained, before each is saved and evaluated; per fit, the
        seconds of its share by phase (here nothing)."""
        return {}

    def run(self, should_stop=lambda: None, bar=None, on_step=lambda fits: None) -> None:
        """Step the active fits until none is left; ``should_stop()`` (a signal number or None) is asked before
        every step and, when it answers, training returns at once; ``on_step(fits)`` follows every step of the fits
        ``fits``."""
        self.start()
        while fits := self.active():
            if should_stop():
                return
            self.step(fits)
            if bar is not None:
                bar.update()
            on_step(fits)

    @torch.no_grad()
    def write_back(self, g: int | None = None) -> None:
        """Copy every fit's stacked parameters (or fit ``g``'s) into its own module, which then stands alone."""
        for fit in range(len(self.modules)) if g is None else [g]:
            for name, param in self.modules[fit].named_parameters(remove_duplicate=False):
                param.copy_(self.params[name][fit])


class RowAdam:
    """Pyro's ``ClippedAdam`` for stacked leaves, each row (fit) at its own learning rate and step count.

    Written here: torch's optimizers keep one rate per parameter group, not per row of a tensor. Before each of a
    row's steps its rate is multiplied by ``lr_decay`` and its gradient clamped to ``[-10, 10]``, as ClippedAdam's.

    :param leaves: the stacked parameters, ``(G, ...)`` each.
    :param float lr: every row's initial rate.
    """

    def __init__(self, leaves: list[torch.Tensor], lr: float, lr_decay: float = 1.0):
        count = leaves[0].shape[0]
        self.leaves, self.lr_decay = leaves, lr_decay
        self.lr = torch.full((count,), float(lr), dtype=torch.float64)
        self.steps = torch.zeros(count)
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in leaves]

    @torch.no_grad()
    def update(self, rows: list[int]) -> None:
        """One step of the rows ``rows`` from the leaves' ``.grad`` (rates and step counts kept on the CPU)."""
        if not rows:
            return
        every = len(rows) == len(self.lr)  # then in place, without gathering the rows
        index = slice(None) if every else torch.tensor(rows)
        self.lr[index] *= self.lr_decay
        self.steps[index] += 1
        t = self.steps[index]
        correction1, correction2 = 1 - BETAS[0] ** t, 1 - BETAS[1] ** t
        device = self.leaves[0].device
        step_size = (self.lr[index].float() * correction2.sqrt() / correction1).to(device)
        index = index if every else index.to(device)
        for leaf, (mean, square) in zip(self.leaves, self.moments, strict=True):
            grad = leaf.grad[index].clamp(-CLIP, CLIP)
            m = mean[index].mul_(BETAS[0]).add_(grad, alpha=1 - BETAS[0])
            v = square[index].mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
            shape = (-1,) + (1,) * (leaf.dim() - 1)
            if every:
                leaf.addcdiv_(m * step_size.reshape(shape), v.sqrt().add_(EPS), value=-1)
            else:
                mean[index], square[index] = m, v
                leaf[index] = leaf[index] - step_size.reshape(shape) * m / (v.sqrt() + EPS)

    def row(self, g: int) -> dict:
        """Row ``g``'s state (a copy): step count and the moments of every leaf (its rate is the schedule's)."""
        return {"step": float(self.steps[g]),
                "moments": [(mean[g].clone(), square[g].clone()) for mean, square in self.moments]}

    @torch.no_grad()
    def set_row(self, g: int, state: dict) -> None:
        self.steps[g] = state["step"]
        for (mean, square), (saved_mean, saved_square) in zip(self.moments, state["moments"], strict=True):
            mean[g], square[g] = saved_mean, saved_square

    def state_dict(self) -> dict:
        return {"adam": [(mean.clone(), square.clone()) for mean, square in self.moments],
                "adam_steps": self.steps.clone(), "lr": self.lr.clone()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for (mean, square), (saved_mean, saved_square) in zip(self.moments, state["adam"], strict=True):
            mean.copy_(saved_mean)
            square.copy_(saved_square)
        self.steps.copy_(state["adam_steps"])
        self.lr.copy_(state["lr"])

    def load_into(self, g: int, optimizer, params: list[torch.Tensor], leaf_of: list[int]) -> None:
        """Row ``g``'s state into a lone run's ``ClippedAdam`` over ``params`` (``params[i]`` is row ``g`` of leaf
        ``leaf_of[i]``), so that the run, resumed alone, steps on as the stack would have."""
        step = int(self.steps[g])
        for group in optimizer.param_groups:
            group["lr"] = float(self.lr[g])
        if step == 0:
            return
        for param, leaf in zip(params, leaf_of, strict=True):
            mean, square = self.moments[leaf]
            optimizer.state[param] = {"step": step, "exp_avg": mean[g].clone(), "exp_avg_sq": square[g].clone()}


def load_adam(adam: RowAdam, g: int, trainer, module: nn.Module, leaf_of: dict[str, int]) -> None:
    """Fit ``g``'s Adam state into ``trainer``'s optimizer, where every tensor it updates is a parameter of ``module``
    (fit ``g``'s own, named as in the stack: ``leaf_of[name]`` is its leaf); else its optimizer starts afresh."""
    names = {id(param): name for name, param in module.named_parameters(remove_duplicate=False)}
    params = trainer.svi.params
    if trainer.svi.optimizer is not None and all(id(param) in names for param in params):
        adam.load_into(g, trainer.svi.optimizer, params, [leaf_of[names[id(param)]] for param in params])
