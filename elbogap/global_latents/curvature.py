r"""A full-rank or low-rank Gaussian's start from the seed's mean-field fit: the covariance of q's expected
curvature, or the low-rank family's member closest to it.

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

A low-rank family :math:`\Sigma = WW^T + \operatorname{diag}(\delta^2)` (in whitened coordinates; rank :math:`r`)
starts at its member closest to :math:`\mathcal{N}(m, \Sigma)` in the ELBO's own direction,

.. math::

    \min_{W, \delta}\ \mathrm{KL}\bigl(\mathcal{N}(0, WW^T + \operatorname{diag}(\delta^2))
    \,\big\|\, \mathcal{N}(0, P^{-1})\bigr)
    = \tfrac12 \bigl(\operatorname{tr}(P\,(WW^T + \operatorname{diag}(\delta^2)))
    - \log\det(WW^T + \operatorname{diag}(\delta^2))\bigr) + \text{const},

:math:`P` the floored whitened precision, found by L-BFGS (:func:`closest_low_rank`), and is kept under the same
test as full rank's. On a Gaussian posterior this is the family's optimum itself. From a small random factor beside
the mean field (a saddle of the ELBO at zero) the plateau rule stopped a 10-D conjugate regression's rank-3 fits
0.15 and 0.61 nats short of that optimum and called them converged; from here both end 0.010 short
(BENCHMARKS.md, "Low rank from the expected curvature").

References:

[1] The Variational Gaussian Approximation Revisited, Manfred Opper and Cédric Archambeau, Neural Computation 21(3),
    2009
"""

import math
from collections.abc import Callable

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
#: the most latents the start is tried for (16 d² floats of Hessian rows at once, under 1 GB at 1,500): at 1,201
#: latents (a varying intercept over 1,197 groups, 5,000 rows) low rank's start took 7 s and its fit converged in
#: 30 s, where from the random factor it crawled 18,500 steps (737 s); full rank's took 29 s on a busy machine (the
#: curvature alone 4.5 s on one idle thread)
MAX_DIM = 1500
#: the least diagonal sd δ of the low-rank start, in the mean field's sds: the family's optimum may lie where δ → 0
#: (a direction the factor explains whole), which Pyro's parametrization (σ = sδ, C = W / δ) reaches only as its
#: factor grows without bound; at 0.05 a 10-D regression's rank-3 start loses 0.003 nats to the floor
LOW_RANK_MIN_DIAGONAL = 0.05
#: the most L-BFGS iterations of the low-rank start's fit (:func:`closest_low_rank`): on one thread 0.25 s at 200
#: latents (rank 14) and 3 s at 1,000 (rank 32), within 6e-7 and 5e-4 nats of 500 iterations' KL (2 s and 19 s)
LOW_RANK_ITERATIONS = 100
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
    :math:`S = \operatorname{diag}(s)`, symmetrized: ``(d, d)`` (see the module), at :data:`PAIRS` antithetic pairs
    drawn from ``generator``."""
    return precision_at(model, data, loc, scale, torch.randn(PAIRS, len(loc), generator=generator))


def precision_at(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r""":func:`expected_precision` at the antithetic pairs :math:`m \pm s\,\epsilon` of ``eps`` ``(PAIRS, d)``."""
    dim = len(loc)
    eps = eps.to(device=loc.device, dtype=torch.float64)
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


def floored_precision(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, generator: torch.Generator,
                      shared: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The eigenvalues (each at least :data:`MIN_PRECISION`) and eigenvectors of :func:`expected_precision`, or None
    where it is not tried (above :data:`MAX_DIM` latents, or one) or is not finite.

    ``shared(compute)``, where given, returns ``compute()`` or what it returned before for the same fit (a study's
    full and low rank of one seed share one curvature, :func:`~elbogap.global_latents.warm_start.start_at`); the
    pairs are drawn from ``generator`` either way, so the draws that follow from it are the same."""
    dim = len(loc)
    if dim > MAX_DIM or dim < 2:
        return None
    eps = torch.randn(PAIRS, dim, generator=generator)

    def compute() -> dict:
        with torch.random.fork_rng(devices=[]):
            precision = precision_at(model, data, loc, scale, eps)
        if not bool(torch.isfinite(precision).all()):
            return {"finite": False}
        values, vectors = torch.linalg.eigh(precision)
        return {"finite": True, "values": values.clamp_min(MIN_PRECISION), "vectors": vectors}

    floored = compute() if shared is None else shared(compute)
    return (floored["values"], floored["vectors"]) if floored["finite"] else None


