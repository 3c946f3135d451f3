r"""Sticking the landing: the ELBO's gradient without the score term of :math:`q`.

For a reparameterized draw :math:`z = g_\phi(\epsilon)` the ELBO's one-draw estimate
:math:`\log p(x, z) - \log q_\phi(z \mid x)` has the gradient

.. math:: \nabla_\phi = \big(\nabla_z \log p(x, z) - \nabla_z \log q_\phi(z \mid x)\big)\,
          \frac{\partial z}{\partial \phi} \;-\; \nabla_\phi \log q_\phi(z \mid x)\big|_{z\ \mathrm{fixed}} .

The last term, the score of :math:`q`, has expectation zero, yet it does not vanish draw by draw,
not even where :math:`q` is the exact posterior. Scoring the draw with :math:`q`'s parameters held
fixed, :math:`\log q_{\bar\phi}(z \mid x)` with :math:`\bar\phi` = φ under a stop-gradient, drops
it [1]: the estimator stays unbiased, and where :math:`q = p(z \mid x)` the estimate is
:math:`\log p(x)` for every :math:`z`, so its gradient is zero draw by draw. Pyro's ELBOs then
need no change: the guide programs here sample each site from :class:`StickingTheLanding`.

A torch distribution cannot be detached (pyro-ppl/pyro#2598), nor can ``torch.func.functional_call``
hold a module's parameters fixed under ``torch.jit.trace`` (which ``JitTrace_ELBO`` uses), so the
score is subtracted instead, with :math:`\perp` the stop-gradient:

.. math:: \log q_{\bar\phi}(z) := \log q_\phi(z) - \big[\log q_\phi(\perp z) - \perp \log q_\phi(\perp z)\big].

The bracket is zero in value, and its gradient is the score
:math:`\nabla_\phi \log q_\phi(z)` at :math:`z` held fixed, so what remains is the path term
:math:`\nabla_z \log q_\phi(z)\, \partial z / \partial \phi`. This is exact where q's parameters
depend on φ and x only, not on other draws (a hierarchical guide's would lose their path term),
which holds for elbogap's families and for ``auto:AutoNormal``. DReG, which runs uncompiled and
needs the whole path term to pass through :math:`z`, rebuilds q from detached parameters instead
(see :class:`StickingTheLanding`).

References:

[1] Sticking the Landing: Simple, Lower-Variance Gradient Estimators for Variational Inference,
    Geoffrey Roeder, Yuhuai Wu, David Duvenaud, arXiv:1703.09194
"""

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import Distribution, kl_divergence, register_kl

from elbogap.errors import UsageError
from elbogap.guides.autoguide import AutoGuideFamily
from elbogap.guides.base import Guide
from elbogap.plates import data_plate


