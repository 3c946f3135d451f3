"""A user's own Pyro programs, from ``path/to/file.py:name`` or ``package.module:name``, as they are written.

``name`` may be a function, a bound method, or a class (built with no arguments, or as
``cls(data_dim, latent_dim)``) whose instances have ``.model`` and/or ``.guide``. The sites are
found from a trace: the observed site(s), and the latent site(s) inside the data plate.
"""

import difflib
import importlib
import importlib.util
import inspect
import math
import sys
import traceback
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_messenger import TraceHandler
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import constraints, transform_to

from elbogap.errors import UsageError
from elbogap.sites import (
    check_unscaled_latents,
    data_plates,
    is_per_point,
    plain_support,
    real_line_map,
    unconstrained_shapes,
)

#: Python objects handed to the notebook API (:mod:`elbogap.api`), named ``object:NAME`` in configurations.
OBJECTS: dict[str, object] = {}


def register_object(name: str, obj) -> str:
    """Keep ``obj`` under ``name`` for this process and return the spec ``object:NAME`` that names it."""
    OBJECTS[name] = obj
    return f"object:{name}"


def is_user_model(spec: str) -> bool:
    """Whether a ``--model`` or ``--guides`` entry names a user's program (``file.py:name``, ``package.mod:name``)."""
    return ":" in spec and not spec.startswith("auto:")


def is_autoguide(spec: str) -> bool:
    """Whether a ``--guides`` entry names one of Pyro's autoguides (``auto:AutoNormal``)."""
    return spec.startswith("auto:")


def display_name(spec: str) -> str:
    """The short name of a spec in results and run directories: ``dir/my_vae.py:VAE`` -> ``my_vae.VAE``."""
    target, _, name = spec.rpartition(":")
    if target == "object":
        return name
    stem = Path(target).stem if target.endswith(".py") else target.rpartition(".")[2]
    return f"{stem}.{name}"


def import_target(spec: str, modules: dict | None = None):
    """The object ``name`` of ``file.py:name`` or ``package.module:name``.

    A file is executed afresh on every call (each run gets its own module-level networks), except
    when ``modules`` (a cache the caller keeps for one run) already holds it.
    """
    target, _, name = spec.rpartition(":")
    if target == "object":
        if name not in OBJECTS:
            raise UsageError(f"{spec} names a Python object handed to elbogap.compare in another process; "
                             "pass the object again, or save the program in a file and name it file.py:name")
        return OBJECTS[name]
    if not target or not name:
        raise UsageError(f"--model {spec!r} must look like path/to/file.py:name or package.module:name")
    try:
        if modules is not None and target in modules:
            module = modules[target]
        elif target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise UsageError(f"program file {path} does not exist; check the path in {spec}")
            module_name = f"elbogap_user_{path.stem}"
            loader = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # its own imports of modules beside it work, as when Python runs the file
                sys.path.append(folder)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as error:  # the user's module failed to import: say where, not how Python failed
        raise UsageError(f"cannot import {target} for {spec}: {type(error).__name__}: {error}") from None
    if modules is not None:
        modules[target] = module
    if not hasattr(module, name):
        names = [key for key, value in vars(module).items() if callable(value) and not key.startswith("_")]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"{target} has no {name!r}{hint}; {spec} needs an existing function or class name")
    return getattr(module, name)


def build_instance(cls, spec: str, data_dim: int, latent_dim: int):
    """An instance of a user's class: ``cls()`` if its constructor allows, else ``cls(data_dim, latent_dim)``."""
    signature = inspect.signature(cls)
    for args in ((), (data_dim, latent_dim)):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        try:
            return cls(*args)
        except Exception as error:
            raise UsageError(f"{spec}: {cls.__name__}{args if args else '()'} failed: "
                             f"{type(error).__name__}: {error}") from None
    raise UsageError(f"{spec}: the class {cls.__name__} can be built neither as {cls.__name__}() nor as "
                     f"{cls.__name__}(data_dim, latent_dim); give it a constructor of one of these forms")