def curvature_start(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                    generator: torch.Generator, shared: Callable | None = None) -> dict | None:
    """The full-rank start of the module: ``{"scale_tril": L, "elbo_gain": ..., "elbo_gain_stderr": ...}`` with
    :math:`LL^T = \\Sigma`, or None where it is not tried (above :data:`MAX_DIM` latents), fails (a log joint or
    gradient that is not finite) or does not raise the ELBO over the mean field's (``shared``: as for
    :func:`floored_precision`)."""
    floored = floored_precision(model, data, loc, scale, generator, shared)
    if floored is None:
        return None
    values, vectors = floored
    return kept_if_better(model, data, loc, scale, (vectors / values) @ vectors.T, generator)


def low_rank_start(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, rank: int,
                   generator: torch.Generator, shared: Callable | None = None) -> dict | None:
    """The low-rank start of the module, in Pyro's parametrization of ``AutoLowRankMultivariateNormal``
    (:math:`\\Sigma = \\operatorname{diag}(\\sigma)(CC^T + I)\\operatorname{diag}(\\sigma)`):
    ``{"scale": σ, "cov_factor": C, "elbo_gain": ..., "elbo_gain_stderr": ...}``, or None as for
    :func:`curvature_start`."""
    floored = floored_precision(model, data, loc, scale, generator, shared)
    if floored is None:
        return None
    values, vectors = floored
    closest = closest_low_rank(values, vectors, rank)
    if closest is None:
        return None
    factor, diagonal = closest  # whitened: W W^T + diag(δ²); in z: diag(s) (W W^T + diag(δ²)) diag(s)
    kept = kept_if_better(model, data, loc, scale, factor @ factor.T + torch.diag(diagonal ** 2), generator)
    if kept is None:
        return None
    return {"scale": (scale.double() * diagonal).to(loc), "cov_factor": (factor / diagonal[:, None]).to(loc),
            "elbo_gain": kept["elbo_gain"], "elbo_gain_stderr": kept["elbo_gain_stderr"]}


def closest_low_rank(values: torch.Tensor, vectors: torch.Tensor, rank: int,
                     iterations: int = LOW_RANK_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(W, δ)`` of rank ``rank`` minimizing :math:`\\operatorname{tr}(PS) - \\log\\det S` with
    :math:`S = WW^T + \\operatorname{diag}(\\delta^2)` and :math:`P` = ``vectors`` diag(``values``) ``vectors``ᵀ
    (see the module), by L-BFGS from the mean field's variances and :math:`P`'s ``rank`` weakest directions; None
    where it does not end finite. Written here: no library fits a low-rank-plus-diagonal Gaussian by this KL."""
    precision = (vectors * values) @ vectors.T
    start = (precision.diagonal().rsqrt() - LOW_RANK_MIN_DIAGONAL).clamp_min(0.01)  # the mean field's, above the floor
    free = (start + torch.log(-torch.expm1(-start))).requires_grad_(True)  # δ = floor + softplus(free)
    spare = (1 / values[:rank] - precision.diagonal().reciprocal().mean()).clamp_min(0.01)  # kept from zero, a saddle
    factor = (vectors[:, :rank] * spare.sqrt()).contiguous().requires_grad_(True)
    optimizer = torch.optim.LBFGS([factor, free], max_iter=iterations, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")
    eye = torch.eye(rank, dtype=precision.dtype, device=precision.device)

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        diagonal = LOW_RANK_MIN_DIAGONAL + torch.nn.functional.softplus(free)
        # log det S by the matrix determinant lemma: sum log δ² + log det(I + Wᵀ diag(δ⁻²) W)
        log_det = (2 * diagonal.log().sum()
                   + torch.logdet(eye + factor.T @ (factor / diagonal.pow(2)[:, None])))
        trace = ((precision @ factor) * factor).sum() + (precision.diagonal() * diagonal.pow(2)).sum()
        loss = 0.5 * (trace - log_det)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    factor, diagonal = factor.detach(), LOW_RANK_MIN_DIAGONAL + torch.nn.functional.softplus(free.detach())
    if not (bool(torch.isfinite(factor).all()) and bool(torch.isfinite(diagonal).all())):
        return None
    return factor, diagonal


def kept_if_better(model, data: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, whitened: torch.Tensor,
                   generator: torch.Generator) -> dict | None:
    """``{"scale_tril", "elbo_gain", "elbo_gain_stderr"}`` of :math:`\\mathcal{N}(m, S\\,` ``whitened`` :math:`S)`,
    :math:`S = \\operatorname{diag}(s)`, where its ELBO is above the mean field's (:func:`elbo_gain`); else None."""
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
