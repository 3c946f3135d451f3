"""The versions a result was produced with, recorded beside it."""

import platform

import numpy
import pyro
import torch

import elbogap


def versions() -> dict[str, str]:
    return {
        "elbogap": elbogap.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
