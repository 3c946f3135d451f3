"""elbogap: measure the gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) for variational families.

The generative models live in :mod:`elbogap.model`, the variational families in
:mod:`elbogap.guides`, and training and evaluation in :mod:`elbogap.inference`;
:func:`compare`, :func:`evaluate` and :func:`calibrate` are the notebook API (:mod:`elbogap.api`), and
:func:`load` returns a study's posteriors as ArviZ ``InferenceData`` (:mod:`elbogap.export`). ``import elbogap``
loads none of them: the API's names are imported on first use (PEP 562), so a module of the package imports only
what it uses.
"""

__version__ = "0.1.0"

__all__ = ["Calibration", "Comparison", "calibrate", "compare", "evaluate", "load"]


def __getattr__(name: str):
    if name == "load":  # a study's posteriors as ArviZ InferenceData (elbogap.export)
        from elbogap.export import load

        return load
    if name in __all__:
        from elbogap import api

        return getattr(api, name)
    raise AttributeError(f"module 'elbogap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
