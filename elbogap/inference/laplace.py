r"""A Gaussian per unit at its posterior's mode: where AIS may start instead of the prior (``--ais-init laplace``).

For each unit :math:`u` of a target, :math:`\hat z_u = \arg\max_z \log p(x_u, z)` by Adam from the prior's draws'
mean, and :math:`\Sigma_u = H_u^{-1}`, the inverse of the negative log joint's Hessian there (central differences of
its gradient, eigenvalues floored at :data:`MIN_CURVATURE`). AIS from :math:`\mathcal{N}(\hat z_u, \Sigma_u)` anneals
:math:`f_\beta \propto \mathcal{N}^{1-\beta} \, p(x_u, z)^\beta`: it is unbiased for :math:`p(x_u)` from any
normalized start, and where the posterior is near Gaussian its weights are near constant, so its estimate is far less
biased than from the prior at the same temperatures. The start depends on the model and the data alone, never on
the guide judged. The fit is written here: Pyro's ``AutoLaplaceApproximation`` fits one Gaussian for a whole program,
not one per data point.
"""

import torch
from pyro import distributions as dist

#: Adam steps and rate of the search for each unit's mode
MODE_STEPS = 400
MODE_LR = 0.05
#: the step of the central differences of the gradient
STEP = 1e-3
#: the least curvature kept in any direction: a flat or concave direction gets variance 1 / MIN_CURVATURE
MIN_CURVATURE = 0.1


def laplace_start(target) -> dist.MultivariateNormal:
    """``N(mode, H^-1)`` per unit of ``target`` (batch ``(units,)``, event ``(latent_dim,)``), in its dtype."""
    with torch.inference_mode(False), torch.enable_grad():
        mode = target.start(64).detach().double().mean(0).to(target.dtype).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([mode], lr=MODE_LR)
        for _ in range(MODE_STEPS):
            optimizer.zero_grad()
            loss = -sum(part.nan_to_num(neginf=-1e30).sum() for part in target.log_joint(mode[None]))
            loss.backward()
            optimizer.step()
        mode = mode.detach()
        dim = mode.shape[-1]
        shifts = STEP * torch.eye(dim, dtype=mode.dtype, device=mode.device)  # (d, d): one row per direction
        points = torch.cat([mode[None] + shifts[:, None], mode[None] - shifts[:, None]]).requires_grad_(True)
        gradient = torch.autograd.grad(sum(part.sum() for part in target.log_joint(points)), points)[0]
    hessian = -(gradient[:dim] - gradient[dim:]).transpose(0, 1) / (2 * STEP)  # (units, d, d), row i: d g / d z_i
    hessian = (0.5 * (hessian + hessian.transpose(-1, -2))).double().nan_to_num()
    values, vectors = torch.linalg.eigh(hessian)
    covariance = vectors @ torch.diag_embed(1.0 / values.clamp(min=MIN_CURVATURE)) @ vectors.transpose(-1, -2)
    covariance = 0.5 * (covariance + covariance.transpose(-1, -2))
    # a leapfrog step may diverge far out: its density there is scored, and the proposal rejected, not refused
    return dist.MultivariateNormal(mode, scale_tril=torch.linalg.cholesky(covariance).to(mode.dtype),
                                   validate_args=False)
