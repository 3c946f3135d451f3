r"""A user's Pyro model with global latents, seen as one joint density over every latent of the data set.

For a model :math:`p(\theta)\, \prod_n p(z_n \mid \theta)\, p(x_n \mid z_n, \theta)` with global
latents :math:`\theta` (regression weights, hierarchical scales) beside or instead of per-point
latents :math:`z_n`, the posterior conditions on the whole data set :math:`D`, and the evidence
the ELBO bounds is :math:`\log p(D) = \log \int p(\theta, z_{1:N}, D)\, d\theta\, dz_{1:N}`.
Every latent site is mapped to the real line by ``biject_to(support)`` (as Pyro's HMC does) and
all of them are joined into one flat vector of :attr:`GlobalLatentModel.latent_dim` numbers; the
density of that vector carries the log-Jacobian of the map, so integrals over it (AIS) give the
same evidence as over the sites themselves.
"""

import inspect
import math

import pyro
import torch
from pyro import poutine
from torch import nn

from elbogap.errors import UsageError
from elbogap.global_latents.decentred import decentred, hierarchical_sites
from elbogap.inference.stacking import unvalidated
from elbogap.sites import check_unscaled_latents, data_plates, is_per_point, real_line_map, real_line_shapes, scored
from elbogap.user_model import (
    check_log_probs,
    check_stable,
    load_params_state,
    params_state,
    sample_sites,
    takes_index,
    trace_program,
)


def is_global_model(trace, x: torch.Tensor) -> bool:
    """Whether a model's trace on ``x`` has a latent site that is not one value per data point.

    A latent is per point when it lies in a plate of an observed site and its first dimension
    has one entry per row of ``x``; any other latent (outside every data plate, or a plate of
    another size) is global. Found from the trace, not declared.
    """
    samples = sample_sites(trace)
    plates = data_plates(samples)
    return any(not is_per_point(site, plates, len(x)) for site in samples.values() if not site["is_observed"])


def has_global_latents(program, rows: torch.Tensor) -> bool | None:
    """Whether a user's model program has global latents, judged from one trace on ``rows`` (a few of the data);
    None where it cannot run on them (a plate of fixed size needs all its rows, a broken program none): the caller
    says what that means, and the program's own failure is reported in one line where it is traced in full."""
    try:
        return is_global_model(probe_trace(program, rows), rows)
    except Exception:
        return None