class StickingTheLanding(TorchDistribution):
    r"""The reparameterized draws of ``q``, scored so that q's parameters get gradient through the draw only.

    ``rsample`` is ``q.rsample``; ``log_prob(z)`` is :math:`\log q(z)` in value, with the score
    term subtracted from its gradient (see the module's docstring). ``q.log_prob`` at
    :math:`\perp z`, a tensor q did not draw, runs a flow's inverse: no cached pair of the draw
    stands in for it. Under Pyro's ``Trace_ELBO`` (or ``JitTrace_ELBO``) a site drawn from it
    gives the sticking-the-landing estimator [1]. Against a prior whose KL to ``q`` Pyro knows in
    closed form (``TraceMeanField_ELBO``), the KL is ``q``'s own, with its exact gradient: no draw
    enters it, so there is no score term to drop there.

    A flow scores its own draw from the cached base draw, so the gradient of the score reaches
    q's parameters by that route, not through :math:`z`. A gradient hook on the draw
    (:class:`~elbogap.inference.iwae.IWAE`'s) needs all of it through :math:`z`: ``held_fixed``,
    :math:`z \mapsto \log q_{\perp\phi}(z)` evaluated by q rebuilt from detached parameters, then
    scores instead (one evaluation at :math:`z`, a flow's one inverse).

    :param q: a reparameterized distribution whose parameters depend on no other draw.
    :param held_fixed: optional :math:`z \mapsto \log q_{\perp\phi}(z)`, broadcasting over leading dimensions of ``z``.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, q: TorchDistribution, held_fixed: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.q, self.held_fixed = q, held_fixed
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    @property
    def support(self):
        return self.q.support

    def rsample(self, sample_shape=()):
        return self.q.rsample(sample_shape)

    def sample(self, sample_shape=()):
        with torch.no_grad():
            return self.q.rsample(sample_shape)

    def log_prob(self, value):
        if self.held_fixed is not None:
            return self.held_fixed(value)
        at_fixed_draw = self.q.log_prob(value.detach())  # its gradient is the score of q alone
        return self.q.log_prob(value) - (at_fixed_draw - at_fixed_draw.detach())

    def expand(self, batch_shape, _instance=None):
        return StickingTheLanding(self.q.expand(batch_shape), self.held_fixed)


@register_kl(StickingTheLanding, Distribution)
def _kl_of_q(p, q):
    return kl_divergence(p.q, q)  # raises NotImplementedError where none is known: the ELBO then draws z


class _LogDensity(nn.Module):
    r"""A guide's :math:`\log q(z \mid x)` as a module's forward, which is what ``torch.func.functional_call`` runs."""

    def __init__(self, guide: Guide):
        super().__init__()
        self.guide = guide

    def forward(self, z, x, index):
        return self.guide.site_distribution(self.guide.distribution(x, index)).log_prob(z)


def sticks(guide: Guide) -> bool:
    """Whether :func:`stl_guide` takes elbogap's family ``guide`` for ``"stl"``: not a guide program, and its density
    known anywhere (a flow with an inverse, not planar or sylvester)."""
    return not guide.program and guide.density_anywhere


def stl_guide(guide: Guide, gradient: str = "stl") -> Callable:
    r"""The program of ``guide`` whose draws stick the landing (see :class:`StickingTheLanding`).

    The family's density is evaluated at each draw as a function of its parameters, so it must
    be known at any :math:`z`: iaf and spline are inverted there, while a flow without an inverse
    (planar, sylvester) is refused. DReG turns the score of :math:`q` into a gradient of the draws
    through an identity that holds for an exact pathwise gradient only, so it refuses the mixture,
    whose sampler's gradient for its weights is not (STL's difference from the reparameterized
    estimator is the score alone, whose mean is zero for any sampler). ``auto:AutoNormal``'s sites
    are independent normals whose locations and scales are parameters, so each is wrapped as it
    is (a normal has no cached draw: the gradient goes through :math:`z`). A guide without parameters
    of its own (the exact posterior, whose parameters are the model's) is returned as it is:
    there is nothing to hold fixed, and its one-draw estimate is :math:`\log p(x)` already. A
    guide program is refused: its distributions are built inside the user's code and may depend
    on its other draws, where elbogap cannot hold the parameters fixed.

    :param guide: an elbogap :class:`~elbogap.guides.Guide`.
    :param str gradient: the estimator asking, ``"stl"`` or ``"dreg"`` (which hooks the draws, so the
        density is rebuilt from detached parameters: see :class:`StickingTheLanding`).
    """
    if isinstance(guide, AutoGuideFamily):
        return _WrapNormals(guide.name)(guide.guide)
    if guide.program:
        raise UsageError(f"--gradient {gradient} holds q's parameters fixed, and elbogap cannot detach a guide "
                         f"program's parameters ({getattr(guide, 'spec', 'a program')}); use --gradient reparam "
                         "with it, or one of elbogap's own guides")
    if not any(True for _ in guide.parameters()):
        return guide.guide
    if not guide.density_anywhere:
        raise UsageError(f"--gradient {gradient} evaluates log q(z|x) at each draw with q's parameters held fixed, "
                         f"and the {type(guide).__name__.lower()} flow has no inverse to do it; use --gradient "
                         "reparam with it, or a flow with an inverse (iaf, spline)")
    if gradient == "dreg" and not guide.exact_pathwise:
        raise UsageError(f"--gradient dreg trades the score of q for the gradient of its draws, which must be exact, "
                         f"and the {type(guide).__name__.lower()} sampler's gradient for its weights is not (Pyro's "
                         "MixtureOfDiagNormals); use --gradient reparam with it")

    density = _LogDensity(guide)

    def guide_program(x, index=None, num_data=None):
        pyro.module("guide", guide)
        with data_plate(x, index, num_data, guide.plate):
            q = guide.site_distribution(guide.distribution(x, index))
            held_fixed = None
            if gradient == "dreg":  # uncompiled, so functional_call may run (it refuses under torch.jit.trace)

                def held_fixed(z):
                    detached = {f"guide.{name}": param.detach() for name, param in guide.named_parameters()}
                    return torch.func.functional_call(density, detached, (z, x, index))

            return guide.sample_sites(StickingTheLanding(q, held_fixed))

    return guide_program


class _WrapNormals(Messenger):
    """Draw each auxiliary normal site of a Pyro autoguide from :class:`StickingTheLanding`.

    Right for autoguides whose sites are independent normals with parameters for loc and scale
    (``AutoNormal``): no site's parameters depend on another site's draw.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def _pyro_sample(self, msg):
        if msg["is_observed"] or not msg["infer"].get("is_auxiliary"):
            return  # AutoNormal's own sites are deltas at its auxiliary draws, scored with those
        base = msg["fn"].base_dist if isinstance(msg["fn"], dist.Independent) else msg["fn"]
        if not isinstance(base, dist.Normal):
            raise UsageError(f"auto:{self.name} draws a {type(base).__name__}, whose parameters elbogap cannot "
                             "hold fixed; use --gradient reparam with it")
        msg["fn"] = StickingTheLanding(msg["fn"])
