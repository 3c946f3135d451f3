"""Per-datapoint (non-amortized) mean-field Gaussians."""

import pyro.distributions as dist
import torch
from torch import nn

from elbogap.guides.base import Guide, positive
from elbogap.guides.guide import family


@family("local")
class LocalNormal(Guide):
    r"""Free parameters per data point: :math:`q(z \mid x_n) = \mathcal{N}(m_n, \mathrm{diag}\,s_n^2)`.

    No encoder is shared across points, so this family has no amortization gap; its gap is the
    diagonal Gaussian's approximation gap (once its parameters are fitted). Rows of ``x`` are
    matched to parameters through ``index``, their positions in the data set.

    :param int num_data: number of data points the guide holds parameters for.
    :param int latent_dim: dimension of :math:`z`.
    """

    amortized = False

    def __init__(self, num_data: int, latent_dim: int):
        super().__init__(latent_dim)
        self.num_data = num_data
        self.loc = nn.Parameter(torch.zeros(num_data, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((num_data, latent_dim), 0.5413))  # scale 1

    @classmethod
    def build(cls, model, num_data, settings):
        return cls(num_data, model.latent_dim)

    def optimum_start(self, x, index):
        """This guide's own fit for the rows ``index``: q* is searched from there (it is already its optimum
        when the fit has converged)."""
        start = self.fresh(len(x))
        with torch.no_grad():
            start.loc.copy_(self.loc[index])
            start.raw_scale.copy_(self.raw_scale[index])
        return start

    def fresh(self, num_data: int) -> "LocalNormal":
        """A new, unfitted guide of this family for ``num_data`` other points: same site, dtype and device."""
        guide = LocalNormal(num_data, self.latent_dim).to(self.loc)
        guide.take_sites(self)
        return guide

    def distribution(self, x, index=None):
        if index is None:
            if x.shape[0] != self.num_data:
                raise ValueError("a per-datapoint guide needs the data points' index")
            index = torch.arange(self.num_data, device=x.device)
        return dist.Normal(self.loc[index], positive(self.raw_scale[index])).to_event(1)
