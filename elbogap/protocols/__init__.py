"""Protocols of study: for each kind of model, what a run evaluates, on which data, with which estimators.

A run (:func:`~elbogap.runs.run_one`) trains, then asks its model's protocol
(:func:`protocol_for`) to evaluate. There are two kinds: models whose latents are per data
point (:mod:`elbogap.protocols.vae`) and models with global latents, judged on the whole data set
(:mod:`elbogap.global_latents.protocol`).
"""

from elbogap.protocols.base import Protocol
from elbogap.protocols.global_latents import GLOBAL
from elbogap.protocols.vae import VAE

PROTOCOLS: dict[str, Protocol] = {protocol.name: protocol for protocol in (VAE, GLOBAL)}


def protocol_for(model) -> Protocol:
    """The protocol that evaluates ``model``: ``global`` for a model with global latents, else ``vae``."""
    return PROTOCOLS[getattr(model, "kind", "vae")]


__all__ = ["GLOBAL", "PROTOCOLS", "VAE", "Protocol", "protocol_for"]
