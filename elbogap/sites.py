"""The latent and observed sites of a model program, and the flat latent vector evaluation works in.

elbogap's own models have one latent site ``"z"`` and one observed site ``"x"``; a user's
program (:class:`~elbogap.user_model.ProgramModel`) names its own and may have several latent
sites. Estimators of log p(x) (quadrature, IWAE, AIS) see all latent sites of a data point as
one flat vector of ``latent_dim`` numbers, joined in the order of ``model.latent_sites``.
"""

import math

import torch


def latent_sites(model) -> dict[str, torch.Size]:
    """The model's latent sites and their per-point shapes (elbogap's own models: ``{"z": (latent_dim,)}``)."""
    sites = getattr(model, "latent_sites", None)
    return sites if sites is not None else {"z": torch.Size([model.latent_dim])}


def observed_sites(model) -> list[str]:
    return list(getattr(model, "observed_sites", None) or ["x"])


def split_latents(model, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a flat latent vector ``(..., latent_dim)`` into the model's sites, each ``(..., *shape)``."""
    sites = latent_sites(model)
    if len(sites) == 1:
        (name, shape), = sites.items()
        return {name: z.reshape(*z.shape[:-1], *shape)}
    pieces = z.split([math.prod(shape) for shape in sites.values()], dim=-1)
    return {name: piece.reshape(*piece.shape[:-1], *shape) for (name, shape), piece in zip(sites.items(), pieces,
                                                                                          strict=True)}


def flatten_latents(model, values: dict[str, torch.Tensor], batch_dims: int) -> torch.Tensor:
    """The inverse of :func:`split_latents`: site values with ``batch_dims`` leading dimensions, joined flat."""
    return torch.cat([values[name].reshape(*values[name].shape[:batch_dims], -1) for name in latent_sites(model)], -1)
