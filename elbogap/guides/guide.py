"""The root of every elbogap variational family: a Pyro program ``guide(x)`` and what it can do."""

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import (
    CatTransform,
    ComposeTransform,
    IndependentTransform,
    ReshapeTransform,
    Transform,
    identity_transform,
)

from elbogap.plates import data_plate
from elbogap.sites import split_flat

#: the families ``--guides`` selects by name, each registered by the module of :mod:`elbogap.guides` that defines it
#: (:func:`family`); read them through :func:`elbogap.guides.families`, which imports every module of the package first
FAMILIES: dict[str, type["Guide"]] = {}


#: where a guide of a model with several latent sites draws them all as one flat vector (auxiliary, as the latent of
#: Pyro's AutoContinuous): each site is then a Delta at its slice
JOINT_SITE = "elbogap_joint"


class SitesTransform(CatTransform):
    """torch's :class:`CatTransform` along the last dimension, each piece with an output length of its own.

    It takes one length per piece for its input and output alike; a simplex site's piece (stick-breaking) maps
    K - 1 numbers to K. Each piece acts on its slice as one event, so the Jacobian is their sum.
    """

    def __init__(self, pieces, lengths, out_lengths, cache_size: int = 0):
        super().__init__(pieces, -1, lengths, cache_size)
        self.out_lengths = list(out_lengths)

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return SitesTransform(self.transforms, self.lengths, self.out_lengths, cache_size)

    def _call(self, x):
        return torch.cat([piece(part) for piece, part in zip(self.transforms, x.split(self.lengths, -1),
                                                             strict=True)], -1)

    def _inverse(self, y):
        return torch.cat([piece.inv(part) for piece, part in zip(self.transforms, y.split(self.out_lengths, -1),
                                                                 strict=True)], -1)

    def log_abs_det_jacobian(self, x, y):
        return sum(piece.log_abs_det_jacobian(a, b) for piece, a, b in zip(
            self.transforms, x.split(self.lengths, -1), y.split(self.out_lengths, -1), strict=True))

    @constraints.dependent_property
    def codomain(self):
        return constraints.cat([piece.codomain for piece in self.transforms], -1, self.out_lengths)

    def forward_shape(self, shape):
        return torch.Size(shape[:-1]) + (sum(self.out_lengths),)

    def inverse_shape(self, shape):
        return torch.Size(shape[:-1]) + (sum(self.lengths),)


def family(name: str):
    """Register the :class:`Guide` class it decorates as the family ``--guides name`` builds (at its module's
    import): adding a family is adding a module to :mod:`elbogap.guides`."""

    def register(cls: type["Guide"]) -> type["Guide"]:
        if FAMILIES.get(name, cls) is not cls:
            raise ValueError(f"two families are named {name!r}: {FAMILIES[name].__qualname__} and {cls.__qualname__}; "
                             "rename one")
        FAMILIES[name] = cls
        return cls

    return register


@dataclass(frozen=True)
class GuideSettings:
    """The settings families are built from (the CLI's ``--hidden-dims``, ``--flow-depth``, ...)."""

    hidden_dims: tuple[int, ...] = (128,)
    activation: str = "softplus"
    flow_depth: int = 2
    mixture_size: int = 3
    rank: int = 1


