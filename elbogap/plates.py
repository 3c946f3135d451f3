"""The one data plate that models and guides share."""

import pyro
import torch


def data_plate(x: torch.Tensor, index: torch.Tensor | None = None, num_data: int | None = None,
               name: str = "data"):
    """Return ``pyro.plate(name, ...)`` over the rows of ``x`` (``"data"``, or a user's model's own name).

    When ``x`` is a minibatch of a data set of ``num_data`` points, the plate scales every
    log-density inside it by ``num_data / len(x)``, so the minibatch ELBO is an unbiased
    estimate of the full-data ELBO.

    :param torch.Tensor x: data of shape ``(batch, data_dim)``.
    :param torch.Tensor index: positions of the rows of ``x`` in the full data set
        (defaults to ``arange(len(x))``); per-datapoint guides use it to pick their parameters.
    :param int num_data: size of the full data set (defaults to ``len(x)``: no scaling).
    """
    if index is None:
        index = torch.arange(x.shape[0], device=x.device)
    size = x.shape[0] if num_data is None else num_data
    return pyro.plate(name, size=size, subsample=index, dim=-1)
