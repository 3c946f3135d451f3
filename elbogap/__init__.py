"""elbogap: measure the gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) for variational families.

The generative models live in :mod:`elbogap.model`, the variational families in
:mod:`elbogap.guides`, and training and evaluation in :mod:`elbogap.inference`.
"""

__version__ = "0.1.0"
