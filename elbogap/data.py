"""Data sets: scikit-learn's digits, MNIST-style IDX images, synthetic linear-Gaussian data, user files."""

import dataclasses
import math
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from elbogap.errors import UsageError
from elbogap.idx import read_idx

IMAGE_SETS = ("digits", "fashion-mnist", "mnist")
BUILTIN = (*IMAGE_SETS, "linear-gaussian")
FILE_SUFFIXES = (".npy", ".npz", ".csv")
BINARIZE = ("threshold", "static", "dynamic", "none")
#: where each IDX data set is looked for when --data-dir is not given.
DEFAULT_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": None}
IDX_STEMS = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
HOW_TO_GET = {
    "fashion-mnist": "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
                     "or pass --data-dir with the four IDX files",
    "mnist": "pass --data-dir with the MNIST IDX files (train-images-idx3-ubyte[.gz], "
             "t10k-images-idx3-ubyte[.gz])",
}


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
    image_shape: tuple[int, int] | None = None
    #: the training rows are probabilities, binarized afresh every epoch; ``train_fixed`` is one
    #: seeded binarization of them, used to evaluate the train split.
    dynamic: bool = False
    train_fixed: torch.Tensor | None = None
    #: ``"global"``: the whole data set D of a model with global latents is ``train`` (``test`` is empty)
    kind: str = "vae"
    #: what the rows are, for a model with global latents (see :func:`load_whole`)
    rows: str = ""
    #: the positions of ``--holdout``'s rows among the rows read (``test``), for a model with global latents
    held_out: tuple[int, ...] = ()

    @property
    def data_dim(self) -> int:
        return self.train.shape[1]

    @property
    def is_binary(self) -> bool:
        """Whether the data the model sees is 0/1 (dynamically binarized data counts)."""
        return all(bool(((s == 0) | (s == 1)).all()) for s in self.splits().values())

    def to(self, device: torch.device) -> "Dataset":
        """The same data set with its tensors on ``device``."""
        fixed = None if self.train_fixed is None else self.train_fixed.to(device)
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device), train_fixed=fixed)

    def splits(self) -> dict[str, torch.Tensor]:
        """The data each split is evaluated on."""
        return {"train": self.train if self.train_fixed is None else self.train_fixed, "test": self.test}


def load_data(spec: str, test_fraction: float = 0.2, data_seed: int = 0, data_dir: str | None = None,
              binarize: str | None = None, train_size: int | None = None,
              test_size: int | None = None) -> Dataset:
    """Load a data set by name or path, take subsets, and binarize it.

    ``spec`` is ``"digits"`` (scikit-learn's bundled 8x8 digits), ``"fashion-mnist"`` or
    ``"mnist"`` (IDX files in ``data_dir``), ``"linear-gaussian"`` (synthetic), or a ``.npy``,
    ``.npz`` or ``.csv`` file. Data without a given split is shuffled with ``data_seed`` and
    ``test_fraction`` of it held out. An ``.npz`` file may hold ``train`` and ``test`` arrays;
    otherwise it must hold one array. Images are flattened.

    ``binarize``: ``"threshold"`` (at 0.5), ``"static"`` (one Bernoulli draw with
    ``data_seed``), ``"dynamic"`` (a fresh draw every epoch; the test split gets one static
    draw) or ``"none"``. The default thresholds the image sets and leaves other data alone.
    ``train_size`` and ``test_size`` keep a random subset of each split (seeded).
    """
    data = _load_raw(spec, test_fraction, data_seed, data_dir)
    generator = torch.Generator().manual_seed(data_seed)
    if train_size is not None and train_size < len(data.train):
        data.train = data.train[torch.randperm(len(data.train), generator=generator)[:train_size]]
    if test_size is not None and test_size < len(data.test):
        data.test = data.test[torch.randperm(len(data.test), generator=generator)[:test_size]]
    mode = binarize or ("threshold" if spec in IMAGE_SETS else "none")
    return binarized(data, mode, data_seed)