def resolve_program(spec: str, role: str, data_dim: int, latent_dim: int, instances: dict | None = None,
                    modules: dict | None = None):
    """The callable Pyro program ``role`` (``"model"`` or ``"guide"``) that ``spec`` names.

    A function or bound method is the program itself (as a model or a guide); a class is built
    (once per ``instances`` cache, so that a class named as model and guide shares one instance)
    and its method ``role`` is the program. Returns ``(program, owner)``, ``owner`` being the
    instance (or None).
    """
    target = import_target(spec, modules)
    owner = None
    if inspect.isclass(target):
        if instances is not None and spec in instances:
            owner = instances[spec]
        else:
            owner = build_instance(target, spec, data_dim, latent_dim)
            if instances is not None:
                instances[spec] = owner
    elif not inspect.isroutine(target) and hasattr(target, role):
        owner = target  # an object that already is an instance
    if owner is not None:
        program = getattr(owner, role, None)
        if not callable(program):
            raise UsageError(f"{spec} has no .{role}(x) method; a class given as a {role} must define one")
        return program, owner
    if not callable(target):
        raise UsageError(f"{spec} is not callable; name a function, a method or a class with .{role}(x)")
    return target, None


def takes_index(fn) -> bool:
    """Whether a program accepts ``index`` and ``num_data`` (and so scales its own minibatches)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "index" in params and "num_data" in params


def call_scaled(fn, x, index=None, num_data=None):
    """Run a program on a minibatch: one that takes only ``x`` is scaled by ``num_data / len(x)``."""
    if takes_index(fn):
        return fn(x, index=index, num_data=num_data)
    scale = 1.0 if num_data is None else num_data / x.shape[0]
    with poutine.scale(scale=scale):
        return fn(x)


def trace_program(fn, x: torch.Tensor, spec: str, role: str):
    """One trace of a program on ``x``; a failure is refused in one line naming the spec, the reason and where in
    the program it arose (:func:`program_place`)."""
    try:
        return poutine.trace(fn).get_trace(x)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"the {role} {spec} failed on a batch of {len(x)} data points: "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                         f"{program_place(spec, error)}") from None


def program_place(spec: str, error: BaseException) -> str:
    """`` (file.py:line in function, at or after site 'x')``: the innermost frame of ``error`` in the module of the
    user's program ``spec`` (:func:`program_modules`), and the Pyro site (:func:`site_of`); ``""`` where no frame
    lies there."""
    modules = program_modules([spec])
    frames = list(traceback.walk_tb(error.__traceback__))
    inside = [(frame, line) for frame, line in frames if frame.f_globals.get("__name__") in modules]
    if not inside:
        return ""
    frame, line = inside[-1]
    return f" ({Path(frame.f_code.co_filename).name}:{line} in {frame.f_code.co_name}{site_of(frames)})"


def program_modules(specs) -> dict[str, str]:
    """The module each user's program among ``specs`` runs in (as :func:`~elbogap.user_model.import_target`
    loads it), mapped to its spec."""
    modules = {}
    for spec in specs:
        if not spec or not is_user_model(spec):
            continue
        target, _, name = spec.rpartition(":")
        if target == "object":
            module = getattr(OBJECTS.get(name), "__module__", None)
        elif target.endswith(".py"):
            module = f"elbogap_user_{Path(target).stem}"
        else:
            module = target
        if module:
            modules.setdefault(module, spec)
    return modules


def site_of(frames) -> str:
    """``", at site 'x'"`` inside a sample statement, ``", after site 'z'"`` from Pyro's trace, or ``""``."""
    for frame, _ in reversed(frames):
        message = frame.f_locals.get("msg")
        if frame.f_globals.get("__name__", "").startswith("pyro.") and isinstance(message, dict) \
                and message.get("type") == "sample" and message.get("name"):
            return f", at site {message['name']!r}"
    for frame, _ in reversed(frames):
        handler = frame.f_locals.get("self")
        if isinstance(handler, TraceHandler):
            names = [name for name, site in handler.msngr.trace.nodes.items()
                     if site["type"] == "sample" and not site_is_subsample(site)]
            return f", after site {names[-1]!r}" if names else ", before its first site"
    return ""


def sample_sites(trace) -> dict:
    """The sample sites of a trace that are not plate subsample sites, nor the records ``pyro.deterministic`` keeps
    (an observed Delta at the value, of density 1, whose event takes every dimension of its value by default)."""
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("_deterministic")}


