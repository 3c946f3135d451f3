"""Gaussian families: mean-field, full covariance, and low rank plus diagonal."""

from collections.abc import Sequence

import pyro.distributions as dist
import torch

from elbogap.guides.base import ParametricGuide, positive
from elbogap.guides.guide import family


@family("diag")
class DiagonalNormal(ParametricGuide):
    r"""Mean-field Gaussian :math:`q(z \mid x) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x))`.

    The family the standard VAE uses [1]. Its best member for a Gaussian posterior
    :math:`\mathcal{N}(m, \Lambda^{-1})` matches the mean and the diagonal of the precision,
    leaving the gap :math:`\tfrac12 (\sum_i \log \Lambda_{ii} - \log\det\Lambda)`. Its own
    parameters are :math:`\mu` and the unconstrained form of :math:`\sigma`; q* frees them per point.

    References:

    [1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling, arXiv:1312.6114
    """

    def __init__(self, data_dim, latent_dim, hidden_dims=(128,), activation="softplus"):
        super().__init__(data_dim, latent_dim, hidden_dims, activation)
        self.loc = self.head(latent_dim)
        self.scale = self.head(latent_dim)

    def unconstrained(self, h):
        return {"loc": self.loc(h), "raw_scale": self.scale(h)}

    def from_unconstrained(self, loc, raw_scale):
        return dist.Normal(loc, positive(raw_scale)).to_event(1)


@family("full")
class FullNormal(ParametricGuide):
    r"""Full-covariance Gaussian :math:`q(z \mid x) = \mathcal{N}(\mu(x), L(x) L(x)^\top)`.

    :math:`L(x)` is lower triangular with a positive diagonal (a Cholesky factor), so every
    covariance is a member. Its own parameters are :math:`\mu`, the unconstrained form of
    :math:`L`'s diagonal and :math:`L`'s entries below it; q* frees them per point, so it reaches
    every member: for a Gaussian posterior, the posterior itself.
    """

    def __init__(self, data_dim, latent_dim, hidden_dims=(128,), activation="softplus"):
        super().__init__(data_dim, latent_dim, hidden_dims, activation)
        self.loc = self.head(latent_dim)
        self.diag = self.head(latent_dim)
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.off_diag = self.head(len(rows))

    def unconstrained(self, h):
        # one latent has no entries below its diagonal: the head of no outputs is kept (a checkpoint's keys) but not
        # called, since a compiled loss's backward cannot reshape its empty gradient (the VAE's full family on one
        # latent failed at its first step)
        below = self.off_diag(h) if self.off_diag.out_features else h.new_zeros(h.shape[:-1] + (0,))
        return {"loc": self.loc(h), "raw_diag": self.diag(h), "off_diag": below}

    def from_unconstrained(self, loc, raw_diag, off_diag):
        k = self.latent_dim  # out of place, so that vmap can batch it over stacked fits
        below = off_diag.new_zeros(off_diag.shape[:-1] + (k * k,)).index_copy(
            -1, self.rows * k + self.cols, off_diag)
        scale_tril = torch.diag_embed(positive(raw_diag)) + below.reshape(off_diag.shape[:-1] + (k, k))
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)


@family("lowrank")
class LowRankNormal(ParametricGuide):
    r"""Low-rank-plus-diagonal Gaussian, :math:`\mathcal{N}(\mu(x), U(x) U(x)^\top + \mathrm{diag}\,d(x))`.

    Its own parameters are :math:`\mu`, :math:`U` and the unconstrained form of :math:`d`; q*
    frees them per point.

    :param int rank: number of columns of :math:`U(x)` (default 1).
    """

    @classmethod
    def build(cls, model, num_data, settings):
        return cls(model.data_dim, model.latent_dim, tuple(settings.hidden_dims), settings.activation,
                   rank=settings.rank)

    def __init__(self, data_dim, latent_dim, hidden_dims: Sequence[int] = (128,),
                 activation="softplus", rank: int = 1):
        super().__init__(data_dim, latent_dim, hidden_dims, activation)
        self.rank = rank
        self.loc = self.head(latent_dim)
        self.factor = self.head(latent_dim * rank)
        self.diag = self.head(latent_dim)

    def unconstrained(self, h):
        factor = self.factor(h).reshape(h.shape[:-1] + (self.latent_dim, self.rank))
        return {"loc": self.loc(h), "cov_factor": factor, "raw_cov_diag": self.diag(h)}

    def from_unconstrained(self, loc, cov_factor, raw_cov_diag):
        return dist.LowRankMultivariateNormal(loc, cov_factor, positive(raw_cov_diag))