def binarized(data: Dataset, mode: str, data_seed: int = 0) -> Dataset:
    """``data`` with values in [0, 1] turned into 0/1 as ``mode`` says (see :func:`load_data`)."""
    if mode not in BINARIZE:
        raise UsageError(f"unknown --binarize {mode!r}; choose one of {', '.join(BINARIZE)}")
    if mode == "none":
        return data
    for split, x in (("train", data.train), ("test", data.test)):
        if x.min() < 0 or x.max() > 1:
            raise UsageError(f"--binarize {mode} needs values in [0, 1] but the {split} split of {data.name} "
                             f"spans [{float(x.min()):.3g}, {float(x.max()):.3g}]; rescale it or use --binarize none")
    generator = torch.Generator().manual_seed(data_seed + 1)
    if mode == "threshold":
        data.train, data.test = (data.train > 0.5).float(), (data.test > 0.5).float()
    elif mode == "static":
        data.train = torch.bernoulli(data.train, generator=generator)
        data.test = torch.bernoulli(data.test, generator=generator)
    else:
        data.dynamic = True
        data.train_fixed = torch.bernoulli(data.train, generator=generator)
        data.test = torch.bernoulli(data.test, generator=generator)
    return data


def _load_raw(spec: str, test_fraction: float, data_seed: int, data_dir: str | None) -> Dataset:
    if spec == "digits":
        return digits(test_fraction, data_seed)
    if spec in ("fashion-mnist", "mnist"):
        return idx_images(spec, data_dir or DEFAULT_DIRS[spec])
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
        train, test = (as_matrix(arrays[part], f"the {part} array of {name}") for part in ("train", "test"))
        if train.shape[1] != test.shape[1]:
            raise UsageError(f"{name}: train has {train.shape[1]} columns but test has {test.shape[1]}; "
                             "both splits need the same data dimension")
        return Dataset(name, train, test)
    return split(name, as_matrix(arrays["data"], name), test_fraction, data_seed)


def idx_images(name: str, directory: str | None) -> Dataset:
    """MNIST-style images (train: 60k, test: 10k) from IDX files, scaled to [0, 1]."""
    if directory is None:
        raise UsageError(f"--data {name} needs --data-dir: {HOW_TO_GET[name]}")
    folder = Path(directory)
    if not folder.is_dir():
        raise UsageError(f"data directory {folder} does not exist; {HOW_TO_GET[name]}")
    splits = {}
    for split_name, stem in IDX_STEMS.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise UsageError(f"{stem}[.gz] is missing from {folder}; {HOW_TO_GET[name]}")
        try:
            images = read_idx(path)
        except (OSError, EOFError, ValueError) as error:
            raise UsageError(f"cannot read {path}: {error}; the file may be damaged, fetch it again") from None
        if images.ndim != 3:
            raise UsageError(f"{path} holds an array of shape {images.shape}, not images (N x H x W)")
        splits[split_name] = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return Dataset(name, splits["train"], splits["test"], image_shape=tuple(images.shape[1:]))


def digits(test_fraction: float = 0.2, data_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), grey levels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16.0
    data = split("digits", pixels, test_fraction, data_seed)
    data.image_shape = (8, 8)
    return data


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


def flattened_points(spec: str) -> str | None:
    """A line where the .npy or .npz file ``spec`` holds data points of more than one dimension, which are read as
    rows of numbers (a tester's program met (N, 6) where its file held (N, 3, 2), and the site's shape message
    did not say why); None otherwise. Reads the arrays' headers only."""
    path = Path(spec)
    if spec in BUILTIN or path.suffix.lower() not in (".npy", ".npz") or not path.is_file():
        return None
    try:
        if path.suffix.lower() == ".npy":
            shapes = [np.load(path, mmap_mode="r", allow_pickle=False).shape]
        else:
            with zipfile.ZipFile(path) as archive:
                members = [name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy")]
                read = ["train", "test"] if {"train", "test"} <= set(members) else members  # as read_arrays reads
                shapes = [header_shape(archive.open(f"{name}.npy")) for name in read]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # reading the data says what is wrong with it
    shape = next((shape for shape in shapes if len(shape) > 2), None)
    if shape is None:
        return None
    size = math.prod(shape[1:])
    return (f"{path.name} holds data points of shape {tuple(shape[1:])}; each is read as a row of {size} "
            f"number{'s' if size != 1 else ''}, so a program gets data of shape (N, {size}) and reshapes it itself "
            f"where it needs the points' shape (data.reshape(-1, {', '.join(map(str, shape[1:]))}))")


def header_shape(member) -> tuple[int, ...]:
    """The shape an .npy stream's header gives, without reading its data."""
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(member)[0]


def read_csv(path: Path) -> np.ndarray:
    """Numbers separated by commas, one row per data point; a first line none of whose cells is a number is a header,
    and skipped (one with a number among them is data: a tester's ``1.0,x`` was skipped as a header, its row lost)."""
    first = next((line for line in path.read_text(errors="replace").splitlines() if line.strip()), "")
    header = int(bool(first) and not any(is_number(cell) for cell in first.split(",")))
    try:
        with warnings.catch_warnings():  # an empty file: as_matrix says so in one line, without numpy's warning
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=header)
    except ValueError as error:
        if "," not in first and (separator := next((mark for mark in (";", "\t", "|") if mark in first), None)):
            raise UsageError(f"cannot read {path}: its values are separated by {separator!r}, not commas; save it as "
                             "comma-separated values (with a '.' for decimals)") from None
        if cell := re.search(r"could not convert string (.*) to \w+ at row (\d+), column (\d+)", str(error)):
            value, row, column = cell.group(1), int(cell.group(2)), int(cell.group(3))  # numpy: row from 0
            line = row + 1 + header
            if value.strip("'\"") == "":
                raise UsageError(f"cannot read {path}: the cell on line {line} of the file, column {column}, is "
                                 "empty (a missing value); fill it in or drop that row: elbogap's models score "
                                 "every value of a row") from None
            raise UsageError(f"cannot read {path}: {value} on line {line} of the file, column {column}, "
                             "is not a number; every value must be numeric (code a category as 0, 1, ...)") from None
        if "number of columns changed" not in str(error):
            raise
        widths = [(number, len(line.split(","))) for number, line in enumerate(path.read_text().splitlines(), 1)
                  if line.strip()]
        number, width = next(((number, width) for number, width in widths if width != widths[0][1]), (None, None))
        if number is None:  # what numpy counted differs from our comma count (quotes): its own words
            raise
        raise UsageError(f"cannot read {path}: line {number} has {width} comma-separated values where line "
                         f"{widths[0][0]} has {widths[0][1]}; every row needs the same number") from None


