r"""Each run's numbers per data point, saved beside its record: ``points.npz`` in the run directory.

A split's means (results.json) answer "which family loses how many nats"; the points answer "on which data": each
evaluated point's :math:`\log p(x)`, ELBO, KL gap :math:`\log p(x) - \text{ELBO}`, q's importance estimate and its
:math:`\hat k`, each with its standard error where it has one. Every amortized guide is evaluated on the same
points (a per-datapoint guide on the whole training split, not its seeded subset); under
``--mode fixed-model`` the guides of a seed share one model and each point's :math:`\log p(x)` (guide-independent
estimators draw from the seed's own stream), so two families' gaps on a point differ by their ELBOs there.

The file holds one array per split and number, named ``SPLIT/NUMBER`` (``test/kl_gap``, ``train/log_px_stderr``),
and ``SPLIT/row``, the row of the split each entry belongs to (the training split is evaluated on a seeded subset).
NaN where a point has no such number (``--log-px auto`` runs AIS on a subset of points). A model with global latents
has one unit, the whole data set; its runs save none (per-row log-likelihoods are in the ArviZ export).
"""

from pathlib import Path

import numpy as np
import torch

#: the file a run's per-point numbers are saved to, in its run directory
POINTS = "points.npz"
#: the key under which a split's metrics carry its per-point numbers until :func:`save_points` takes them out
CARRIED = "points"


def carried(per_point: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, np.ndarray]:
    """An evaluation's per-point tensors of one value a point (each draw's ELBO left out) with the split's ``rows``,
    as a split's metrics carry them to :func:`save_points`."""
    numbers = {key: value for key, value in per_point.items() if value.dim() == 1 and len(value) == len(rows)}
    return {"row": rows.cpu().numpy(), **{key: value.detach().cpu().numpy() for key, value in numbers.items()}}


def save_points(path: str | Path, metrics: dict) -> Path | None:
    """Take each split's carried per-point numbers out of ``metrics`` (a run's, by split) and write them to ``path``
    as ``SPLIT/NUMBER`` arrays; the path, or None where no split carried any."""
    arrays = {}
    for split, values in metrics.items():
        if isinstance(values, dict) and CARRIED in values:
            arrays.update({f"{split}/{key}": array for key, array in values.pop(CARRIED).items()})
    if not arrays:
        return None
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(path)  # a stopped run never leaves half a file
    return path


def load_points(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """A saved ``points.npz`` (or its run directory) as ``{split: {number: array}}``."""
    path = Path(path)
    if path.is_dir():
        path = path / POINTS
    with np.load(path) as saved:
        splits: dict[str, dict[str, np.ndarray]] = {}
        for name in saved.files:
            split, number = name.split("/", 1)
            splits.setdefault(split, {})[number] = saved[name]
    return splits


def point_rows(out: Path, runs: list[dict], split: str) -> list[dict]:
    """One row per finished run and evaluated point of ``split``: ``guide``, ``seed``, ``row`` (the point's row in
    the split) and that point's numbers, for ``pandas.DataFrame``. A run without a ``points.npz`` (finished before
    runs saved one) has no rows."""
    table = []
    for run in runs:
        path = Path(out) / run["run_dir"] / POINTS
        if "failed" in run or not path.is_file():
            continue
        numbers = load_points(path).get(split)
        if numbers is None:
            continue
        for index in range(len(numbers["row"])):
            row = {"guide": run["guide"], "seed": run["seed"]}
            row.update({key: _plain(values[index]) for key, values in numbers.items()})
            table.append(row)
    return table


def _plain(value):
    """A numpy scalar as the Python number or bool it holds."""
    return value.item() if isinstance(value, np.generic) else value