def _program_arguments(fn):
    """Whether a program takes ``(x, index, num_data)``; refused if it needs other arguments than the data."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [p.name for p in parameters[1:] if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("index", "num_data")]
    if required:
        raise UsageError(f"the program {getattr(fn, '__qualname__', fn)} needs argument(s) {', '.join(required)} "
                         "beside the data; elbogap calls a program with one data tensor: put covariates into "
                         "the data's columns, or give them defaults")
    return takes_index(fn)


def check_whole_plates(trace, spec: str) -> None:
    """Refuse in one line a program that subsamples a plate by itself (``pyro.plate(..., subsample_size=...)``): its
    log joint is then a random estimate of the whole data set's, and log p(D), the ELBO of D and the reference need
    the log joint itself (annealing a random one never settles). ``trace`` is the program on every row."""
    for site in trace.nodes.values():
        for frame in site.get("cond_indep_stack", ()) if site["type"] == "sample" else ():
            if frame.full_size is not None and frame.size < frame.full_size:
                raise UsageError(f"the model {spec} subsamples its plate {frame.name!r} by itself ({frame.size} of "
                                 f"{frame.full_size} at a time): log p(D) and the ELBO of D need the whole data set's "
                                 "log joint at every evaluation; drop subsample_size, or take (data, index=None, "
                                 "num_data=None) and pass subsample=index to the plate, so that elbogap picks the "
                                 "rows (minibatches in training, every row in evaluation)")


class GlobalLatentModel(nn.Module):
    r"""A user's model program with global latents, judged on the whole data set.

    :param fn: the Pyro program ``fn(data)`` (or ``fn(data, index, num_data)`` with a subsampled
        data plate), which samples its latents and observes ``data``.
    :param torch.Tensor data: the data set :math:`D`, one row per data point.
    :param str spec: the program's name, for messages.

    Attributes: ``latent_sites`` (each latent site's whole value shape), ``global_sites`` and
    ``local_sites`` (which are per data point), ``latent_dim`` (the flat vector's size),
    ``observed_sites``, ``transforms`` (``biject_to`` of each site's support).
    """

    kind = "global"
    has_exact_posterior = False
    jit_compatible = False
    broadcasts_draws = False
    amortizable = False

    def __init__(self, fn, data: torch.Tensor, spec: str = "model", owner=None):
        super().__init__()
        self.fn, self.spec = fn, spec
        self.takes_index = _program_arguments(fn)
        if isinstance(owner, nn.Module):
            self.owner = owner
        trace = trace_program(self.full_program, data, spec, "model")
        samples = sample_sites(trace)
        self.observed_sites = [name for name, site in samples.items() if site["is_observed"]]
        if not self.observed_sites:
            raise UsageError(f"the model {spec} has no observed site; observe the data with pyro.sample(..., obs=...)")
        latents = {name: site for name, site in samples.items() if not site["is_observed"]}
        if not latents:
            raise UsageError(f"the model {spec} has no latent site; there is no posterior to measure")
        check_log_probs(trace, f"the model {spec}")
        check_whole_plates(trace, spec)
        check_unscaled_latents(trace, spec)
        check_stable(self.full_program, data, trace, spec)
        for name, site in latents.items():
            if site["fn"].support.is_discrete:
                raise UsageError(f"the model {spec} has a discrete latent site {name!r}; elbogap's estimators need "
                                 "continuous latents and do not enumerate (config_enumerate is refused too): sum it "
                                 "out by hand, e.g. a MixtureSameFamily likelihood, or make it continuous")
        self.latent_sites = {name: site["value"].shape for name, site in latents.items()}
        self.transforms = {name: real_line_map(site["fn"].support, name, spec) for name, site in latents.items()}
        self.unconstrained_shapes = real_line_shapes(self.latent_sites, self.transforms)
        plates = data_plates(samples)
        self.local_sites = [name for name, site in latents.items() if is_per_point(site, plates, len(data))]
        self.global_sites = [name for name in latents if name not in self.local_sites]
        self.data_plate = next(iter(plates), None)
        self.latent_dim = sum(math.prod(shape) for shape in self.unconstrained_shapes.values())
        self.num_data, self.data_dim = len(data), data.shape[-1]
        self.param_names = [name for name, site in trace.nodes.items() if site["type"] == "param"]
        self.vectorized = None  # whether vmap serves the density; found by a probe on first use (see log_density)

    # --- the program ---------------------------------------------------------------------------

    def model(self, x, index=None, num_data=None):
        """The program on a minibatch (a program that subsamples its data plate) or on all of ``x``."""
        if self.takes_index:
            return self.fn(x, index=index, num_data=num_data)
        return self.fn(x)

    def full_program(self, data):
        """The program on the whole data set (a subsampling program is given every row)."""
        if self.takes_index:
            return self.fn(data, index=torch.arange(len(data), device=data.device), num_data=len(data))
        return self.fn(data)

    # --- the flat latent vector ------------------------------------------------------------------

    def unpack(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Site values (in their supports) from one flat vector ``z`` ``(latent_dim,)``, and :math:`\\log|\\det J|`."""
        return self.site_values(z), self.log_abs_det(z)

    def site_values(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Site values (in their supports) of flat vectors ``z`` ``(..., latent_dim)``: ``(..., *shape)`` each."""
        values, start, lead = {}, 0, z.shape[:-1]
        for name, shape in self.unconstrained_shapes.items():
            size = math.prod(shape)
            values[name] = self.transforms[name](z[..., start:start + size].reshape(tuple(lead) + tuple(shape)))
            start += size
        return values

    def pack(self, values: dict[str, torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
        """The flat vector(s) of site values with ``batch_dims`` leading dimensions (inverse of :meth:`unpack`)."""
        parts = []
        for name, shape in self.latent_sites.items():
            value = values[name]
            lead = value.shape[:batch_dims]
            value = value.reshape(tuple(lead) + tuple(shape))
            parts.append(self.transforms[name].inv(value).reshape(*lead, -1))
        return torch.cat(parts, -1)

    def unconstrained(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each site's draws ``(count, ...)`` in the coordinates the guides fit, ``biject_to(support).inv`` of them (log
        for a positive site, logit for one in (0, 1)): ``(count, size)`` each."""
        out = {}
        for name, shape in self.latent_sites.items():
            value = values[name]
            out[name] = self.transforms[name].inv(value.reshape(len(value), *shape)).reshape(len(value), -1)
        return out

    # --- densities -------------------------------------------------------------------------------

    def joint_parts(self, z: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        """``[log p(latents), log p(D | latents)]`` at one flat vector, the prior with the Jacobian of the map."""
        values, log_det = self.unpack(z)
        trace = poutine.trace(poutine.condition(self.full_program, data=values)).get_trace(data)
        log_prior, log_lik = log_det, z.new_zeros(())
        for name, site in sample_sites(trace).items():  # conditioned latents count as observed in the trace
            log_p = scored(site).sum()  # the program's own scale and mask (a tempered or masked likelihood) count
            if name in values:
                log_prior = log_prior + log_p
            else:
                log_lik = log_lik + log_p
        return torch.stack([log_prior, log_lik])

    def log_density(self, z: torch.Tensor, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log p(\theta, z)` (with the Jacobian) and :math:`\log p(D \mid \theta, z)` at ``z`` ``(..., dim)``.

        Chains are evaluated together with ``torch.func.vmap`` where the program allows it (a probe
        compares it with one call per chain on the first use), else one call per chain.
        """
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        with pyro.validation_enabled(False):  # a leapfrog step may leave the support: NaN, then rejected
            if self.vectorized is None:
                self.vectorized = self._probe_vmap(flat, data)
            if self.vectorized:
                parts = torch.func.vmap(lambda one: self.joint_parts(one, data))(flat)
            else:
                parts = torch.stack([self.joint_parts(one, data) for one in flat])
        return parts[:, 0].reshape(lead), parts[:, 1].reshape(lead)

    def log_joint(self, values: dict[str, torch.Tensor], data: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(\theta_k, z_k, D)` at draws of the sites in their supports, ``(K, *shape)`` each: ``(K,)``
        (the sum of :meth:`site_densities`)."""
        log_prior, log_lik = self.site_densities(values, data)
        return log_prior + log_lik

    def site_densities(self, values: dict[str, torch.Tensor], data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log p(\theta_k, z_k)` and :math:`\log p(D \mid \theta_k, z_k)` at draws of the sites in their
        supports, ``(K, *shape)`` each: two ``(K,)`` tensors.

        The draws are mapped to the flat vector and scored by :meth:`log_density` (batched over them), less the
        Jacobian of the map: the density of the sites themselves, differentiable in the draws and in the
        program's parameters.
        """
        z = self.pack(values, batch_dims=1)
        log_prior, log_lik = self.log_density(z, data)
        return log_prior - self.log_abs_det(z), log_lik

    def log_abs_det(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log|\det J|` of the map from flat vectors ``z`` ``(..., latent_dim)`` to the sites, per vector."""
        lead, total, start = z.shape[:-1], z.new_zeros(z.shape[:-1]), 0
        for name, shape in self.unconstrained_shapes.items():
            size = math.prod(shape)
            unconstrained = z[..., start:start + size].reshape(tuple(lead) + tuple(shape))
            start += size
            transform = self.transforms[name]
            jacobian = transform.log_abs_det_jacobian(unconstrained, transform(unconstrained))
            total = total + jacobian.reshape(*lead, -1).sum(-1)
        return total

    def _probe_vmap(self, flat: torch.Tensor, data: torch.Tensor) -> bool:
        with unvalidated():
            try:
                probe = flat[:2].detach()
                batched = torch.func.vmap(lambda one: self.joint_parts(one, data))(probe)
                looped = torch.stack([self.joint_parts(one, data) for one in probe])
                return bool(torch.allclose(batched, looped, rtol=1e-4, atol=1e-3, equal_nan=True))
            except Exception:  # any program vmap cannot run (data-dependent control flow, in-place ops): one a chain
                return False

    def non_centred(self, data: torch.Tensor) -> "GlobalLatentModel | None":
        """This program with its centred hierarchies written non-centred (:mod:`~elbogap.global_latents.decentred`),
        the same evidence in other coordinates; None where it has none, or where the rewritten program does not run.
        Its ``decentred_sites`` name them."""
        try:
            sites = hierarchical_sites(self.full_program, data)
            if not sites:
                return None
            rewritten = GlobalLatentModel(decentred(self.full_program, sites), data, f"{self.spec} (non-centred)")
        except Exception:  # a program the rewrite does not suit (checked as written already) is annealed as written
            return None
        rewritten.decentred_sites = sites
        return rewritten

    # --- draws from the model ----------------------------------------------------------------------

    @torch.no_grad()
    def prior_draws(self, count: int, data: torch.Tensor) -> torch.Tensor:
        """``count`` ancestral draws of every latent from the model run on ``data``: ``(count, latent_dim)``."""
        program = poutine.block(self.full_program, hide_types=["param"])
        draws = []
        for _ in range(count):
            trace = poutine.trace(program).get_trace(data)
            draws.append(self.pack({name: trace.nodes[name]["value"] for name in self.latent_sites}))
        return torch.stack(draws)

    @torch.no_grad()
    def simulate(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One data set drawn from the prior predictive, shaped like ``data``, and the latents that made it.

        The program runs with ``poutine.uncondition``, so its observed sites are sampled; their
        values are written back into the columns they were read from (found by matching the
        observed values against ``data``'s columns).
        """
        trace = poutine.trace(poutine.uncondition(self.full_program)).get_trace(data)
        observed_trace = poutine.trace(self.full_program).get_trace(data)
        simulated = data.clone()
        for name in self.observed_sites:
            original = observed_trace.nodes[name]["value"]
            value = trace.nodes[name]["value"].to(data.dtype)
            simulated = _write_back(simulated, data, original, value, self.spec, name)
        z = self.pack({name: trace.nodes[name]["value"] for name in self.latent_sites})
        return simulated, z

    # --- parameters (pyro.param / pyro.module) --------------------------------------------------------

    def state_dict(self, *args, **kwargs):
        return params_state(self.param_names)

    def load_state_dict(self, state, strict: bool = True):
        load_params_state(state)


def traced_draws(guide_fn, count: int, names, args: tuple, kwargs: dict | None = None,
                 dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``count`` traces of ``guide_fn(*args, **kwargs)``, one after another (any guide program runs): log q of each
    ``(count,)``, its unobserved sites' densities summed (in ``dtype`` where given), and the values of the sites
    ``names`` stacked ``(count, *shape)``."""
    log_q, values = [], {name: [] for name in names}
    for _ in range(count):
        trace = poutine.trace(guide_fn).get_trace(*args, **(kwargs or {}))
        log_q.append(sum((scored(site) if dtype is None else scored(site).to(dtype)).sum()
                         for site in sample_sites(trace).values() if not site["is_observed"]))
        for name in values:
            values[name].append(trace.nodes[name]["value"])
    return torch.stack([torch.as_tensor(value) for value in log_q]), {name: torch.stack(value)
                                                                      for name, value in values.items()}


def _write_back(simulated, data, original, value, spec, name):
    """Put a simulated observation where the observed one came from in ``data`` (a column block or all of it)."""
    if original.dim() == 0 or original.shape[0] != len(data):
        raise UsageError(f"--bdmc and elbogap calibrate simulate data sets, but the observed site {name!r} of {spec} "
                         f"has shape {tuple(original.shape)}, not one value per row of the data ({len(data)} rows): it "
                         "cannot be written back as a data set; observe the data's own columns")
    flat_original, flat_value = original.reshape(len(data), -1), value.reshape(len(data), -1)
    if original.numel() == data.numel() and torch.equal(original.reshape(data.shape), data):
        return value.reshape(data.shape)
    width = flat_original.shape[1]
    for start in range(data.shape[1] - width + 1):
        if torch.equal(data[:, start:start + width], flat_original):
            simulated[:, start:start + width] = flat_value
            return simulated
    raise UsageError(f"--bdmc and elbogap calibrate simulate data sets, but the observed site {name!r} of {spec} is "
                     "not a block of the data's columns (it is transformed before it is observed); observe the data's "
                     "own columns")


def probe_trace(program, x: torch.Tensor):
    """A trace of a user's model program on the rows ``x`` (with ``index`` and ``num_data`` where it takes them)."""
    if takes_index(program):
        return poutine.trace(program).get_trace(x, index=torch.arange(len(x), device=x.device), num_data=len(x))
    return poutine.trace(program).get_trace(x)
