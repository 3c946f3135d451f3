r"""The ELBO of a model with global latents whose program does not broadcast over a plate of particles.

Pyro's ``Trace_ELBO`` draws its particles either at once, in a plate left of the program's own (which a
program that indexes its latents, ``a[county]``, or adds trailing dimensions, ``mu[..., None]``, does not
survive), or one after another, a model and a guide trace per particle. This loss keeps the guide's traces
one per particle (a guide is small) and scores the model at all the particles' latents at once,

.. math::

    \mathcal{L} = \frac1K \sum_k \big[\log p(\theta_k, D) - \log q(\theta_k)\big], \qquad \theta_k \sim q,

with :meth:`~elbogap.global_latents.model.GlobalLatentModel.log_joint` batched over the particles by
``torch.func.vmap``, as the evidence's chains are (where the probe of the first use found that vmap serves the
program). Gradients reach q's parameters through the reparameterized draws, and the model's own parameters
through its density, as under ``Trace_ELBO``; a minibatch is not handled here (it is the whole data set).
"""

import torch
from pyro import poutine
from pyro.util import warn_if_nan

from elbogap.global_latents.model import sample_sites
from elbogap.sites import scored


class VectorizedModelELBO:
    """:math:`-\\mathcal{L}` (see the module) with ``loss_and_grads``, ``loss`` and ``differentiable_loss`` as Pyro's
    ELBOs have them; ``model`` is the :class:`~elbogap.global_latents.model.GlobalLatentModel` the programs score."""

    def __init__(self, model, num_particles: int):
        self.model, self.num_particles = model, num_particles

    def differentiable_loss(self, model_fn, guide_fn, *args, **kwargs) -> torch.Tensor:
        data = args[0]
        log_q, values = [], {name: [] for name in self.model.latent_sites}
        for _ in range(self.num_particles):
            trace = poutine.trace(guide_fn).get_trace(*args, **kwargs)
            log_q.append(sum(scored(site).sum() for site in sample_sites(trace).values() if not site["is_observed"]))
            for name in values:
                values[name].append(trace.nodes[name]["value"])
        draws = {name: torch.stack(value) for name, value in values.items()}
        with poutine.block():  # the model's sites are scored here, not recorded by an enclosing trace
            log_p = self.model.log_joint(draws, data)
        return -(log_p - torch.stack(log_q)).mean()

    def loss_and_grads(self, model_fn, guide_fn, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model_fn, guide_fn, *args, **kwargs)
        loss.backward()
        value = float(loss.detach())
        warn_if_nan(value, "loss")
        return value

    @torch.no_grad()
    def loss(self, model_fn, guide_fn, *args, **kwargs) -> float:
        return float(self.differentiable_loss(model_fn, guide_fn, *args, **kwargs))
