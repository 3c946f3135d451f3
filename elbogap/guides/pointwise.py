r""":math:`q^*(z \mid x_n)`: an amortized family set free per data point, to search for its best member."""

from typing import TYPE_CHECKING

import torch
from torch import nn

from elbogap.guides.guide import Guide

if TYPE_CHECKING:  # the families these free per point derive from Guide in elbogap.guides.base, which imports this
    from elbogap.guides.base import AmortizedGuide, ParametricGuide


class _Pointwise(Guide):
    """What the two routes share: the family's site, plate and capabilities, and the family kept fixed."""

    amortized = False

    def __init__(self, guide: "AmortizedGuide"):
        self.jit_compatible = guide.jit_compatible
        super().__init__(guide.latent_dim)
        self.take_sites(guide)
        for capability in ("density_anywhere", "closed_form_density", "exact_pathwise", "components"):
            setattr(self, capability, getattr(guide, capability))
        object.__setattr__(self, "family", guide)  # not a submodule: its parameters stay fixed


class PointwiseParameters(_Pointwise):
    r""":math:`q^*(z \mid x_n)`: the family's own parameters set free per data point.

    The family's unconstrained parameters (a Gaussian's mean and scale factor, see
    :meth:`~elbogap.guides.base.ParametricGuide.unconstrained`) become free parameters
    :math:`\theta_n`, initialized at the heads' outputs for :math:`x_n`, and
    :math:`q^*(z \mid x_n) = q_{\theta_n}(z)`. Every member of the family is reachable, so the
    approximation gap is exact, up to the optimizer.
    """

    exact_optimum = True

    def __init__(self, guide: "ParametricGuide", x: torch.Tensor):
        super().__init__(guide)
        with torch.no_grad():
            start = guide.unconstrained(guide.encoder(x))
        self.names = tuple(start)
        for name, value in start.items():
            self.register_parameter(name, nn.Parameter(value.clone()))

    def distribution(self, x, index=None):
        params = {name: getattr(self, name) for name in self.names}
        if index is not None:
            params = {name: value[index] for name, value in params.items()}
        return self.family.from_unconstrained(**params)


class PointwiseGuide(_Pointwise):
    r""":math:`q^*(z \mid x_n)`: the family of an amortized guide with free features per data point.

    The encoder's features :math:`h_n` become free parameters, initialized at
    :math:`\mathrm{encoder}(x_n)`; the family's heads and flow conditioners stay fixed. This reaches
    only the members they map some features onto: in general a part of the family (always where
    they have more outputs than there are features), so the approximation gap is an upper bound.
    The route of the flows and the mixture; the Gaussian families free their own parameters
    instead (:class:`PointwiseParameters`).
    """

    exact_optimum = False

    def __init__(self, guide: "AmortizedGuide", x: torch.Tensor):
        super().__init__(guide)
        with torch.no_grad():
            self.features = nn.Parameter(guide.encoder(x).clone())

    def distribution(self, x, index=None):
        return self.family.from_features(self.features if index is None else self.features[index])
