r"""A full-rank Gaussian fitted to a flat log density by stochastic variational inference, in whitened coordinates.

Given a rough mean :math:`m_0` and Cholesky factor :math:`L_0` (the particles of tempered SMC, say), the
family is :math:`z = m_0 + L_0 (a + B \epsilon)`, :math:`\epsilon \sim \mathcal{N}(0, I)`, with :math:`B`
lower triangular and its diagonal positive, started at :math:`a = 0, B = I` (both diagonal where :math:`L_0` is a
vector of scales: many latents, a mean-field family). Its ELBO,

.. math::

    \mathcal{L}(a, B) = \mathbb{E}_\epsilon \log p(z, D) + \log |\det L_0| + \sum_i \log B_{ii}
        + \tfrac{d}{2} \log(2 \pi e),

is maximized by Adam on the reparameterized gradient of ``particles`` draws, the learning rate decaying
geometrically by ``lr_decay`` over the steps. In these coordinates every direction of the posterior has a
scale near 1, so one learning rate suits them all; fitted on :math:`z` itself, a hierarchical model's
tightest direction (a noise scale known to 2%) sets the step, and the fit crawls along the others.

Hand-written rather than Pyro's ``AutoMultivariateNormal`` under ``SVI``: the target is a plain function
of a flat vector, and running a user's program inside another program's trace would expose its sites to
the outer handlers (its plates broadcast by the outer particle plate).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from elbogap.inference.whitened import LogParts


@dataclass(frozen=True)
class GaussianFitSettings:
    """:param int steps: Adam steps. :param int particles: draws per step. :param float lr: the first learning rate.
    :param float lr_decay: the factor the learning rate ends at."""

    steps: int = 2000
    particles: int = 16
    lr: float = 0.02
    lr_decay: float = 0.1


class GaussianFit(NamedTuple):
    """The fitted mean ``(d,)`` and Cholesky factor ``(d, d)``, and the ELBO over the last tenth of the steps."""

    mean: torch.Tensor
    scale_tril: torch.Tensor
    elbo: float


def fit_gaussian(log_parts: LogParts, mean: torch.Tensor, scale_tril: torch.Tensor,
                 settings: GaussianFitSettings | None = None, bar=None) -> GaussianFit:
    """Fit :math:`\\mathcal{N}(m, L L^\\top)` to the target ``log_parts`` from ``(mean, scale_tril)`` (see the module).

    ``bar``, a tqdm bar, advances by one per step.
    """
    settings = settings or GaussianFitSettings()
    dim = mean.shape[-1]
    diagonal = scale_tril.dim() == 1  # many latents: a mean-field family, and a vector of scales
    options = {"dtype": mean.dtype, "device": mean.device}
    shift = torch.zeros(dim, **options, requires_grad=True)
    log_diagonal = torch.zeros(dim, **options, requires_grad=True)
    lower = torch.zeros(0 if diagonal else dim, 0 if diagonal else dim, **options, requires_grad=True)
    strictly_lower = torch.ones(dim, dim, **options).tril(-1) if not diagonal else None
    optimizer = torch.optim.Adam([shift, log_diagonal, lower], lr=settings.lr)
    decay = settings.lr_decay ** (1.0 / max(settings.steps, 1))
    log_det = (scale_tril if diagonal else scale_tril.diagonal()).log().sum()
    constant = float(log_det) + 0.5 * dim * math.log(2 * math.pi * math.e)

    def factor():
        return log_diagonal.exp() if diagonal else torch.diag(log_diagonal.exp()) + lower * strictly_lower

    def to_z(u):
        return mean + (u * scale_tril if diagonal else u @ scale_tril.T)

    history = []
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(settings.steps):
            noise = torch.randn(settings.particles, dim, **options)
            z = to_z(shift + (noise * factor() if diagonal else noise @ factor().T))
            log_prior, log_lik = log_parts(z)
            elbo = (log_prior + log_lik).mean() + log_diagonal.sum()
            if not bool(torch.isfinite(elbo)):
                break  # a draw left the target's support: keep the last finite fit
            optimizer.zero_grad()
            (-elbo).backward()
            optimizer.step()
            for group in optimizer.param_groups:
                group["lr"] *= decay
            history.append(float(elbo.detach()) + constant)
            if bar is not None:
                bar.update()
    with torch.no_grad():
        fitted = factor()
        center = to_z(shift)
        scale = scale_tril * fitted if diagonal else scale_tril @ fitted
    tail = history[-max(1, len(history) // 10):]
    return GaussianFit(center.detach(), scale.detach(), sum(tail) / len(tail) if tail else math.nan)
