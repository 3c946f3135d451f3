"""Data sets: scikit-learn's digits, a synthetic linear-Gaussian set, and the user's files."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from elbogap.errors import UsageError

BUILTIN = ("digits", "linear-gaussian")
FILE_SUFFIXES = (".npy", ".npz", ".csv")


@dataclass
class Dataset:
    """Train and test splits as float tensors of shape ``(num_points, data_dim)``.

    ``truth`` holds the generating parameters of synthetic data (e.g. ``weight``, ``bias``,
    ``sigma`` of the linear-Gaussian set).
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    truth: dict = field(default_factory=dict)

    @property
    def data_dim(self) -> int:
        return self.train.shape[1]

    @property
    def is_binary(self) -> bool:
        return all(bool(((s == 0) | (s == 1)).all()) for s in (self.train, self.test))

    def splits(self) -> dict[str, torch.Tensor]:
        return {"train": self.train, "test": self.test}


def load_data(spec: str, test_fraction: float = 0.2, data_seed: int = 0) -> Dataset:
    """Load ``"digits"``, ``"linear-gaussian"`` or a ``.npy``/``.npz``/``.csv`` file.

    Data without a given split is shuffled with ``data_seed`` and split ``test_fraction``
    for test. An ``.npz`` file may hold ``train`` and ``test`` arrays; otherwise it must hold
    one array. Images (``N x H x W``) are flattened.
    """
    if spec == "digits":
        return digits(test_fraction, data_seed)
    if spec == "linear-gaussian":
        return linear_gaussian(data_seed=data_seed)
    path = Path(spec)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise UsageError(
            f"unknown data {spec!r}; use one of {', '.join(BUILTIN)} or a .npy, .npz or .csv file"
        )
    if not path.is_file():
        raise UsageError(f"data file {spec} does not exist; check the path given to --data")
    arrays = read_arrays(path)
    name = path.name
    if "test" in arrays:
        return Dataset(name, as_matrix(arrays["train"], f"{name}:train"),
                       as_matrix(arrays["test"], f"{name}:test"))
    return split(name, as_matrix(arrays["data"], name), test_fraction, data_seed)


def digits(test_fraction: float = 0.2, data_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1] and binarized at 0.5."""
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16.0
    return split("digits", (pixels > 0.5).float(), test_fraction, data_seed)


def linear_gaussian(num_train: int = 1000, num_test: int = 250, data_dim: int = 8,
                    latent_dim: int = 2, sigma: float = 0.5, data_seed: int = 0) -> Dataset:
    """Synthetic probabilistic-PCA data :math:`x = W z + b + \\sigma\\epsilon` with known parameters.

    :math:`W` has correlated, non-orthogonal columns, so the posterior covariance
    :math:`\\sigma^2 (W^\\top W + \\sigma^2 I)^{-1}` is not diagonal and mean-field guides have a
    visible gap.
    """
    gen = torch.Generator().manual_seed(data_seed)
    weight = torch.randn(data_dim, latent_dim, generator=gen)
    weight[:, 1:] += 0.8 * weight[:, :1]  # correlated columns: a tilted posterior
    bias = torch.randn(data_dim, generator=gen)
    z = torch.randn(num_train + num_test, latent_dim, generator=gen)
    x = z @ weight.T + bias + sigma * torch.randn(num_train + num_test, data_dim, generator=gen)
    truth = {"weight": weight, "bias": bias, "sigma": sigma}
    return Dataset("linear-gaussian", x[:num_train], x[num_train:], truth)


def split(name: str, data: torch.Tensor, test_fraction: float, data_seed: int) -> Dataset:
    """Shuffle with ``data_seed`` and hold out ``test_fraction`` of the rows for test."""
    if not 0 < test_fraction < 1:
        raise UsageError(f"test fraction must lie in (0, 1), got {test_fraction}")
    if len(data) < 2:
        raise UsageError(f"{name} has {len(data)} row(s); at least 2 are needed for a train/test split")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(data_seed))
    num_test = max(1, round(test_fraction * len(data)))
    return Dataset(name, data[order[num_test:]], data[order[:num_test]])


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read a file into ``{"data": array}`` or ``{"train": ..., "test": ...}``."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {"data": np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            if {"train", "test"} <= arrays.keys():
                return {"train": arrays["train"], "test": arrays["test"]}
            if len(arrays) == 1:
                return {"data": next(iter(arrays.values()))}
            raise UsageError(
                f"{path} holds arrays {sorted(arrays)}; an .npz needs 'train' and 'test' arrays "
                "or exactly one array"
            )
        return {"data": read_csv(path)}
    except UsageError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise UsageError(f"cannot read {path}: {error}; check that it is a valid {suffix} file") from None


def read_csv(path: Path) -> np.ndarray:
    """Numbers separated by commas, one row per data point; one header line is skipped."""
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError:
        return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)


def as_matrix(array: np.ndarray, name: str) -> torch.Tensor:
    """Check that ``array`` is non-empty, numeric and finite, and flatten it to ``(N, D)``."""
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} has dtype {array.dtype}; data must be numeric")
    if array.ndim < 2:
        raise UsageError(
            f"{name} has shape {array.shape}; data must have one row per data point (N x D)"
        )
    if array.size == 0:
        raise UsageError(f"{name} is empty (shape {array.shape}); provide at least one data point")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise UsageError(f"{name} has {bad} NaN or infinite value(s); remove or impute them")
    return torch.as_tensor(array.reshape(len(array), -1), dtype=torch.float32)
