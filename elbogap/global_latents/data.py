"""Which data a user's model conditions on: per point (a VAE's splits) or the whole data set (global latents)."""

from pathlib import Path

import torch

from elbogap import streams
from elbogap.data import Dataset, load_data, load_whole
from elbogap.errors import UsageError
from elbogap.global_latents.model import has_global_latents, probe_trace
from elbogap.user_model import check_unsubsampled, resolve_program, trace_program


def study_data(config) -> Dataset:
    """The data of a study of the user's program ``config.model``: its train/test splits, or all of D.

    The program is traced on three rows: a latent that is not one value per row (or a program
    that cannot run on three rows, such as one with a plate of fixed size) makes it a model with
    global latents, whose data set is every row (:func:`~elbogap.data.load_whole`), traced again
    to confirm. ``kind`` and ``rows`` of the returned data set say which.
    """
    whole = None
    try:
        split = load_data(config.data, config.test_fraction, config.data_seed, config.data_dir, config.binarize,
                          config.train_size, config.test_size)
    except UsageError:  # one row (a file's) is a data set D of one observation, but no train/test split
        whole = load_whole(config.data, config.data_seed, config.data_dir, config.binarize, config.train_size)
        if len(whole[0]) != 1:
            raise
        split = None
    probe = split.train[:3] if split is not None else whole[0]
    program, _ = resolve_program(config.model, "model", probe.shape[-1], config.latent_dim)
    if has_global_latents(program, probe) is False:  # None: it needs all its rows, judged on the whole set below
        return split or load_data(config.data, config.test_fraction)  # one row: refused in one line, as before
    rows, what = whole or load_whole(config.data, config.data_seed, config.data_dir, config.binarize,
                                     config.train_size)
    trace = trace_program(lambda x: probe_trace(program, x), rows, config.model, "model")  # one line if it cannot run
    check_unsubsampled(trace, program, config.model)
    name = split.name if split is not None else Path(config.data).name
    if not config.holdout:
        return Dataset(name, rows, rows[:0], kind="global", rows=what)
    held = held_out(len(rows), config.holdout, config.data_seed)
    kept = torch.ones(len(rows), dtype=torch.bool)
    kept[held] = False
    what = f"{int(kept.sum())} of {what.removeprefix('every row of ')}; {len(held)} rows held out (--holdout)"
    return Dataset(name, rows[kept], rows[held], kind="global", rows=what, held_out=tuple(held.tolist()))


def held_out(count: int, share: float, data_seed: int) -> torch.Tensor:
    """The rows ``--holdout`` keeps out of D: a seeded subset of ``share`` of them (at least one), in order."""
    number = min(count - 1, max(1, round(share * count)))
    return torch.randperm(count, generator=streams.generator("holdout", data_seed))[:number].sort().values
