"""Evaluate a model's log densities at given latent values by running its Pyro program."""

import torch
from pyro import poutine

from elbogap.errors import UsageError
from elbogap.sites import (
    broadcasts_draws,
    constrain,
    flatten_latents,
    latent_sites,
    observed_sites,
    repeat_rows,
    scored,
    split_latents,
)

__all__ = ["flatten_latents", "latent_sites", "log_joint", "observed_sites", "split_latents"]

#: tensor elements one chunk of work may touch: tens of MB, so a chunk stays in the CPU cache.
ELEMENT_BUDGET = 2**21


def log_joint(model, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Return :math:`\log p(z)` and :math:`\log p(x \mid z)`, each of shape ``z.shape[:-1]``.

    ``z`` has shape ``(..., batch, latent_dim)`` and ``x`` shape ``(batch, data_dim)``: any
    leading dimensions of ``z`` (samples, grid points) broadcast against the data plate. ``z``
    holds every latent site of the model, flattened and joined in the order of
    ``model.latent_sites``; the model runs once with each site conditioned on its part, and
    :math:`\log p(z)` sums their densities (a hierarchy's conditionals included), :math:`\log p(x
    \mid z)` those of the observed sites. No minibatch scaling applies. A model that does not
    declare ``broadcasts_draws`` (a user's program) runs once on the draws laid out as rows of
    one batch, ``x`` repeated, so it need not broadcast over leading dimensions. A constrained site
    (see :func:`~elbogap.sites.constrain`) is read from ``z`` on the real line, and
    :math:`\log p(z)` includes the log-Jacobian of its map into the support.
    """
    lead = z.shape[:-2]
    if lead and not broadcasts_draws(model):
        # a user's program need only handle a batch of rows (it may reshape its latents): the draws become rows
        z = z.expand(*lead, len(x), z.shape[-1])
        log_prior, log_lik = log_joint(model, repeat_rows(x, lead.numel()), z.reshape(-1, z.shape[-1]))
        return log_prior.reshape(z.shape[:-1]), log_lik.reshape(z.shape[:-1])
    values, log_det = constrain(model, split_latents(model, z))
    trace = poutine.trace(poutine.condition(model.model, data=values)).get_trace(x)
    log_prior = sum(scored(trace.nodes[name]) for name in values) + log_det
    # the program's own scale and mask on its observations (a tempered or masked likelihood) count, as in SVI
    log_lik = sum(scored(trace.nodes[name]) for name in observed_sites(model))
    log_prior, log_lik = torch.as_tensor(log_prior), torch.as_tensor(log_lik)
    try:  # a log_prob that does not broadcast over its batch (a tester's own distribution): one value for every row
        shape = torch.broadcast_shapes(log_prior.shape, log_lik.shape, z.shape[:-1])
    except RuntimeError:
        raise UsageError(f"the program {getattr(model, 'spec', '')} scores its latents with shape "
                         f"{tuple(log_prior.shape)} and its observations with shape {tuple(log_lik.shape)}, which do "
                         "not broadcast: each site's log_prob must return one value per entry of its distribution's "
                         "batch shape") from None
    return log_prior.expand(shape), log_lik.expand(shape)
