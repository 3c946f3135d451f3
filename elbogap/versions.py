"""The versions a result was produced with, recorded beside it."""

import platform
from importlib import metadata

import numpy
import pyro
import torch


def package_version() -> str:
    """elbogap's installed version (its pyproject's), read from the package metadata: not from ``elbogap``, whose
    lazy attributes import the API, which records versions."""
    try:
        return metadata.version("elbogap")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def versions() -> dict[str, str]:
    return {
        "elbogap": package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
