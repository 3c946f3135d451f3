r"""The ELBO of a model with global latents whose program does not broadcast over a plate of particles.

Pyro's ``Trace_ELBO`` draws its particles either at once, in a plate left of the program's own (which a
program that indexes its latents, ``a[county]``, or adds trailing dimensions, ``mu[..., None]``, does not
survive), or one after another, a model and a guide trace per particle. This loss draws the particles from the
guide alone (under a plate, where the guide broadcasts over one as Pyro's autoguides do; else a trace each) and
scores the model at all the particles' latents at once,

.. math::

    \mathcal{L} = \frac1K \sum_k \big[\log p(\theta_k, D) - \log q(\theta_k)\big], \qquad \theta_k \sim q,

with :meth:`~elbogap.global_latents.model.GlobalLatentModel.log_joint` batched over the particles by
``torch.func.vmap``, as the evidence's chains are (where the probe of the first use found that vmap serves the
program). Gradients reach q's parameters through the reparameterized draws, and the model's own parameters
through its density, as under ``Trace_ELBO``; a minibatch is not handled here (it is the whole data set).
"""

import pyro
import torch
from pyro import poutine
from pyro.util import warn_if_nan

from elbogap.global_latents.model import sample_sites, traced_draws
from elbogap.sites import scored


class VectorizedModelELBO:
    """:math:`-\\mathcal{L}` (see the module) with ``loss_and_grads``, ``loss`` and ``differentiable_loss`` as Pyro's
    ELBOs have them; ``model`` is the :class:`~elbogap.global_latents.model.GlobalLatentModel` the programs score.

    ``plate_dim``, where given, is the dimension of a plate of the particles the guide alone runs under (an
    autoguide broadcasts over it: one trace for all particles); None draws one guide trace per particle.
    """

    def __init__(self, model, num_particles: int, plate_dim: int | None = None):
        self.model, self.num_particles, self.plate_dim = model, num_particles, plate_dim

    def _guide_draws(self, guide_fn, args, kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """log q of each particle ``(K,)`` and the model's sites at each, ``(K, *shape)``."""
        count = self.num_particles
        if self.plate_dim is not None:
            with pyro.plate("elbogap_particles", count, dim=self.plate_dim):
                trace = poutine.trace(guide_fn).get_trace(*args, **kwargs)
            log_q = sum(scored(site).expand(site["fn"].batch_shape).reshape(count, -1).sum(-1)
                        for site in sample_sites(trace).values() if not site["is_observed"])
            return log_q, {name: trace.nodes[name]["value"].reshape(count, *shape)
                           for name, shape in self.model.latent_sites.items()}
        return traced_draws(guide_fn, count, self.model.latent_sites, args, kwargs)

    def differentiable_loss(self, model_fn, guide_fn, *args, **kwargs) -> torch.Tensor:
        log_q, draws = self._guide_draws(guide_fn, args, kwargs)
        with poutine.block():  # the model's sites are scored here, not recorded by an enclosing trace
            log_p = self.model.log_joint(draws, args[0])
        return -(log_p - log_q).mean()

    def loss_and_grads(self, model_fn, guide_fn, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model_fn, guide_fn, *args, **kwargs)
        if loss.requires_grad:  # as Pyro's ELBOs: a guide (and model) with no parameters has nothing to fit
            loss.backward()
        value = float(loss.detach())
        warn_if_nan(value, "loss")
        return value

    @torch.no_grad()
    def loss(self, model_fn, guide_fn, *args, **kwargs) -> float:
        return float(self.differentiable_loss(model_fn, guide_fn, *args, **kwargs))
