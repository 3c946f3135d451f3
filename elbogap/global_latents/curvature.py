r"""A full-rank Gaussian's start from the seed's mean-field fit: the covariance of q's expected curvature.

A Gaussian :math:`q = \mathcal{N}(m, \Sigma)` over the flat unconstrained latent vector that maximizes the ELBO
satisfies :math:`\Sigma^{-1} = E_q[-\nabla^2 \log p(z, D)]` (Opper & Archambeau [1]). One step of that fixed point
from the mean-field fit :math:`q_\text{MF} = \mathcal{N}(m, \operatorname{diag}(s^2))`,

.. math::

    \Sigma = \bigl(E_{q_\text{MF}}[-\nabla^2 \log p(z, D)]\bigr)^{-1},

is the posterior's covariance where the posterior is Gaussian (the mean field's mean is the posterior mean there),
and near the full-rank optimum where it is close to Gaussian. From :math:`\Sigma = I` in the mean field's scales
Adam has to learn every correlation through noisy gradients of :math:`d(d+1)/2` parameters: on the random-effects
example (204 latents) full rank from there stopped at the 20,000-step cap on one seed (ELBO of D -815.33) and took
16,650 steps on the other (-815.25); from this start, 600 steps to -815.20 on both (BENCHMARKS.md, "Full rank from
the expected curvature").

The expectation is taken at :data:`PAIRS` antithetic pairs of draws of :math:`q_\text{MF}` (a pair's odd terms
cancel), each Hessian by central differences of the gradient of the log joint (Jacobian included) with a step of
:data:`STEP` of each coordinate's mean-field sd (at least :data:`ROUNDING_STEPS` units of the last place of its
mean, and divided by the step the draws' dtype makes: a mean far from zero in its sds, an uncentred intercept,
would otherwise lose the step to rounding in float32), in :math:`q_\text{MF}`'s whitened coordinates
:math:`u = (z - m)/s`, where its eigenvalues are floored at :data:`MIN_PRECISION`: a direction of little, none or
negative curvature (a funnel's neck, a ridge) gets at most :math:`1/` :data:`MIN_PRECISION` times the mean-field
variance. The start is kept only where its ELBO on :data:`SCORE_DRAWS` common draws is above the mean field's, and
tried only up to :data:`MAX_DIM` latents (:math:`4\,\text{PAIRS}\,d = 16d` gradients of the whole data set's log
joint, and :math:`2\,` :data:`SCORE_DRAWS` log joints). Written here: Pyro's ``AutoLaplaceApproximation`` takes
one Hessian at a MAP point, not the curvature q averages.

References:

[1] The Variational Gaussian Approximation Revisited, Manfred Opper and Cédric Archambeau, Neural Computation 21(3),
    2009
"""

import math

import torch

#: antithetic pairs of mean-field draws the curvature is averaged over
PAIRS = 4
#: the central differences' step, as a share of each coordinate's mean-field sd
STEP = 0.01
#: the least step, in units of the last place of the coordinate's mean in the draws' dtype
ROUNDING_STEPS = 256
#: the least precision kept in any whitened direction (the most variance: 100 times the mean field's)
MIN_PRECISION = 0.01
#: draws that score the start against the mean field's, common to both
SCORE_DRAWS = 512
#: the most latents the start is tried for
MAX_DIM = 1000
#: rows × points of the data set's log joint evaluated at once
CHUNK = 2 ** 21


