"""Pyro's SVI step without its per-step bookkeeping: one optimizer, parameters found once, a compiled loss."""

import os
import warnings
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.optim.clipped_adam import ClippedAdam

from elbogap.device import rng_devices
from elbogap.inference.objectives import make_objective


def find_params(model, guide, *args, **kwargs) -> list[torch.Tensor]:
    """The unconstrained tensors of every param site that ``guide`` and ``model`` (replayed on it) reach.

    The programs are run once on ``args`` with the random number generator left as it was.
    A model wrapped in ``poutine.block(hide_types=["param"])`` contributes nothing: it is held fixed.
    """
    with torch.random.fork_rng(devices=rng_devices(*args)), poutine.block():
        with poutine.trace(param_only=True) as capture:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            poutine.replay(model, trace=guide_trace)(*args, **kwargs)
    store = pyro.get_param_store()
    params = {id(value): value for value in (store[name].unconstrained() for name in capture.trace.nodes)}
    return list(params.values())


#: the starts of torch's TracerWarnings for a Python value taken from a tensor, which a trace freezes as a constant
VALUE_TAKEN = ("Converting a tensor to a Python", "Converting a tensor to a NumPy", "Iterating over a tensor")
#: where the code lies whose values a trace may freeze: torch's, Pyro's and elbogap's own (static shapes and
#: constants); a user's program is checked
LIBRARIES = tuple(f"{folder}{os.sep}" for folder in (*(Path(module.__file__).parent for module in (torch, pyro)),
                                                     Path(__file__).parents[1]))


def takes_a_value(warning: warnings.WarningMessage) -> bool:
    """Whether a trace's ``warning`` says that code outside :data:`LIBRARIES` (a user's program) took a Python value
    from a tensor: a branch, or a number, that the traced graph would hold fixed whatever the draws."""
    return (issubclass(warning.category, torch.jit.TracerWarning) and str(warning.message).startswith(VALUE_TAKEN)
            and not str(warning.filename).startswith(LIBRARIES))


def shapes(args) -> tuple:
    return tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else None for a in args)


class FastSVI:
    r"""The update of :class:`pyro.infer.SVI` with ``pyro.optim.ClippedAdam``, at a fraction of its overhead.

    Every step estimates the loss and its gradients with a Pyro ELBO and takes one Adam step,
    with gradients clamped to ``[-10, 10]`` and the learning rate multiplied by ``lr_decay``
    first, exactly as :class:`pyro.optim.ClippedAdam` does. Three things differ from ``SVI``:

    - the parameters are found once, by :func:`find_params` on the example arguments, instead
      of by a param-capturing trace on every step (params a program creates later are not fitted);
    - one :class:`~pyro.optim.clipped_adam.ClippedAdam` updates them all, instead of one
      optimizer per tensor (the update of each tensor is the same);
    - with ``jit``, the loss is Pyro's compiled ELBO (:class:`~pyro.infer.JitTrace_ELBO`):
      the programs are traced once, for arguments shaped like ``example_args``, and then run as
      one TorchScript graph. Arguments of another shape (an epoch's short last batch) and steps
      with ``eager=True`` use the same ELBO uncompiled. Compiling leaves the random number
      generator untouched, so a run is reproducible whenever it was (re)started. The compiled
      and the uncompiled loss are the same estimator, but they draw their standard normals
      through different kernels, so their samples differ.

    Positional arguments of the programs must be tensors and keyword arguments hashable
    constants (Pyro's JIT keys its graphs on them). With ``strict_trace`` (a user's program, compiled
    only where its rows are the same at every step), a trace in which the program's code takes a
    Python value from a tensor (:func:`takes_a_value`) is dropped and the loss runs uncompiled,
    without a warning.
    ``gradient`` picks the loss of the estimator
    (see :func:`~elbogap.inference.objectives.make_objective`); for ``"stl"`` and ``"dreg"`` the
    ``guide`` is the program of :func:`~elbogap.inference.stl.stl_guide`.
    """

    def __init__(self, model, guide, example_args: tuple, example_kwargs: dict | None = None,
                 lr: float = 1e-3, lr_decay: float = 1.0, objective: str = "elbo", num_particles: int = 1,
                 jit: bool = False, vectorize: bool = True, gradient: str = "reparam", max_plate_nesting: int = 1,
                 strict_trace: bool = False):
        self.model, self.guide = model, guide
        self.params = find_params(model, guide, *example_args, **(example_kwargs or {}))
        self.optimizer = ClippedAdam(self.params, lr=lr, lrd=lr_decay, clip_norm=10.0) if self.params else None
        self.loss: ELBO = make_objective(objective, num_particles, vectorize=vectorize, gradient=gradient,
                                         max_plate_nesting=max_plate_nesting)
        # the compiled loss needs something to differentiate (JitTrace_ELBO always calls backward)
        self.compiled_loss = (make_objective(objective, num_particles, jit=True, gradient=gradient,
                                             jit_warnings=strict_trace) if jit and self.params else None)
        self._compiled_shape = shapes(example_args)
        self._traced = False
        self.strict_trace = strict_trace

    def step(self, *args, eager: bool = False, **kwargs) -> float:
        """One gradient step; returns the loss (the negative ELBO estimate) before it."""
        loss = self.loss if eager or not self._use_compiled(args, kwargs) else self.compiled_loss
        value = loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad()
        return value

    def _use_compiled(self, args, kwargs) -> bool:
        if self.compiled_loss is None:
            return False
        if shapes(args) != self._compiled_shape:
            return False
        if not self._traced:
            try:
                with torch.random.fork_rng(devices=rng_devices(*args)), warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always", torch.jit.TracerWarning)
                    # torch 2.13 deprecates torch.jit.trace, on which Pyro's JIT ELBOs are built
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.compiled_loss.differentiable_loss(self.model, self.guide, *args, **kwargs)
                branches = [w for w in seen if self.strict_trace and takes_a_value(w)]
                for w in seen:
                    if not issubclass(w.category, torch.jit.TracerWarning):  # the programs' own warnings
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                if branches:
                    raise ValueError(f"{branches[0].filename}:{branches[0].lineno} takes a value from a tensor")
            except Exception as error:  # e.g. a custom autograd Function, which TorchScript cannot trace
                if not self.strict_trace:  # a program that may not be traced runs as it always did
                    warnings.warn(f"the loss could not be compiled ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0][:120]}); it runs uncompiled", stacklevel=3)
                self.compiled_loss = None
                return False
            self._traced = True
        return True

    @property
    def compiled(self) -> bool:
        """Whether steps run the compiled loss (once it has been traced)."""
        return self.compiled_loss is not None

    def scale_lr(self, factor: float) -> None:
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] *= factor

    @property
    def lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups] if self.optimizer is not None else []

    def state_dict(self) -> dict:
        return self.optimizer.state_dict() if self.optimizer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state)
