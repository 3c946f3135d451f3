"""Protocols of study: for each kind of model, what a run evaluates, on which data, with which estimators.

A run (:func:`~elbogap.runs.run_one`) trains, then asks its model's protocol
(:func:`protocol_for`) to evaluate. Today there is one kind: models whose latents are per data
point (:mod:`elbogap.protocols.vae`).
"""

from elbogap.protocols.base import Protocol
from elbogap.protocols.vae import VAE

PROTOCOLS: dict[str, Protocol] = {protocol.name: protocol for protocol in (VAE,)}


def protocol_for(model) -> Protocol:
    """The protocol that evaluates ``model``: the per-datapoint one (``vae``) for every model elbogap builds today."""
    return PROTOCOLS["vae"]


__all__ = ["PROTOCOLS", "Protocol", "protocol_for"]