def log_joint(model, data: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\log p(z, D)` in the flat unconstrained space (the Jacobian of the map included) at ``z`` ``(n, d)``."""
    log_prior, log_lik = model.log_density(z, data)
    return log_prior + log_lik


def chunks(data: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``z`` ``(n, d)`` in chunks of rows that each score about :data:`CHUNK` data entries at once."""
    return z.split(max(1, CHUNK // max(data.numel(), 1)))


def gradients(model, data: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla \\log p(z, D)` at each row of ``z`` ``(n, d)``, chunk by chunk (:func:`chunks`)."""
    out = []
    for chunk in chunks(data, z):
        with torch.enable_grad():
            chunk = chunk.detach().requires_grad_(True)
            out.append(torch.autograd.grad(log_joint(model, data, chunk).sum(), chunk)[0])
    return torch.cat(out)


def expected_precision(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
    r""":math:`E_{q_\text{MF}}[-\nabla^2 \log p(z, D)]` in whitened coordinates, :math:`S H S` with
    :math:`S = \operatorname{diag}(s)`, symmetrized: ``(d, d)`` (see the module)."""
    dim = len(loc)
    eps = torch.randn(PAIRS, dim, generator=generator).to(device=loc.device, dtype=torch.float64)
    draws = (loc.double() + torch.cat([eps, -eps]) * scale.double())  # (2 PAIRS, d)
    unit = torch.finfo(loc.dtype).eps * loc.double().abs()  # the last place of each mean, about
    steps = torch.diag(torch.maximum(STEP * scale.double(), ROUNDING_STEPS * unit))  # row i moves coordinate i
    plus, minus = (draws[:, None] + steps).to(loc), (draws[:, None] - steps).to(loc)  # (2 PAIRS, d, d) each
    taken = (plus.double() - minus.double()).diagonal(dim1=-2, dim2=-1)  # (2 PAIRS, d): the steps the dtype made
    grads = gradients(model, data, torch.cat([plus, minus], 1).reshape(-1, dim)).reshape(2 * PAIRS, 2 * dim, dim)
    # row i of the Hessian H at each draw: (g(z + h_i e_i) - g(z - h_i e_i)) / (2 h_i); whitened: -s_i H_ij s_j
    hessian = ((grads[:, :dim] - grads[:, dim:]).double() / taken[..., None]).mean(0)
    precision = -scale.double()[:, None] * hessian * scale.double()[None, :]
    return 0.5 * (precision + precision.T)


def curvature_start(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                    generator: torch.Generator) -> dict | None:
    """The full-rank start of the module: ``{"scale_tril": L, "elbo_gain": ..., "elbo_gain_stderr": ...}`` with
    :math:`LL^T = \\Sigma`, or None where it is not tried (above :data:`MAX_DIM` latents), fails (a log joint or
    gradient that is not finite) or does not raise the ELBO over the mean field's."""
    dim = len(loc)
    if dim > MAX_DIM or dim < 2:
        return None
    with torch.random.fork_rng(devices=[]):
        precision = expected_precision(model, data, loc, scale, generator)
    if not bool(torch.isfinite(precision).all()):
        return None
    values, vectors = torch.linalg.eigh(precision)
    whitened = (vectors / values.clamp_min(MIN_PRECISION)) @ vectors.T  # covariance of u = (z - m) / s
    factor, failed = torch.linalg.cholesky_ex(0.5 * (whitened + whitened.T))
    if failed:
        return None
    scale_tril = (scale.double()[:, None] * factor).to(loc)
    gain = elbo_gain(model, data, loc, scale, scale_tril, generator)
    if not math.isfinite(gain[0]) or gain[0] <= 0:
        return None
    return {"scale_tril": scale_tril, "elbo_gain": gain[0], "elbo_gain_stderr": gain[1]}


@torch.no_grad()
def elbo_gain(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, scale_tril: torch.Tensor,
              generator: torch.Generator) -> tuple[float, float]:
    """The ELBO of :math:`\\mathcal{N}(m, LL^T)` less the mean field's, on :data:`SCORE_DRAWS` common standard normal
    draws, and its standard error."""
    eps = torch.randn(SCORE_DRAWS, len(loc), generator=generator).to(loc)
    full = torch.distributions.MultivariateNormal(loc, scale_tril=scale_tril)
    diagonal = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
    z_full, z_diagonal = loc + eps @ scale_tril.T, loc + eps * scale
    with torch.random.fork_rng(devices=[]):  # the program draws nothing here; a sampling program would
        difference = torch.cat([(log_joint(model, data, full_chunk) - full.log_prob(full_chunk))
                                - (log_joint(model, data, chunk) - diagonal.log_prob(chunk))
                                for full_chunk, chunk in zip(chunks(data, z_full), chunks(data, z_diagonal),
                                                             strict=True)]).double()
    return float(difference.mean()), float(difference.std() / math.sqrt(len(difference)))