def check_log_probs(trace, what: str) -> None:
    """Refuse in one line a trace whose values do not fit their distributions, naming the site and both shapes.

    Each site's value must have its distribution's whole shape (batch + event): one that cannot
    broadcast with the value (a decoder of the wrong width) has no log p, and one larger than the
    value (too many dimensions given to ``.to_event()``) would count the value more than once.
    Then ``log_prob`` itself must run (the value in the support, ...). ``what`` names the
    program, e.g. ``"the model my.py:model"``.
    """
    for name, site in sample_sites(trace).items():
        fn, value = site["fn"], site["value"]
        shape = fn.batch_shape + fn.event_shape
        shapes = (f"a value of shape {tuple(value.shape)} but a distribution of shape {tuple(shape)} "
                  f"(batch {tuple(fn.batch_shape)} + event {tuple(fn.event_shape)})")
        fix = ("make the distribution's shape the data's (the shape of its parameters, e.g. a weight vector's "
               "length or a network's output width; .to_event(n) with n the data's dimensions per point)"
               if site["is_observed"]
               else "sample it in the model's shape")
        try:
            fits = torch.broadcast_shapes(value.shape, shape) == value.shape
        except RuntimeError:
            raise UsageError(f"{what}: the site {name!r} has {shapes}; {fix}") from None
        if not fits:
            raise UsageError(f"{what}: the site {name!r} has {shapes}, so its log p would count the value more "
                             f"than once; {fix}")
        try:
            fn.log_prob(value, *site["args"], **site["kwargs"])
        except (ValueError, RuntimeError) as error:
            if (outside := first_outside_support(fn, value)) is not None:
                raise UsageError(f"{what}: the site {name!r} holds {outside}, outside the support {fn.support} of "
                                 f"its {type(fn).__name__}; give the site values its distribution can take (observed "
                                 "data: check the file, or choose a likelihood whose support holds them)") from None
            reason = str(error).splitlines()[0].rstrip(":") if str(error) else type(error).__name__
            raise UsageError(f"{what}: log p at the site {name!r} (value of shape {tuple(value.shape)}) fails: "
                             f"{reason}; give the site values its distribution can take") from None


def first_outside_support(fn, value: torch.Tensor) -> str | None:
    """Where a site's value first leaves its distribution's support, as ``"2 at index (17,) of its value"`` (the row
    first, for an observed site in a data plate), or None where the support check does not find it."""
    try:
        inside = elementwise(fn.support).check(value)  # the element, not its row
    except (NotImplementedError, RuntimeError, ValueError):
        return None
    outside = (~inside.bool()).nonzero()
    if not len(outside):
        return None
    index = tuple(int(i) for i in outside[0])
    element = value[index]
    shown = f"{float(element):g}" if element.numel() == 1 else f"a value of shape {tuple(element.shape)}"
    if value.dim() == 2 and len(index) == 2 and value.shape[1] <= 12:  # a row of the data: say what it reads
        row = ", ".join(f"{float(number):g}" for number in value[index[0]])
        return f"{shown} in column {index[1] + 1} of the row {row}"
    return f"{shown} at index {index} of its value" if index else shown


#: rows of data per trace where every row is checked (:func:`check_every_row`)
ROWS_PER_CHECK = 4096


def check_unsubsampled(trace, fn, spec: str) -> None:
    """Refuse in one line a program that takes only ``x`` and subsamples a plate itself (``subsample_size``): elbogap
    feeds it minibatches and scales them, and a guide's plate over the whole batch then met the model's subsample
    inside the run, in Pyro's words ("Did you accidentally use different subsample_size in the model and guide?").
    A program that takes ``(x, index, num_data)`` subsamples by ``index``, as it should."""
    if takes_index(fn):
        return
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site_is_subsample(site) and len(site["value"]) < site["fn"].size:
            raise UsageError(f"the model {spec} subsamples its plate {name!r} ({len(site['value'])} of "
                             f"{site['fn'].size} rows): elbogap feeds it minibatches itself (--batch-size); drop "
                             "subsample_size, or take (x, index, num_data) and use pyro.plate(..., num_data, "
                             "subsample=index)")


def check_every_row(model: "ProgramModel", splits: dict[str, torch.Tensor]) -> None:
    """Refuse in one line data outside the likelihood's support in any row, not only in the 3 rows the program was
    first traced on: the model is traced on every row of each split, ``ROWS_PER_CHECK`` at a time, and its sites are
    checked as on its first trace (:func:`check_log_probs`). Found later, a run failed with a traceback."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for split, x in splits.items():
            for rows in x.split(ROWS_PER_CHECK):
                what = f"the model {model.spec} on the {split} split"
                trace = trace_program(model.model, rows, model.spec, "model")
                check_unsubsampled(trace, model.fn, model.spec)
                check_log_probs(trace, what)


def check_program_rows(config, data) -> None:
    """A user's per-point program (``config.model``) checked on every row of ``data``'s splits
    (:func:`check_every_row`): its first trace saw 3 rows. elbogap's own models need no check."""
    if is_user_model(config.model):
        check_every_row(load_user_model(config.model, data.train[:3], config.latent_dim),
                        {"train": data.train, "test": data.test})


