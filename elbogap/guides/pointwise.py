r""":math:`q^*(z \mid x_n)`: an amortized family with its encoder's features set free per data point."""

import torch
from torch import nn

from elbogap.guides.base import AmortizedGuide, Guide


class PointwiseGuide(Guide):
    r""":math:`q^*(z \mid x_n)`: the family of an amortized guide with free features per data point.

    The encoder's features :math:`h_n` become free parameters, initialized at
    :math:`\mathrm{encoder}(x_n)`; the family's heads and flow conditioners stay fixed. The
    Gaussian families' heads are linear maps onto every one of their parameters, so every member
    of the family is reachable; for flows, the members reachable through the conditioning
    networks, so their approximation gap is an upper bound.
    """

    amortized = False

    def __init__(self, guide: AmortizedGuide, x: torch.Tensor):
        self.jit_compatible = guide.jit_compatible
        super().__init__(guide.latent_dim)
        self.site, self.plate, self.density_anywhere = guide.site, guide.plate, guide.density_anywhere
        self.site_shape = guide.site_shape
        object.__setattr__(self, "family", guide)  # not a submodule: its parameters stay fixed
        with torch.no_grad():
            self.features = nn.Parameter(guide.encoder(x).clone())

    def distribution(self, x, index=None):
        return self.family.from_features(self.features if index is None else self.features[index])
