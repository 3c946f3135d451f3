"""Variational families :math:`q(z \\mid x)`, each a Pyro program ``guide(x)``, chosen by short name.

Each family is a :class:`Guide` class that a module of this package registers with :func:`family` when it is
imported; :func:`families` imports every module of the package once and lists them. Adding a family is adding a module
here (the built-in ones are ``gaussian.py``, ``flows.py``, ``mixture.py``, ``local.py`` and ``exact.py``).
"""

import functools
import importlib
import pkgutil
from collections.abc import Sequence

import torch

from elbogap.errors import UsageError
from elbogap.guides.base import AmortizedGuide, Guide, GuideSettings, ParametricGuide
from elbogap.guides.exact import ExactPosterior
from elbogap.guides.flows import IAF, FlowGuide, Planar, Spline, Sylvester
from elbogap.guides.gaussian import DiagonalNormal, FullNormal, LowRankNormal
from elbogap.guides.guide import FAMILIES, family
from elbogap.guides.local import LocalNormal
from elbogap.guides.mixture import Mixture
from elbogap.guides.program import ProgramGuide
from elbogap.sites import latent_sites, latent_transforms


def families() -> dict[str, type[Guide]]:
    """Every family of this package by the name ``--guides`` takes, in alphabetical order."""
    _import_modules()
    return dict(sorted(FAMILIES.items()))


@functools.cache
def _import_modules() -> None:
    """Import each module of this package once; each registers the families it defines."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


#: the families by name (:func:`families`; a module of this package added later is listed there)
GUIDES = families()

__all__ = ["GUIDES", "IAF", "AmortizedGuide", "DiagonalNormal", "ExactPosterior", "FlowGuide", "FullNormal", "Guide",
           "GuideSettings", "LocalNormal", "LowRankNormal", "Mixture", "ParametricGuide", "Planar", "ProgramGuide",
           "Spline", "Sylvester", "build_guide", "families", "family"]


def build_guide(name: str, model, num_data: int, hidden_dims: Sequence[int] = (128,),
                activation: str = "softplus", flow_depth: int = 2, mixture_size: int = 3,
                rank: int = 1) -> Guide:
    """Build the guide called ``name`` for ``model`` on a data set of ``num_data`` points.

    ``flow_depth`` applies to the flows, ``mixture_size`` to ``mixture``, ``rank`` to
    ``lowrank``; ``local`` holds parameters for ``num_data`` points; ``exact`` uses the
    model's closed-form posterior.
    """
    known = families()
    if name not in known:
        raise UsageError(f"unknown guide {name!r}; choose from {', '.join(known)} or name your own program "
                         "as path/to/file.py:name")
    sites, supports = latent_sites(model), latent_transforms(model)
    settings = GuideSettings(tuple(hidden_dims), activation, flow_depth, mixture_size, rank)
    guide = known[name].build(model, num_data, settings)
    guide.plate = getattr(model, "data_plate", "data")
    if len(sites) > 1:  # q over all of them at once, as one flat vector (Guide.sample_sites)
        guide.sites, guide.supports = {name: torch.Size(shape) for name, shape in sites.items()}, dict(supports)
        return guide
    (guide.site, shape), = sites.items()
    guide.site_shape = torch.Size(shape)
    guide.support = supports.get(guide.site)  # a constrained site: q's draws mapped into it
    return guide
