r"""A model seen as independent units, each with its latents as one flat vector: what every estimator runs on.

A *target* has ``batch_size`` units with their data ``x``, and ``latent_dim`` latent numbers per unit. It gives

- ``start(count)``: draws of the prior, ``(count, units, latent_dim)``;
- ``log_joint(z)``: the log prior :math:`\log p(z_u)` and log likelihood :math:`\log p(x_u \mid z_u)` of each unit
  :math:`u` at ``z`` ``(count, units, latent_dim)``, each ``(count, units)``, in the coordinates its latents are drawn
  in (with Jacobians where a site is constrained, and a program's ``poutine.mask`` and ``poutine.scale`` honoured);
- ``select(index)``: the units ``index`` alone.

Two kinds of model are two targets. A model whose latents are per data point is :class:`PointsTarget`: each row of
``x`` is a unit, and :math:`\log p(D) = \sum_n \log p(x_n)`. A model with global latents is :class:`DataSetTarget`:
the whole data set is one unit, its latents every global and per-row latent of the program. The estimators of
:mod:`elbogap.estimators`, AIS (:class:`~elbogap.inference.ais.AnnealingPath` anneals along a target) and its
quadrature read nothing else.
"""

import pyro
import torch
from pyro import poutine

from elbogap.inference.log_joint import flatten_latents, latent_sites, log_joint
from elbogap.model.base import LatentModel
from elbogap.sites import broadcasts_draws, repeat_rows


class Target:
    """The units of ``model`` on its data ``x`` (see the module); subclasses give the densities and the draws."""

    def __init__(self, model, x: torch.Tensor | None):
        self.model, self.x = model, x

    @property
    def batch_size(self) -> int:
        """The independent units."""
        raise NotImplementedError

    dtype = property(lambda self: self.x.dtype)
    device = property(lambda self: self.x.device)
    latent_dim = property(lambda self: self.model.latent_dim)

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`\\log p(z_u)` and :math:`\\log p(x_u \\mid z_u)` of each unit at ``z``, each ``(count, units)``."""
        raise NotImplementedError

    def start(self, count: int) -> torch.Tensor:
        """``count`` draws of the prior per unit, ``(count, units, latent_dim)``."""
        raise NotImplementedError

    def select(self, index: torch.Tensor) -> "Target":
        """The units ``index`` alone."""
        raise NotImplementedError

    def in_float64(self) -> "Target":
        """This target on its data in float64 where the model's densities then come back in float64 (a program whose
        tensors follow its data's dtype), else itself (a decoder's float32 weights refuse float64 inputs).

        A sum over a grid or a long tail needs it: in float32 a Dirichlet(0.2, 0.3, 0.5) proportion's stick-breaking
        number saturates far out in its tail, and quadrature on three quarters of a tester's rows never settled.
        """
        if self.dtype == torch.float64:
            return self
        precise = type(self)(self.model, self.x.double())
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                parts = precise.log_joint(precise.start(1))
        except (RuntimeError, TypeError, ValueError):  # a model that computes in float32 only
            return self
        return precise if all(torch.as_tensor(part).dtype == torch.float64 for part in parts) else self


class PointsTarget(Target):
    """A model whose latents are per data point: each row of ``x`` a unit."""

    def __init__(self, model, x: torch.Tensor | None = None):
        super().__init__(model, x)
        # elbogap's own models state their densities as methods: calling them skips a Pyro trace per
        # gradient, the same numbers; any other program is run through its trace
        self.direct = isinstance(model, LatentModel) and type(model).model is LatentModel.model

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.direct:
            return self.model.prior().log_prob(z), self.model.likelihood(z).log_prob(self.x)
        # a leapfrog step may overflow a program's parameters (exp of a large log-rate): the density is then
        # NaN and the proposal rejected (see hmc_transition), instead of a distribution refusing its arguments
        with pyro.validation_enabled(False):
            return log_joint(self.model, self.x, z)

    def start(self, count: int) -> torch.Tensor:
        # ancestral draws of every latent site (a hierarchy's too) from the model run without its data
        program = poutine.trace(poutine.block(self.model.model, hide_types=["param"]))
        sites = latent_sites(self.model)
        if not broadcasts_draws(self.model):  # a user's program: the draws as rows of one batch
            with torch.no_grad():
                trace = program.get_trace(repeat_rows(self.x, count))
            values = {name: trace.nodes[name]["value"] for name in sites}
            return flatten_latents(self.model, values, 1).reshape(count, len(self.x), -1)
        with torch.no_grad(), pyro.plate("ais_chains", count, dim=-2):
            trace = program.get_trace(self.x)
        values = {name: trace.nodes[name]["value"] for name in sites}
        return flatten_latents(self.model, values, 2).expand(count, len(self.x), -1).clone()

    def select(self, index: torch.Tensor) -> "PointsTarget":
        return PointsTarget(self.model, self.x[index])


class DataSetTarget(Target):
    """A model with global latents (:class:`~elbogap.global_latents.model.GlobalLatentModel`): the whole data set
    ``x`` is one unit, its latents every latent of the program as one flat vector."""

    @property
    def batch_size(self) -> int:
        return 1

    def log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.log_density(z, self.x)

    def start(self, count: int) -> torch.Tensor:
        return self.model.prior_draws(count, self.x)[:, None, :].to(self.x.dtype)

    def select(self, index: torch.Tensor) -> "DataSetTarget":
        return self  # one unit, the whole data set