class Guide(nn.Module):
    r"""A variational family :math:`q(z \mid x)` written as a Pyro program.

    Subclasses implement :meth:`distribution`, which returns :math:`q(z \mid x)` for a batch of
    rows of ``x`` as a distribution with batch shape ``(batch,)`` and event shape
    ``(latent_dim,)`` on the real line; :meth:`guide` samples the model's latent site from it (in the site's shape
    and support, :meth:`site_distribution`) in the same data plate as the model. A guide knows nothing about
    training or evaluation.
    """

    #: whether one network serves every x (False: free parameters per data point).
    amortized = True
    #: whether Pyro's JIT can trace :meth:`guide` (no data-dependent Python control flow).
    jit_compatible = True
    #: whether the guide is a program evaluated from traces, with no density object (see ProgramGuide).
    program = False
    #: the model's latent site this guide samples, and the model's data plate (a user's model names its own).
    site = "z"
    plate = "data"
    #: the per-point shape of the model's latent site where it is not ``(latent_dim,)`` (a scalar, a matrix)
    site_shape: torch.Size | None = None
    #: ``biject_to(support)`` of the model's latent site where it is not the real line (a Gamma rate: exp), or None:
    #: the family is fitted on the real line and its draws are mapped into the support
    support: Transform | None = None
    #: where the model has several latent sites: each one's per-point shape, in the order of the flat vector q draws
    #: (:data:`JOINT_SITE`), and ``biject_to(support)`` of those off the real line; None for one site (:attr:`site`)
    sites: dict[str, torch.Size] | None = None
    supports: dict[str, Transform] | None = None
    #: whether q's density can be evaluated at any z (contours in posteriors.png, AIS from q), not only at its draws.
    density_anywhere = True
    #: whether q's density at a z it did not draw is a closed form, with no flow to invert (q* refits stick the
    #: landing where it is: :class:`~elbogap.inference.train.RefitRule`).
    closed_form_density = True
    #: whether the search for q* (:meth:`optimum_start`) ranges over every member of the family, so the
    #: approximation gap is exact up to the optimizer; False where it ranges over a part of the family only
    #: (the members an encoder's features reach), so the approximation gap is an upper bound.
    exact_optimum = True
    #: whether the gradient of q's draws in its parameters is exact for every function of z, as a reparameterization's
    #: is; False where the sampler's gradient is unbiased for some functions only (Pyro's mixture, for its weights).
    exact_pathwise = True
    #: the components of a mixture whose ELBO training sums over them (:mod:`elbogap.inference.components`), or None
    components: int | None = None

    @classmethod
    def build(cls, model, num_data: int, settings: GuideSettings) -> "Guide":
        """A fresh guide of this family for ``model`` on a data set of ``num_data`` points."""
        raise NotImplementedError

    def optimum_start(self, x: torch.Tensor, index: torch.Tensor) -> "Guide | None":
        """Where the search for :math:`q^*`, the family's best member for each row of ``x``, starts.

        A new guide with free parameters for these rows, to be fitted with the model held fixed;
        ``self`` where q already is that optimum (the exact posterior, per-point fits); ``None``
        where elbogap cannot search the family (a guide program), so no approximation /
        amortization split is reported.
        """
        return self

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def distribution(self, x: torch.Tensor, index=None) -> dist.TorchDistribution:
        raise NotImplementedError

    def guide(self, x: torch.Tensor, index=None, num_data=None) -> torch.Tensor:
        """The Pyro program :math:`z \\sim q(z \\mid x)`."""
        pyro.module("guide", self)
        with data_plate(x, index, num_data, self.plate):
            return self.sample_sites(self.site_distribution(self.distribution(x, index)))

    def take_sites(self, other: "Guide") -> None:
        """Sample the model's latent sites as ``other`` does: the same names, plate, shapes and supports."""
        self.site, self.plate, self.site_shape, self.support = other.site, other.plate, other.site_shape, other.support
        self.sites, self.supports = other.sites, other.supports

    def sample_sites(self, q: dist.TorchDistribution):
        r"""Draw the model's latent sites from ``q`` (:meth:`site_distribution`). One site is drawn from it; several
        are drawn as one flat vector at :data:`JOINT_SITE` (auxiliary: the model has no such site), and each site is
        then a Delta at its slice, of density 1: the joint draw's density is :math:`q`'s over all of them, as in
        Pyro's AutoContinuous."""
        if self.sites is None:
            return pyro.sample(self.site, q)
        joint = pyro.sample(JOINT_SITE, q, infer={"is_auxiliary": True})
        return {name: pyro.sample(name, dist.Delta(value, event_dim=len(self.sites[name])))
                for name, value in split_flat(self.sites, joint).items()}

    def site_distribution(self, q: dist.TorchDistribution) -> dist.TorchDistribution:
        r"""``q`` as the model's latent site takes it: in the site's per-point shape where it differs from
        ``(latent_dim,)``, and mapped into the site's support where that is not the real line (:attr:`support`), its
        density then :math:`q(u) / |\det \partial z / \partial u|` at :math:`z = \mathrm{support}(u)`, as Pyro's
        autoguides map theirs. For several sites (:attr:`sites`), the flat vector with each site's slice mapped into
        its support."""
        if self.sites is not None:
            transforms = [self._joint_support()] if self.supports else []
        else:
            transforms = []
            shape = self.site_shape  # on the real line: a simplex of K values is K - 1 there
            if shape is not None and self.support is not None:
                shape = torch.Size(self.support.inverse_shape(shape))
            if shape is not None and shape != q.event_shape:  # same values, the site's shape
                transforms.append(ReshapeTransform(q.event_shape, shape))
            if self.support is not None:
                transforms.append(self.support)
        # cached: scoring a draw maps it back to the very tensor q drew, which a flow finds in its own cache
        return dist.TransformedDistribution(q, [t.with_cache(1) for t in transforms]) if transforms else q

    def _joint_support(self) -> Transform:
        """The flat vector of several sites with each site's slice, in its shape, mapped into its support."""
        pieces, lengths, out_lengths = [], [], []
        for name, shape in self.sites.items():
            support = self.supports.get(name)
            flat = shape if support is None else torch.Size(support.inverse_shape(shape))
            # each piece acts on its slice as one event, so that their supports' checks have one shape to join
            pieces.append(IndependentTransform(identity_transform, 1) if support is None else ComposeTransform(
                [ReshapeTransform((math.prod(flat),), flat), support, ReshapeTransform(shape, (math.prod(shape),))]))
            lengths.append(math.prod(flat))
            out_lengths.append(math.prod(shape))
        return SitesTransform(pieces, lengths, out_lengths)