def check_guide_draws(model_program, guide_trace, x: torch.Tensor, model_spec: str, guide_spec: str) -> None:
    """Refuse in one line a guide whose draws the model cannot score: its own log q, then the model's
    log p replayed on the guide's trace, must fit their values (see :func:`check_log_probs`)."""
    check_log_probs(guide_trace, f"the guide {guide_spec}")
    on_draws = f"{model_spec} on the draws of the guide {guide_spec}"
    with torch.random.fork_rng(devices=[]):
        replayed = trace_program(poutine.replay(model_program, trace=guide_trace), x, on_draws, "model")
    check_log_probs(replayed, f"the model {on_draws}")


def site_shapes(trace) -> dict[str, tuple]:
    return {name: tuple(site["value"].shape) for name, site in sample_sites(trace).items()}


def check_stable(program, x: torch.Tensor, first, spec: str) -> None:
    """Refuse a model whose second trace on ``x`` differs from ``first`` in its sample sites or their shapes.

    The second trace draws its own random numbers (so control flow that depends on draws shows)
    without moving the random state the rest of the run starts from.
    """
    with torch.random.fork_rng(devices=[]):
        second = trace_program(program, x, spec, "model")
    before, after = site_shapes(first), site_shapes(second)
    if before == after:
        return
    only = [name for name in {**before, **after} if (name in before) != (name in after)]
    if only:
        change = f"site {only[0]!r} appears in one trace only"
    else:
        name = next(name for name in before if before[name] != after[name])
        change = f"site {name!r} has shape {before[name]} then {after[name]}"
    raise UsageError(f"the model {spec}'s trace changes between calls on the same data: {change}; elbogap needs "
                     "the same sites, of the same shapes, on every call")


def find_sites(trace, x: torch.Tensor, spec: str) -> tuple[dict[str, torch.Size], list[str], str]:
    """The latent sites inside the data plate (name -> per-point shape), the observed sites and the data plate's name.

    Refused in one line: no observed site, a latent site outside the data plate (a global
    latent), a discrete latent (elbogap's estimators integrate continuous latents), and a latent
    whose per-point value is not its event (an extra plate inside the data plate).
    """
    samples = sample_sites(trace)
    observed = [name for name, site in samples.items() if site["is_observed"]]
    if not observed:
        raise UsageError(f"the model {spec} has no observed site; observe the data with pyro.sample(..., obs=x)")
    plates = data_plates(samples)
    latents = {}
    for name, site in samples.items():
        if site["is_observed"]:
            continue
        value = site["value"]
        if not is_per_point(site, plates, len(x)):
            raise UsageError(f"the model {spec} has a latent site {name!r} outside the data plate (a global latent); "
                             "elbogap measures per-point posteriors: make it a parameter or move it into the plate")
        if site["fn"].support.is_discrete:
            raise UsageError(f"the model {spec} has a discrete latent site {name!r}; elbogap's estimators need "
                             "continuous latents and do not enumerate: sum it out by hand, e.g. a "
                             "MixtureSameFamily likelihood, or make it continuous")
        if tuple(value.shape[1:]) != tuple(site["fn"].event_shape):
            raise UsageError(f"the model {spec}: the latent site {name!r} has shape {tuple(value.shape)} per batch "
                             f"but event shape {tuple(site['fn'].event_shape)}; declare its per-point dimensions "
                             "with .to_event()")
        latents[name] = site["fn"].event_shape
    if not latents:
        raise UsageError(f"the model {spec} has no latent site inside its data plate; there is no posterior to measure")
    first = samples[next(iter(latents))]
    plate = next(frame.name for frame in first["cond_indep_stack"] if frame.name in plates)
    return latents, observed, plate


def broadcasts_over_draws(program, x: torch.Tensor) -> bool:
    """Whether ``program`` runs under an outer plate of draws, as Pyro's vectorized particles run it.

    A program that reshapes or indexes its latents as ``(batch, ...)`` does not; elbogap then lays
    draws out as rows of one batch and draws ELBO particles one after another.
    """
    rows = 5 if x.shape[-1] != 5 else 7  # a batch size no other dimension shares, so no broadcast is accidental
    probe = x[:1].expand(rows, *x.shape[1:])
    try:
        with torch.no_grad(), pyro.plate("elbogap_probe", 2, dim=-2):
            trace = poutine.trace(poutine.block(program, hide_types=["param"])).get_trace(probe)
        trace.compute_log_prob()
    except Exception:  # any failure means: do not broadcast
        return False
    return all(site["log_prob"].shape == (2, rows) for site in sample_sites(trace).values())


