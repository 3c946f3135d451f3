"""The shape every elbogap variational family shares: amortized by an encoder, or by heads that output the family's
own parameters (:class:`Guide` and :class:`GuideSettings` live in :mod:`elbogap.guides.guide`)."""

import warnings
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from elbogap.guides.guide import Guide, GuideSettings
from elbogap.guides.pointwise import PointwiseGuide, PointwiseParameters
from elbogap.nn import mlp, output_width

__all__ = ["AmortizedGuide", "Guide", "GuideSettings", "ParametricGuide", "positive"]


class AmortizedGuide(Guide):
    """A guide whose parameters are outputs of an encoder MLP applied to ``x``.

    Its q* frees the encoder's features per data point
    (:class:`~elbogap.guides.pointwise.PointwiseGuide`), so it reaches only the members the heads
    map some features onto: in general a part of the family (always where the heads have more
    outputs than there are features), so the approximation gap is an upper bound. A family whose
    heads output its own parameters derives from :class:`ParametricGuide` instead.

    :param int data_dim: dimension of one observation.
    :param int latent_dim: dimension of :math:`z`.
    :param hidden_dims: widths of the encoder's hidden layers; empty for a linear encoder.
    :param str activation: hidden activation.
    """

    exact_optimum = False

    def __init__(self, data_dim: int, latent_dim: int, hidden_dims: Sequence[int] = (128,),
                 activation: str = "softplus"):
        super().__init__(latent_dim)
        self.data_dim = data_dim
        self.encoder = mlp(data_dim, hidden_dims, activation)
        self.feature_dim = output_width(data_dim, hidden_dims)

    @classmethod
    def build(cls, model, num_data, settings):
        return cls(model.data_dim, model.latent_dim, tuple(settings.hidden_dims), settings.activation)

    def optimum_start(self, x, index):
        return PointwiseGuide(self, x)

    def distribution(self, x, index=None):
        return self.from_features(self.encoder(x))

    def from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` from the encoder's features ``h = encoder(x)`` (batch shape ``h.shape[:-1]``)."""
        raise NotImplementedError

    def head(self, width: int) -> nn.Linear:
        """A linear map from the encoder's features to ``width`` outputs."""
        if width:
            return nn.Linear(self.feature_dim, width)
        with warnings.catch_warnings():  # no outputs (one latent's full covariance has none below its diagonal)
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            return nn.Linear(self.feature_dim, 0)


class ParametricGuide(AmortizedGuide):
    r"""An amortized family whose heads output the family's own parameters, e.g. a Gaussian's mean and scale factor.

    :meth:`unconstrained` names the heads' outputs for the features :math:`h`, and
    :meth:`from_unconstrained` builds :math:`q(z \mid x)` from them. Its q* frees these parameters
    per data point (:class:`~elbogap.guides.pointwise.PointwiseParameters`), starting from the
    heads' outputs, so every member of the family is reachable: the approximation gap is exact,
    up to the optimizer.
    """

    exact_optimum = True

    def optimum_start(self, x, index):
        return PointwiseParameters(self, x)

    def unconstrained(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """The family's unconstrained parameters for the features ``h``, by :meth:`from_unconstrained`'s names."""
        raise NotImplementedError

    def from_unconstrained(self, **params: torch.Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` from the family's unconstrained parameters (batch shape their leading shape)."""
        raise NotImplementedError

    def from_features(self, h):
        return self.from_unconstrained(**self.unconstrained(h))


def positive(raw: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """Map unconstrained outputs to positive scales; softplus keeps gradients tame."""
    return nn.functional.softplus(raw) + floor
