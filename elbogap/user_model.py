"""Load a user's own Pyro model from ``path/to/file.py:name`` or ``package.module:name``."""

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import pyro
import torch
from pyro import poutine
from torch import nn

from elbogap.errors import UsageError


def is_user_model(spec: str) -> bool:
    return ":" in spec


def import_target(spec: str):
    """The object ``name`` of ``file.py:name`` or ``package.module:name``."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise UsageError(f"--model {spec!r} must look like path/to/file.py:fn or package.module:fn")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise UsageError(f"model file {path} does not exist; check the path in --model")
            module_name = f"elbogap_user_{path.stem}"
            loader = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as error:  # the user's module failed to import: say where, not how Python failed
        raise UsageError(f"cannot import {target} for --model: {type(error).__name__}: {error}") from None
    if not hasattr(module, name):
        raise UsageError(f"{target} has no {name!r}; --model needs an existing function or class name")
    return getattr(module, name)


class UserModel(nn.Module):
    r"""A user's Pyro program ``fn(x, index=None, num_data=None)`` with a latent site ``"z"`` and an
    observed site ``"x"`` inside the data plate (:func:`elbogap.plates.data_plate` or a
    ``pyro.plate("data", ...)``).

    A function that takes only ``x`` is scaled by ``num_data / len(x)`` for minibatches. Its
    parameters live in Pyro's param store (``pyro.param`` / ``pyro.module``); :meth:`state_dict`
    saves them for checkpoints.
    """

    has_exact_posterior = False
    jit_compatible = False  # a user's program may branch on its data; it runs uncompiled

    def __init__(self, fn, example_x: torch.Tensor):
        super().__init__()
        self.fn = fn
        params = inspect.signature(fn).parameters
        self.takes_index = "index" in params and "num_data" in params
        try:
            trace = poutine.trace(self.model).get_trace(example_x)
        except Exception as error:
            raise UsageError(f"the model {fn.__name__} failed on the data: {type(error).__name__}: {error}") from None
        missing = [site for site in ("z", "x") if site not in trace.nodes]
        if missing or not trace.nodes["x"]["is_observed"]:
            raise UsageError(f"the model {fn.__name__} needs a latent site 'z' and an observed site 'x' "
                             f"(missing: {', '.join(missing) or 'x is not observed'})")
        self.latent_dim = trace.nodes["z"]["value"].shape[-1]
        self.data_dim = example_x.shape[-1]
        self.param_names = [name for name, site in trace.nodes.items() if site["type"] == "param"]

    def model(self, x, index=None, num_data=None):
        if self.takes_index:
            return self.fn(x, index=index, num_data=num_data)
        scale = 1.0 if num_data is None else num_data / x.shape[0]
        with poutine.scale(scale=scale):
            return self.fn(x)

    def state_dict(self, *args, **kwargs):
        store = pyro.get_param_store()
        return {name: store[name].detach().clone() for name in self.param_names}

    def load_state_dict(self, state, strict: bool = True):
        store = pyro.get_param_store()
        for name, value in state.items():
            store[name] = value


def load_user_model(spec: str, example_x: torch.Tensor, latent_dim: int | None = None):
    """The user's model: a Pyro function (wrapped in :class:`UserModel`), or a class built as
    ``cls(data_dim, latent_dim)`` that provides ``.model(x, index, num_data)`` like
    :class:`~elbogap.model.LatentModel`."""
    target = import_target(spec)
    if inspect.isclass(target):
        model = target(example_x.shape[-1], latent_dim)
        if not callable(getattr(model, "model", None)):
            raise UsageError(f"{spec} builds an object without a .model(x, index, num_data) method")
        return model
    if not callable(target):
        raise UsageError(f"{spec} is not a function or class")
    return UserModel(target, example_x)
