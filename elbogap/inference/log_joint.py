"""Evaluate a model's log densities at given latent values by running its Pyro program."""

import torch
from pyro import poutine


def log_joint(model, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Return :math:`\log p(z)` and :math:`\log p(x \mid z)`, each of shape ``z.shape[:-1]``.

    ``z`` has shape ``(..., batch, latent_dim)`` and ``x`` shape ``(batch, data_dim)``: any
    leading dimensions of ``z`` (samples, grid points) broadcast against the data plate. The
    model runs once with its site ``"z"`` conditioned on ``z``; no minibatch scaling applies.
    """
    trace = poutine.trace(poutine.condition(model.model, data={"z": z})).get_trace(x)
    log_prior = trace.nodes["z"]["fn"].log_prob(z)
    log_lik = trace.nodes["x"]["fn"].log_prob(x)
    return log_prior, log_lik.expand(log_prior.shape)
