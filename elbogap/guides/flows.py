"""Normalizing flows on an amortized Gaussian base, conditioned on the encoder's features."""

import pyro.distributions as dist
from pyro.distributions import transforms
from torch import nn

from elbogap.errors import UsageError
from elbogap.guides.base import AmortizedGuide, positive
from elbogap.guides.guide import family
from elbogap.guides.sylvester import ConditionalSylvester


class FlowGuide(AmortizedGuide):
    r"""Base class for flows :math:`z = f_K \circ \dots \circ f_1(\epsilon)` on a Gaussian base.

    The base is :math:`\epsilon \sim \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x))`.

    Each :math:`f_k` is a conditional transform from ``pyro.distributions.transforms`` whose
    parameters depend on the encoder's features :math:`h(x)`, so

    .. math:: \log q(z \mid x) = \log \mathcal{N}(\epsilon; \mu, \sigma^2)
              - \sum_k \log |\det \partial f_k / \partial z_{k-1}|.

    :param int flow_depth: number of transforms :math:`K` (default 2).
    """

    closed_form_density = False  # at a z it did not draw, q inverts the flow (where it can)

    def __init__(self, data_dim, latent_dim, hidden_dims=(128,), activation="softplus",
                 flow_depth: int = 2):
        super().__init__(data_dim, latent_dim, hidden_dims, activation)
        self.loc = self.head(latent_dim)
        self.scale = self.head(latent_dim)
        self.flows = nn.ModuleList(self.make_transform() for _ in range(flow_depth))

    #: whether each transform is autoregressive over z, which needs at least two latent dimensions
    autoregressive = False
    #: why the flow refuses one latent dimension where it is not autoregressive, or None where one will do
    one_dimension: str | None = None

    @classmethod
    def build(cls, model, num_data, settings):
        if cls.autoregressive and model.latent_dim < 2:
            raise UsageError(f"the {cls.__name__} flow is autoregressive and needs latent dim >= 2")
        if cls.one_dimension and model.latent_dim < 2:
            raise UsageError(f"the {cls.__name__} flow needs latent dim >= 2: {cls.one_dimension}")
        return cls(model.data_dim, model.latent_dim, tuple(settings.hidden_dims), settings.activation,
                   flow_depth=settings.flow_depth)

    def make_transform(self):
        raise NotImplementedError

    def from_features(self, h):
        base = dist.Normal(self.loc(h), positive(self.scale(h))).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(h) for flow in self.flows])


@family("iaf")
class IAF(FlowGuide):
    """Inverse autoregressive flow [1]: conditional affine autoregressive transforms.

    References:

    [1] Improved Variational Inference with Inverse Autoregressive Flow, Diederik P. Kingma,
        Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya Sutskever, Max Welling, arXiv:1606.04934
    """

    autoregressive = True

    def make_transform(self):
        width = max(4 * self.latent_dim, 32)
        return transforms.conditional_affine_autoregressive(
            self.latent_dim, self.feature_dim, hidden_dims=[width, width]
        )


@family("planar")
class Planar(FlowGuide):
    """Planar flow [1]: :math:`z + u \\tanh(w^\\top z + b)` with :math:`u, w, b` from the encoder.

    References:

    [1] Variational Inference with Normalizing Flows, Danilo Jimenez Rezende, Shakir Mohamed,
        arXiv:1505.05770
    """

    density_anywhere = False  # Pyro's planar flow has no inverse: q is known at its own draws only
    one_dimension = ("Pyro's planar flow keeps its map invertible by dividing by |w|^2, and on one dimension a point "
                     "whose w the encoder puts near 0 gets a shift near infinity (a Poisson model's loss reached "
                     "1e22 after one step); use diag, full, mixture or sylvester for one latent")

    def make_transform(self):
        return transforms.conditional_planar(self.latent_dim, self.feature_dim)


@family("sylvester")
class Sylvester(FlowGuide):
    """Householder Sylvester flow [1], see :class:`~elbogap.guides.sylvester.ConditionalSylvester`.

    References:

    [1] Sylvester Normalizing Flows for Variational Inference, Rianne van den Berg,
        Leonard Hasenclever, Jakub M. Tomczak, Max Welling, arXiv:1803.05649
    """

    density_anywhere = False  # no inverse: q is known at its own draws only

    def make_transform(self):
        return ConditionalSylvester(self.latent_dim, self.feature_dim)


@family("spline")
class Spline(FlowGuide):
    """Neural spline flow [1]: conditional monotone rational-quadratic autoregressive splines.

    The splines act on :math:`[-5, 5]` and are the identity outside it.

    References:

    [1] Neural Spline Flows, Conor Durkan, Artur Bekasov, Iain Murray, George Papamakarios,
        arXiv:1906.04032
    """

    autoregressive = True

    def make_transform(self):
        width = max(4 * self.latent_dim, 32)
        return transforms.conditional_spline_autoregressive(
            self.latent_dim, self.feature_dim, hidden_dims=[width, width], count_bins=8, bound=5.0
        )
