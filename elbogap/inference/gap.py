"""The identity elbogap exists to measure."""

import torch


def kl_gap(log_px: torch.Tensor, elbo: torch.Tensor) -> torch.Tensor:
    r"""The gap :math:`\log p(x) - \mathrm{ELBO}(q)`, which *is* :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x))`.

    Because :math:`\log p(x, z) = \log p(x) + \log p(z \mid x)`,

    .. math::

        \mathrm{ELBO}(q) = \mathbb{E}_q[\log p(x, z) - \log q(z \mid x)]
                         = \log p(x) - \mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x)).

    With the model fixed, :math:`\log p(x)` does not depend on :math:`q`, so raising the ELBO
    over :math:`q` is exactly lowering this KL; raising it over the model as well is
    (approximate) maximum likelihood.
    """
    return log_px - elbo
