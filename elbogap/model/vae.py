"""The variational autoencoder's decoder: a neural likelihood on a standard normal prior."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from elbogap.errors import UsageError
from elbogap.model.base import LatentModel
from elbogap.model.bernoulli import BernoulliPixels
from elbogap.nn import mlp, output_width


class VAE(LatentModel):
    r"""Deep latent Gaussian model :math:`z \sim \mathcal{N}(0, I)`, :math:`x \sim p(x \mid f(z))`.

    The decoder :math:`f` is an MLP. With ``likelihood="bernoulli"`` it outputs logits,
    :math:`p(x \mid z) = \prod_j \mathrm{Bernoulli}(x_j; \sigma(f_j(z)))`; with
    ``likelihood="gaussian"`` it outputs means and a learned per-dimension scale,
    :math:`p(x \mid z) = \prod_j \mathcal{N}(x_j; f_j(z), s_j^2)`.

    :param int data_dim: dimension of one observation.
    :param int latent_dim: dimension of :math:`z`.
    :param hidden_dims: widths of the decoder's hidden layers.
    :param str activation: hidden activation (see :data:`elbogap.nn.ACTIVATIONS`).
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``.

    References:

    [1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling, arXiv:1312.6114
    """

    likelihoods = ("bernoulli", "gaussian")

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (128,),
        activation: str = "softplus",
        likelihood: str = "bernoulli",
    ):
        super().__init__(data_dim, latent_dim)
        if likelihood not in self.likelihoods:
            raise UsageError(f"unknown likelihood {likelihood!r}; choose bernoulli or gaussian")
        self.likelihood_name = likelihood
        self.hidden = mlp(latent_dim, hidden_dims, activation)
        self.out = nn.Linear(output_width(latent_dim, hidden_dims), data_dim)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(data_dim))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (Bernoulli) or means (Gaussian) of :math:`p(x \\mid z)`."""
        return self.out(self.hidden(z))

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        if self.likelihood_name == "bernoulli":
            return BernoulliPixels(self.decode(z))
        return dist.Normal(self.decode(z), self.log_scale.exp()).to_event(1)
