r"""Annealing paths over a flat latent vector, seen in whitened coordinates.

A target is a log density over :math:`z \in \mathbb{R}^d` given as two parts by a function
``log_parts(z) -> (log_prior, log_lik)`` (the prior with the Jacobian of any map to the real line, and the
likelihood), each of shape ``z.shape[:-1]``. HMC mixes poorly where the target's scales differ by orders of
magnitude (a regression weight known to 0.03 beside a prior scale of 10), so the chains move in
coordinates :math:`u` with :math:`z = m + L u`: with :math:`m, L L^\top` near the posterior's mean and
covariance, every direction has a scale near 1 and one step size serves them all (HMC with mass matrix
:math:`(L L^\top)^{-1}`).

:class:`WhitenedPath` anneals, in those coordinates,

- from the prior: :math:`\log f_\beta = \log p(z) + \beta \log p(D \mid z)` (the tempering of
  :mod:`elbogap.inference.smc`), or
- from the Gaussian reference :math:`r = \mathcal{N}(m, L L^\top)`:
  :math:`\log f_\beta = (1 - \beta) \log \mathcal{N}(u; 0, I) + \beta \log p(z, D)\, |\det L|`, so that
  annealed importance sampling [1] starts from exact draws of :math:`r` and its weights estimate
  :math:`p(D)`; the closer :math:`r` is to the posterior, the fewer temperatures it needs.

It has the interface :func:`~elbogap.inference.ais.anneal` and
:func:`~elbogap.inference.ais.hmc_transition` move chains along: ``parts``, ``weights``, ``start``,
``batch_size`` (one target), ``dtype``, ``device``; chains are ``(chains, 1, d)``.

References:

[1] Annealed Importance Sampling, Radford M. Neal, arXiv:physics/9803008
"""

import math
from collections.abc import Callable

import torch

#: ``log_parts(z) -> (log_prior, log_lik)``: a target's two parts at ``z`` ``(..., d)``
LogParts = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

STARTS = ("prior", "gaussian")


class WhitenedPath:
    r"""The path from the prior or from :math:`\mathcal{N}(m, L L^\top)` to the posterior, in :math:`u = L^{-1}(z - m)`.

    :param log_parts: the target's two parts (see the module).
    :param torch.Tensor mean: :math:`m`, shape ``(d,)``.
    :param torch.Tensor scale_tril: :math:`L`, lower triangular ``(d, d)`` with a positive diagonal, or a vector
        ``(d,)`` of scales for a diagonal :math:`L` (many latents, where a ``d x d`` factor would not fit).
    :param str start: ``"prior"`` or ``"gaussian"``.
    :param prior_draws: ``count -> (count, d)`` draws of :math:`z` from the prior, for ``start="prior"``.
    """

    def __init__(self, log_parts: LogParts, mean: torch.Tensor, scale_tril: torch.Tensor, start: str = "gaussian",
                 prior_draws: Callable[[int], torch.Tensor] | None = None):
        if start not in STARTS:
            raise ValueError(f"unknown start {start!r}; choose one of {', '.join(STARTS)}")
        self.log_parts, self.mean, self.scale_tril, self.start_from = log_parts, mean, scale_tril, start
        self.prior_draws = prior_draws
        self.diagonal = scale_tril.dim() == 1  # a vector of scales: a diagonal L, without its d x d zeros
        self.log_det = (scale_tril if self.diagonal else scale_tril.diagonal()).log().sum()
        self.dim = mean.shape[-1]

    dtype = property(lambda self: self.mean.dtype)
    device = property(lambda self: self.mean.device)
    batch_size = 1

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        return self.mean + (u * self.scale_tril if self.diagonal else u @ self.scale_tril.T)

    def to_u(self, z: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return (z - self.mean) / self.scale_tril
        return torch.linalg.solve_triangular(self.scale_tril, (z - self.mean).unsqueeze(-1), upper=False).squeeze(-1)

    def weights(self, beta: float) -> torch.Tensor:
        return torch.tensor([1.0 - beta, beta] if self.start_from == "gaussian" else [1.0, beta], dtype=self.dtype,
                            device=self.device)

    def start(self, chains: int) -> torch.Tensor:
        """``chains`` draws of the start in :math:`u`: ``(chains, 1, d)``."""
        if self.start_from == "gaussian":
            return torch.randn(chains, 1, self.dim, dtype=self.dtype, device=self.device)
        return self.to_u(self.prior_draws(chains).to(self.dtype))[:, None, :]

    def parts(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(2, chains, 1)`` and gradients ``(2, chains, 1, d)`` of the path's two parts at ``u``."""
        with torch.inference_mode(False), torch.enable_grad():
            u = u.detach().clone().requires_grad_(True)
            log_prior, log_lik = self.log_parts(self.to_z(u))
            if self.start_from == "gaussian":
                first = -0.5 * u.pow(2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
                second = log_prior + log_lik + self.log_det
                first_grad = -u.detach()
            else:
                first, second = log_prior + self.log_det, log_lik
                first_grad = torch.autograd.grad(first.sum(), u, retain_graph=True)[0]
            second_grad = torch.autograd.grad(second.sum(), u)[0]
        return torch.stack([first.detach(), second.detach()]), torch.stack([first_grad, second_grad])

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log r(z)` of the Gaussian reference."""
        u = self.to_u(z)
        return -0.5 * u.pow(2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) - self.log_det


#: the most latents a full-rank reference is fitted for; beyond, a diagonal one (a d x d factor of 1000 latents
#: already holds a million numbers)
FULL_RANK_LIMIT = 1000


def moment_match(z: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The mean and Cholesky factor of the (weighted) covariance of draws ``z`` ``(n, d)`` (beyond
    :data:`FULL_RANK_LIMIT` latents, the standard deviations: a diagonal factor as a vector).

    With fewer draws than twice the dimension the covariance is noisy, so it is shrunk toward its diagonal by
    :math:`\min(1, d/n)` (a fixed share, where Ledoit and Wolf estimate one); a small ridge keeps it positive
    definite where draws repeat (after resampling).
    """
    n, dim = z.shape
    w = torch.full((n,), 1.0 / n, dtype=z.dtype, device=z.device) if weights is None else weights.to(z.dtype)
    mean = (w[:, None] * z).sum(0)
    centred = z - mean
    if dim > FULL_RANK_LIMIT:
        variance = (w[:, None] * centred.pow(2)).sum(0)
        return mean, (variance + 1e-8 * float(variance.mean().clamp_min(1e-30))).sqrt()
    cov = (w[:, None] * centred).T @ centred
    effective = float(1.0 / w.pow(2).sum())
    shrink = min(1.0, dim / max(effective, 1.0))
    cov = (1 - shrink) * cov + shrink * torch.diag(cov.diagonal())
    scale = float(cov.diagonal().mean()) if bool(cov.diagonal().mean() > 0) else 1.0
    cov = cov + 1e-8 * scale * torch.eye(dim, dtype=z.dtype, device=z.device)
    return mean, torch.linalg.cholesky(cov)
