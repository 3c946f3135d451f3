r"""The signal-to-noise ratio of a training gradient, for the encoder's and the decoder's parameters.

For :math:`M` independent draws :math:`g_{1}, \dots, g_{M}` of a stochastic gradient of the loss on
one fixed batch, the signal-to-noise ratio of parameter entry :math:`j` is

.. math::

    \mathrm{SNR}_j = \frac{\left|\frac1M \sum_m g_{mj}\right|}{\mathrm{sd}_m\, g_{mj}},

with the sample standard deviation (divisor :math:`M - 1`). A group of parameters (the guide's,
the "encoder"; the model's, the "decoder") is summarized by the median of :math:`\mathrm{SNR}_j`
over its entries, and by their mean. Entries whose gradient is exactly zero in every draw (a
per-datapoint guide's parameters of rows outside the batch, masked weights) carry no gradient at
all and are left out; an entry with zero spread but a nonzero mean has an infinite ratio. An entry
with no signal reads :math:`|\bar g| / \mathrm{sd} \approx |\mathcal{N}(0, 1)| / \sqrt{M}`, so a group of
them has a median near :math:`0.67 / \sqrt{M}`: values near that floor are noise.

References:

[1] Tighter Variational Bounds are Not Necessarily Better, Tom Rainforth, Adam R. Kosiorek,
    Tuan Anh Le, Chris J. Maddison, Maximilian Igl, Frank Wood, Yee Whye Teh, arXiv:1802.04537
"""

from typing import NamedTuple

import pyro
import torch

from elbogap.device import rng_devices
from elbogap.errors import UsageError
from elbogap.inference.svi import find_params


class GroupSNR(NamedTuple):
    """The signal-to-noise ratio of one group of parameters.

    :param float median: the median over its counted entries of :math:`|\\text{mean}| / \\text{sd}`.
    :param float mean: their mean (infinite where one entry's gradient has no spread).
    :param int entries: the entries counted (those whose gradient is not zero in every draw).
    :param torch.Tensor per_entry: the ratio of every entry, flattened in parameter order; NaN
        where the entry is left out.
    """

    median: float
    mean: float
    entries: int
    per_entry: torch.Tensor


def parameter_groups(model, guide, args: tuple, kwargs: dict | None = None) -> dict[str, list[torch.Tensor]]:
    """The unconstrained tensors of the guide's param sites (``"encoder"``) and of the model's others (``"decoder"``).

    Found by tracing as :func:`~elbogap.inference.svi.find_params` finds what SVI fits: a model held
    fixed (``poutine.block(hide_types=["param"])``) or without parameters gives no ``"decoder"``,
    a guide without parameters no ``"encoder"``. A tensor both programs reach counts as the guide's.
    """
    kwargs = kwargs or {}
    encoder = find_params(lambda *_, **__: None, guide, *args, **kwargs)
    seen = {id(value) for value in encoder}
    decoder = [value for value in find_params(model, guide, *args, **kwargs) if id(value) not in seen]
    return {name: params for name, params in (("encoder", encoder), ("decoder", decoder)) if params}


def gradient_draws(loss, model, guide, params: list[torch.Tensor], args: tuple, kwargs: dict | None = None,
                   draws: int = 16) -> torch.Tensor:
    """``draws`` independent gradients of ``loss`` with respect to ``params``, one row each: shape ``(draws, entries)``.

    Each row is one call of ``loss.loss_and_grads`` (any Pyro ELBO, whatever its estimator), read from
    the tensors' ``.grad``; the ``.grad`` of ``params`` and of every tensor in Pyro's param store is
    restored afterwards. Draws come from torch's global generator, as the programs' samples do.
    """
    kwargs = kwargs or {}
    leaves = {id(p): p for p in [*params, *(value.unconstrained() for value in pyro.get_param_store().values())]}
    saved = {key: leaf.grad for key, leaf in leaves.items()}
    rows = []
    try:
        for leaf in leaves.values():
            leaf.grad = None
        for _ in range(draws):
            loss.loss_and_grads(model, guide, *args, **kwargs)
            rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                                   for p in params]))
            for leaf in leaves.values():
                leaf.grad = None
    finally:
        for key, leaf in leaves.items():
            leaf.grad = saved[key]
    return torch.stack(rows)


def signal_to_noise(grads: torch.Tensor) -> torch.Tensor:
    """Per column of ``grads`` (draws by entries): ``|mean| / sd``, NaN where every draw is exactly zero."""
    ratio = grads.mean(0).abs() / grads.std(0)
    return ratio.masked_fill((grads == 0).all(0), float("nan"))


def summarize(per_entry: torch.Tensor) -> GroupSNR:
    """The median and mean over the counted (non-NaN) entries of a group."""
    counted = per_entry[~per_entry.isnan()].double().sort().values
    if not len(counted):
        return GroupSNR(float("nan"), float("nan"), 0, per_entry)
    middle = len(counted) // 2  # torch.median takes the lower middle value; the median of an even count is their mean
    median = counted[middle] if len(counted) % 2 else (counted[middle - 1] + counted[middle]) / 2
    return GroupSNR(float(median), float(counted.mean()), len(counted), per_entry)


def gradient_snr(loss, model, guide, args: tuple, kwargs: dict | None = None, *, draws: int = 16,
                 groups: dict[str, list[torch.Tensor]] | None = None, seed: int | None = None) -> dict[str, GroupSNR]:
    r"""The signal-to-noise ratio of ``loss``'s gradient on one fixed batch ``args``, per group of parameters.

    ``draws`` gradients are drawn by :func:`gradient_draws` and summarized per group by
    :func:`summarize` (the median and mean over entries of :math:`|\text{mean}| / \text{sd}`; see the
    module's docstring). Nothing changes for whoever called: the optimizer is not stepped, every
    ``.grad`` is restored, and the draws come from a fork of torch's random number generators
    (seeded with ``seed`` where given), so a training run draws the same numbers with or without
    the measurement.

    :param loss: a Pyro ELBO (anything with ``loss_and_grads(model, guide, *args, **kwargs)``).
    :param model: the model program, as the loss is handed it.
    :param guide: the guide program.
    :param tuple args: the batch, the programs' positional arguments.
    :param dict kwargs: their keyword arguments.
    :param int draws: :math:`M`, the independent gradient draws (at least 2).
    :param dict groups: named lists of tensors (default: :func:`parameter_groups`, the guide's as
        ``"encoder"`` and the model's as ``"decoder"``).
    :param int seed: seed of torch's generator for the draws (default: continue the forked stream).
    :returns: a :class:`GroupSNR` per group, in the order of ``groups``.
    """
    if draws < 2:
        raise UsageError(f"the gradient's signal-to-noise needs at least 2 draws (a standard deviation), got {draws}; "
                         "pass draws >= 2")
    kwargs = kwargs or {}
    groups = groups if groups is not None else parameter_groups(model, guide, args, kwargs)
    params = [p for group in groups.values() for p in group]
    if not params:
        return {}
    with torch.random.fork_rng(devices=rng_devices(*args)):
        if seed is not None:
            torch.manual_seed(seed)
        per_entry = signal_to_noise(gradient_draws(loss, model, guide, params, args, kwargs, draws))
    result, start = {}, 0
    for name, group in groups.items():
        size = sum(p.numel() for p in group)
        result[name] = summarize(per_entry[start:start + size])
        start += size
    return result
