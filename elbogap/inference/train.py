"""Stochastic variational inference: fit a model and a guide by maximizing an ELBO."""

import contextlib
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from tqdm.auto import tqdm

from elbogap.errors import UsageError
from elbogap.inference.objectives import make_objective


@dataclass
class TrainResult:
    """Per-step training loss (negative ELBO per data point) and wall time of the loop."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Hold a module's parameters fixed: no gradients, and hidden from the SVI optimizer."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)


def minibatches(num_data: int, batch_size: int, generator: torch.Generator):
    """Endless index batches, reshuffled every epoch; the data stays one tensor."""
    while True:
        order = torch.randperm(num_data, generator=generator)
        yield from order.split(batch_size)


def make_svi(model, guide, lr: float = 1e-3, objective: str = "elbo", num_particles: int = 1,
             freeze_model: bool = False, lr_decay: float = 1.0) -> SVI:
    """Pyro's :class:`~pyro.infer.SVI` over ``model.model`` and ``guide.guide`` with Adam.

    The learning rate is multiplied by ``lr_decay`` after every step (Pyro's ClippedAdam,
    which also clips gradient norms at 10). With ``freeze_model`` the model's parameter sites
    are hidden from SVI, so only the guide's parameters are optimized.
    """
    model_fn = poutine.block(model.model, hide_types=["param"]) if freeze_model else model.model
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay, "clip_norm": 10.0})
    return SVI(model_fn, guide.guide, optim, make_objective(objective, num_particles))


def train(model, guide, x: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 1e-3,
          objective: str = "elbo", num_particles: int = 1, seed: int = 0,
          freeze_model: bool = False, lr_decay: float = 1.0, progress: bool = False,
          desc: str = "") -> TrainResult:
    r"""Maximize an ELBO over the guide's (and, unless frozen, the model's) parameters with SVI.

    Each step takes a minibatch of ``batch_size`` rows of ``x``; the data plate scales it by
    ``len(x) / batch_size`` so that every step estimates the full-data bound. The recorded
    loss is the negative ELBO per data point.

    :param model: a :class:`~elbogap.model.LatentModel`.
    :param guide: a :class:`~elbogap.guides.Guide`.
    :param torch.Tensor x: training data, one row per data point.
    :param int steps: number of SVI steps.
    :param str objective: ``"elbo"``, ``"meanfield"`` or ``"iwae"`` (see :func:`make_objective`).
    :param bool freeze_model: keep the model's parameters fixed and fit only the guide.
    :param float lr_decay: factor applied to the learning rate after every step.
    """
    if steps < 0:
        raise UsageError(f"--steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if lr <= 0:
        raise UsageError(f"--lr must be > 0, got {lr}")
    num_data = len(x)
    svi = make_svi(model, guide, lr, objective, num_particles, freeze_model, lr_decay)
    batches = minibatches(num_data, min(batch_size, num_data), torch.Generator().manual_seed(seed))
    result = TrainResult()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    start = time.perf_counter()
    with frozen(model) if freeze_model else contextlib.nullcontext():
        for step in range(steps):
            index = next(batches)
            loss = svi.step(x[index], index, num_data) / num_data
            result.losses.append(loss)
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(elbo=f"{-loss:.3f}")
    result.seconds = time.perf_counter() - start
    bar.close()
    return result


def refit_guide(model, guide, x: torch.Tensor, lr: float = 0.05, max_steps: int = 4000,
                window: int = 100, tol: float = 1e-3, num_particles: int = 8,
                lr_drops: int = 2) -> TrainResult:
    r"""Fit the guide's parameters to ``x`` with the model held fixed, until the ELBO stops rising.

    Full-batch SVI. Every ``window`` steps the window's mean loss is compared with the previous
    window's; when it improves by less than ``tol`` nats per data point the learning rate drops
    tenfold, and after ``lr_drops`` drops fitting stops (or after ``max_steps``). This is how a
    per-datapoint guide gets its parameters for a split it was not trained on.
    """
    result = TrainResult()
    if not any(True for _ in guide.parameters()):
        return result  # nothing to fit (e.g. the exact posterior)
    svi = make_svi(model, guide, lr, "elbo", num_particles, freeze_model=True)
    start = time.perf_counter()
    previous, drops = float("inf"), 0
    with frozen(model):
        while len(result.losses) < max_steps:
            window_losses = [svi.step(x) / len(x) for _ in range(window)]
            result.losses += window_losses
            current = sum(window_losses) / window
            if previous - current < tol:
                if drops == lr_drops:
                    break
                drops += 1
                for optimizer in svi.optim.optim_objs.values():
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.1
            previous = current
    result.seconds = time.perf_counter() - start
    return result