def elementwise(support):
    """``support`` without its ``independent`` and mixture wrappers: the constraint each element meets."""
    support = plain_support(support)
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def is_real_line(support) -> bool:
    return elementwise(support) is constraints.real


def support_transforms(trace, latents: dict, spec: str) -> dict:
    """``biject_to(support)`` for each latent site not on the real line (one that changes the shape, as a simplex's
    stick-breaking map does, too: :func:`~elbogap.sites.unconstrained_shapes`)."""
    return {name: real_line_map(trace.nodes[name]["fn"].support, name, spec) for name in latents
            if not is_real_line(trace.nodes[name]["fn"].support)}


class ProgramModel(nn.Module):
    r"""A user's Pyro model program, as written: any site names, one or more latent sites.

    ``latent_sites`` maps each latent site inside the data plate to its per-point shape;
    ``latent_dim`` is their total size on the real line (the dimension evaluation and AIS work in; a simplex of K
    values counts K - 1, :func:`~elbogap.sites.unconstrained_shapes`);
    ``observed_sites`` are the observed sites. A program that takes only ``x`` is scaled by
    ``num_data / len(x)`` for minibatches. Its parameters live in Pyro's param store
    (``pyro.param`` / ``pyro.module``); :meth:`state_dict` saves them for checkpoints.
    """

    has_exact_posterior = False
    jit_compatible = False  # a user's program may branch on its data; it runs uncompiled
    jit_on_fixed_rows = True  # but a refit's rows are the same at every step: traced there, unless it branches
    broadcasts_draws = False  # until a probe shows it (see broadcasts_over_draws); else draws go in as rows

    def __init__(self, fn, example_x: torch.Tensor, spec: str = "model", owner=None):
        super().__init__()
        self.fn, self.spec = fn, spec
        self.takes_index = takes_index(fn)
        if isinstance(owner, nn.Module):
            self.owner = owner  # its networks move with .to(device)
        trace = trace_program(self.model, example_x, spec, "model")
        self.latent_sites, self.observed_sites, self.data_plate = find_sites(trace, example_x, spec)
        check_log_probs(trace, f"the model {spec}")
        check_unscaled_latents(trace, spec)
        check_stable(self.model, example_x, trace, spec)
        self.latent_transforms = support_transforms(trace, self.latent_sites, spec)
        self.latent_supports = {name: trace.nodes[name]["fn"].support for name in self.latent_transforms}
        self.broadcasts_draws = broadcasts_over_draws(self.model, example_x)
        self.latent_dim = sum(math.prod(shape) for shape in unconstrained_shapes(self).values())
        self.data_dim = example_x.shape[-1]
        self.param_names = [name for name, site in trace.nodes.items() if site["type"] == "param"]

    def model(self, x, index=None, num_data=None):
        return call_scaled(self.fn, x, index, num_data)

    def state_dict(self, *args, **kwargs):
        return params_state(self.param_names)

    def load_state_dict(self, state, strict: bool = True):
        load_params_state(state)


def params_state(names) -> dict:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in names if name in store}


def load_params_state(state: dict) -> None:
    """Set param-store entries to saved constrained values, in place where they exist.

    The store keeps each parameter unconstrained; a constrained one (``constraint=positive``, ...)
    is set through the inverse of its constraint's transform, into the same tensor, so networks
    registered with ``pyro.module`` and optimizers keep theirs.
    """
    store = pyro.get_param_store()
    constraints = store.get_state()["constraints"]
    for name, value in state.items():
        if name not in store:
            store[name] = value
            continue
        unconstrained = store[name].unconstrained()
        with torch.no_grad():
            unconstrained.copy_(transform_to(constraints[name]).inv(value.to(unconstrained)))


def load_user_model(spec: str, example_x: torch.Tensor, latent_dim: int | None = None, instances: dict | None = None,
                    modules: dict | None = None) -> ProgramModel:
    """The user's model program that ``spec`` names, its sites found from a trace on ``example_x``."""
    program, owner = resolve_program(spec, "model", example_x.shape[-1], latent_dim, instances, modules)
    return ProgramModel(program, example_x, spec, owner)