def is_number(text: str) -> bool:
    """Whether a csv cell reads as a number (as numpy's loadtxt reads it: ``nan`` and ``inf`` too)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_matrix(array: np.ndarray, name: str) -> torch.Tensor:
    """Check that ``array`` is non-empty, numeric and finite, and flatten it to ``(N, D)``."""
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} has dtype {array.dtype}; data must be numeric")
    if array.ndim == 1:  # N values: N data points of one value each, as a one-column .csv reads
        array = array[:, None]
    if array.ndim < 2:
        raise UsageError(
            f"{name} has shape {array.shape}; data must have one row per data point (N x D)"
        )
    if array.size == 0:
        raise UsageError(f"{name} holds no data point; provide at least one" if array.shape[0] == 0 else
                         f"{name} has rows but no values in them (shape {array.shape}); provide at least one column")
    if not np.isfinite(array).all():
        bad = ~np.isfinite(array)
        first = ", ".join(str(int(i) + 1) for i in np.argwhere(bad)[0])
        where = f"data row {first.replace(', ', ', column ', 1)}" if array.ndim == 2 else f"index ({first})"
        raise UsageError(f"{name} has {int(bad.sum())} NaN or infinite value(s), the first at {where} (counting "
                         "from 1, a csv's header line not counted); remove or impute them, or put a number in their "
                         "place and leave them out of your program's likelihood with poutine.mask")
    return torch.as_tensor(array.reshape(len(array), -1), dtype=torch.float32)


def load_whole(spec: str, data_seed: int = 0, data_dir: str | None = None, binarize: str | None = None,
               size: int | None = None) -> tuple[torch.Tensor, str]:
    """Every row of a data set, in the file's own order: the data set D a model with global latents conditions on.

    A file with one array is read whole (no shuffle, nothing held out), so rows keep the order
    a program may rely on; an ``.npz`` with ``train`` and ``test`` arrays gives its ``train``
    array; a built-in set gives its train and test splits together. ``size`` keeps a seeded
    subset of the rows (in their order). Returns the rows and a phrase saying what they are.
    """
    path = Path(spec)
    if spec not in BUILTIN and path.suffix.lower() in FILE_SUFFIXES and path.is_file():
        arrays = read_arrays(path)
        if "data" in arrays:
            rows, what = as_matrix(arrays["data"], path.name), f"every row of {path.name}"
        else:
            what = f"the train array of {path.name}"
            rows = as_matrix(arrays["train"], what)
        rows = binarized(Dataset(path.name, rows, rows[:1]), binarize or "none", data_seed).train
    else:
        loaded = load_data(spec, 0.2, data_seed, data_dir, binarize)
        rows, what = torch.cat([loaded.train, loaded.test]), f"every row of {loaded.name} (train and test splits)"
    if size is not None and size < len(rows):
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(data_seed))[:size].sort().values
        rows, what = rows[keep], f"{size} rows of {what.removeprefix('every row of ')} (a seeded subset, in order)"
    return rows, what
