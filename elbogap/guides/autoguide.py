"""Pyro's autoguides that factorize over data points, by name: ``--guides auto:AutoNormal``."""

import itertools

import pyro
import pyro.infer.autoguide as autoguides
import torch

from elbogap.errors import UsageError
from elbogap.guides.base import Guide

_instances = itertools.count()

#: autoguides with one independent factor per latent site and data point: free parameters per point
PER_POINT = ("AutoNormal",)


class AutoGuideFamily(Guide):
    r"""One of Pyro's autoguides built on the model, with free parameters per data point (like ``local``).

    ``AutoNormal`` puts an independent normal on each latent site's unconstrained value for each
    data point of the model's subsampled data plate, so it is a per-datapoint family: no
    amortization gap, and for a split it was not trained on its parameters are fitted with the
    model held fixed. It is evaluated from traces, like a guide program. Autoguides that couple
    data points (``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``, flows over the
    whole latent vector) are refused: they are not families of :math:`q(z \mid x_n)`.

    :param str name: the autoguide's class name in :mod:`pyro.infer.autoguide`.
    :param model: the model; its program must subsample its data plate (take ``index``, ``num_data``).
    :param int num_data: data points the guide holds parameters for.
    """

    amortized = False
    program = True
    jit_compatible = False
    density_anywhere = False

    def __init__(self, name: str, model, num_data: int):
        if name not in PER_POINT:
            known = hasattr(autoguides, name)
            raise UsageError(f"auto:{name} " + ("couples the data points (one joint distribution over every point's "
                             "latents), so it is no family of q(z|x_n)" if known else "is no Pyro autoguide")
                             + f"; autoguides elbogap can measure: {', '.join('auto:' + n for n in PER_POINT)}")
        if getattr(model, "takes_index", True) is False:
            raise UsageError(f"auto:{name} keeps parameters per data point, and the model's data plate does not "
                             "subsample: write the model as fn(x, index, num_data) with pyro.plate(name, num_data, "
                             "subsample=index)")
        super().__init__(model.latent_dim)
        self.name, self.num_data = name, num_data
        object.__setattr__(self, "model", model)  # not a submodule: the model's parameters are not the guide's
        plate = getattr(model, "data_plate", "data")

        def create_plates(x, index=None, num_data=None):  # the model's own subsample, so parameters follow points
            return pyro.plate(plate, num_data or len(x), subsample=index, dim=-1)

        self.auto = getattr(autoguides, name)(model.model, create_plates=create_plates)
        # its own names in Pyro's param store: a fresh guide for another split must not pick up this one's values
        self.auto._pyro_name = f"{name}_{next(_instances)}"
        x = torch.zeros(min(2, num_data), model.data_dim)
        with torch.no_grad():  # the autoguide makes its parameters, for every data point, on its first call
            self.auto(x, torch.arange(len(x)), num_data)

    def guide(self, x, index=None, num_data=None):
        return self.auto(x, index, num_data or self.num_data)

    def fresh(self, num_data: int) -> "AutoGuideFamily":
        return AutoGuideFamily(self.name, self.model, num_data).to(next(self.parameters()))

    def distribution(self, x, index=None):
        raise UsageError(f"auto:{self.name} is evaluated from traces; it has no density object at any z")
