"""Probabilistic PCA: the linear-Gaussian model whose evidence and posterior are exact."""

import pyro.distributions as dist
import torch
from torch import nn

from elbogap.model.base import LatentModel


class LinearGaussian(LatentModel):
    r"""Probabilistic PCA, :math:`x = W z + b + \sigma \epsilon` with :math:`z, \epsilon` standard normal.

    Everything is Gaussian, so the evidence and the posterior are closed forms:

    .. math::

        p(x) = \mathcal{N}(x;\ b,\ W W^\top + \sigma^2 I), \qquad
        p(z \mid x) = \mathcal{N}\big(z;\ M^{-1} W^\top (x - b),\ \sigma^2 M^{-1}\big),
        \quad M = W^\top W + \sigma^2 I.

    :param int data_dim: dimension of one observation.
    :param int latent_dim: dimension of :math:`z`.

    References:

    [1] Probabilistic Principal Component Analysis, Michael E. Tipping, Christopher M. Bishop,
        Journal of the Royal Statistical Society B 61(3), 1999
    """

    has_exact_posterior = True

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__(data_dim, latent_dim)
        self.weight = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.bias = nn.Parameter(torch.zeros(data_dim))
        self.log_sigma = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_params(cls, weight: torch.Tensor, bias: torch.Tensor, sigma: float) -> "LinearGaussian":
        """A model with fixed, known parameters (they are not trained)."""
        data_dim, latent_dim = weight.shape
        model = cls(data_dim, latent_dim)
        with torch.no_grad():
            model.weight.copy_(weight)
            model.bias.copy_(bias)
            model.log_sigma.fill_(float(torch.as_tensor(sigma).log()))
        model.requires_grad_(False)
        return model

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1)

    def precision_matrix(self) -> torch.Tensor:
        """:math:`M = W^\\top W + \\sigma^2 I`, so that :math:`\\mathrm{Cov}[z \\mid x] = \\sigma^2 M^{-1}`."""
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype, device=self.weight.device)
        return self.weight.T @ self.weight + self.sigma**2 * eye

    def marginal(self) -> dist.LowRankMultivariateNormal:
        """:math:`p(x) = \\mathcal{N}(b, W W^\\top + \\sigma^2 I)`."""
        cov_diag = (self.sigma**2).expand(self.data_dim)
        return dist.LowRankMultivariateNormal(self.bias, self.weight, cov_diag)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` per row of ``x``."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact :math:`p(z \\mid x)`, batched over the rows of ``x``."""
        precision = self.precision_matrix()
        loc = torch.linalg.solve(precision, (x - self.bias) @ self.weight, left=False)
        covariance = self.sigma**2 * torch.linalg.inv(precision)
        return dist.MultivariateNormal(loc, covariance_matrix=covariance)
