"""Training (SVI) and evaluation (ELBO, log p(x), the KL gap) of models and guides.

Most names below are imported from their modules on first use (PEP 562): importing any one module of the package
(``elbogap.inference.log_joint``) runs this file first, and eager imports here would pull in every estimator and,
through them, the model targets that import that module back. ``log_joint`` and ``train`` reach neither.
"""

import importlib

# eager where a name is also its module's: once the module is imported, the package's attribute would be the module
from elbogap.inference.log_joint import log_joint
from elbogap.inference.train import KLWeight, Trainer, TrainResult, make_svi, refit_guide, train

#: each public name, and the module of the package that defines it
_HOMES = {
    "Evaluation": "evaluation", "evaluate": "evaluation", "kl_gap": "gap",
    "choose_method": "log_px", "exact_log_px": "log_px", "quadrature_log_px": "log_px", "OBJECTIVES": "objectives",
    "make_objective": "objectives", "GroupSNR": "snr", "gradient_snr": "snr",
}

__all__ = [
    "OBJECTIVES", "Evaluation", "GroupSNR", "KLWeight", "TrainResult", "Trainer", "choose_method", "evaluate",
    "exact_log_px", "gradient_snr", "kl_gap", "log_joint", "make_objective", "make_svi", "quadrature_log_px",
    "refit_guide", "train",
]


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
