"""The shape every elbogap generative model shares."""

import warnings

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from elbogap.plates import data_plate

# A frozen model (parameters without gradients) is expected here, not a mistake to warn about.
warnings.filterwarnings("ignore", message=".*not registered in the param store because requires_grad=False")


class LatentModel(nn.Module):
    r"""A generative model :math:`p(z)\,p(x \mid z)` written as a Pyro program.

    :meth:`model` has a latent site ``"z"`` and an observed site ``"x"`` inside the data plate
    of :func:`~elbogap.plates.data_plate`. Subclasses provide :meth:`likelihood`; the prior is
    :math:`p(z) = \mathcal{N}(0, I)`.

    :param int data_dim: dimension of one observation.
    :param int latent_dim: dimension of :math:`z`.
    """

    #: whether :meth:`log_px` and :meth:`posterior` are exact closed forms.
    has_exact_posterior = False
    #: whether Pyro's JIT can trace :meth:`model` (no data-dependent Python control flow).
    jit_compatible = True
    #: whether :meth:`model` broadcasts over leading dimensions of its latents (draws, chains, grid points).
    broadcasts_draws = True

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def prior(self) -> dist.TorchDistribution:
        """:math:`p(z) = \\mathcal{N}(0, I)`, with event shape ``(latent_dim,)``."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        """:math:`p(x \\mid z)`, with event shape ``(data_dim,)`` and any batch shape of ``z``."""
        raise NotImplementedError

    def model(self, x: torch.Tensor, index=None, num_data=None) -> torch.Tensor:
        """The Pyro program :math:`z \\sim p(z),\\ x \\sim p(x \\mid z)`."""
        pyro.module("model", self)
        with data_plate(x, index, num_data):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)
        return z
