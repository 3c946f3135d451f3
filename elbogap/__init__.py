"""elbogap: measure the gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) for variational families.

The generative models live in :mod:`elbogap.model`, the variational families in
:mod:`elbogap.guides`, and training and evaluation in :mod:`elbogap.inference`;
:func:`compare` and :func:`evaluate` are the notebook API (:mod:`elbogap.api`).
"""

__version__ = "0.1.0"

from elbogap.api import Comparison, compare, evaluate  # noqa: E402  (the notebook API; see elbogap.api)

__all__ = ["Comparison", "compare", "evaluate"]
