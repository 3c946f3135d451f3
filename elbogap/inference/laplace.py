r"""Gaussians at each unit's posterior modes: where AIS may start instead of the prior (``--ais-init laplace``).

For each unit :math:`u` of a target, Adam climbs :math:`\log p(x_u, z)` from :data:`MODE_STARTS` places (the prior
draws' mean and prior draws), and damped Newton steps finish the climbs Adam left short (:func:`finish`: a mode far
out in a heavy-tailed prior), to modes :math:`\hat z_{u,k}`, each with :math:`\Sigma_{u,k} = H_{u,k}^{-1}`, the inverse
of the negative log joint's Hessian there (central differences of its gradient, eigenvalues floored at
:data:`MIN_CURVATURE`). Climbs that end on a mode already found (within :data:`SAME_MODE` squared standard deviations
per dimension) are dropped; the others are the components of a mixture weighted by their Laplace evidence,
:math:`\pi_{u,k} \propto p(x_u, \hat z_{u,k}) \, |\Sigma_{u,k}|^{1/2}`. Each component is a Gaussian with a
:data:`TAIL_SHARE` of its mass in a multivariate Student-t of :data:`TAIL_DOF` degrees of freedom at the same mode and
scale (:class:`TailedGaussian`): along the path a chain gains :math:`\Delta\beta\,(\log p(x_u, z) - \log r_u(z))`,
and where the posterior keeps a heavy-tailed prior's tails (a likelihood that saturates) HMC reaches far out, where a
Gaussian's log density falls as :math:`|z|^2` and a Student-t's as :math:`\log |z|`. From Gaussians alone an
outside tester's StudentT program read :math:`\log p(x)` = :math:`1.1 \times 10^8` per point (truth -2.04); from
Student-t's alone AIS lost most of its precision on Gaussian posteriors. AIS from that mixture :math:`r_u` anneals
:math:`f_\beta \propto r_u^{1-\beta} \, p(x_u, z)^\beta`: unbiased for :math:`p(x_u)` from any normalized start, and
where the posterior is near Gaussian about each mode its weights are near constant, so its estimate is far less
biased than from the prior at the same temperatures. One mode alone would not do where the posterior has several
(a likelihood through :math:`z^2`): HMC seldom crosses between modes, and AIS read such points low by up to the
log of the mass missed. The start depends on the model and the data alone, never on the guide judged. Written
here: Pyro's ``AutoLaplaceApproximation`` fits one Gaussian at one mode for a whole program, not one per data point.
"""

import math

import torch
from pyro import distributions as dist
from torch.distributions import constraints

#: places each unit's climb starts from: the prior draws' mean, and prior draws
MODE_STARTS = 16
#: Adam steps, and the share of them at the full rate before it decays a hundredfold
MODE_STEPS = 400
MODE_LR = 0.05
FULL_RATE_SHARE = 0.75
#: damped Newton steps after Adam's, at most, for ends where the quadratic model about them promises more than
#: NEWTON_GAIN nats; each takes the longest of NEWTON_LENGTHS halvings of the full step that raises log p(x, z)
NEWTON_STEPS = 10
NEWTON_GAIN = 0.5
NEWTON_LENGTHS = 30
#: the step of the central differences of the gradient
STEP = 1e-3
#: the least curvature kept in any direction: a flat or concave direction gets variance 1 / MIN_CURVATURE
MIN_CURVATURE = 0.1
#: two climbs end on one mode where they lie within this many squared standard deviations per dimension
SAME_MODE = 4.0
#: each component's share of mass in a Student-t of these degrees of freedom: tails that fall polynomially
TAIL_SHARE = 0.001
TAIL_DOF = 3.0


def laplace_start(target) -> dist.MixtureSameFamily:
    """A mixture of :class:`TailedGaussian` at the modes, of scale ``H^-1``, per unit of ``target`` (batch
    ``(units,)``, event ``(latent_dim,)``)."""
    modes, precision = finish(target, _climb(target))  # (starts, units, d), (starts, units, d, d)
    values, vectors = floored_eigh(precision)
    precision = vectors @ torch.diag_embed(values) @ vectors.transpose(-1, -2)
    covariance = vectors @ torch.diag_embed(1.0 / values) @ vectors.transpose(-1, -2)
    covariance = 0.5 * (covariance + covariance.transpose(-1, -2))
    with torch.no_grad():
        log_joint = sum(part.double() for part in target.log_joint(modes)).nan_to_num(nan=-torch.inf)
    log_weight = log_joint - 0.5 * values.log().sum(-1)  # log p(x, mode) + log |Sigma|^(1/2)
    order = log_weight.argsort(0, descending=True)  # the best-weighted end of each unit first
    modes, precision, covariance, log_weight = (_pick(m, order) for m in (modes, precision, covariance, log_weight))
    kept = _distinct(modes.double(), precision)
    first = torch.sort((~kept).to(torch.uint8), dim=0, stable=True).indices[:int(kept.sum(0).max())]  # kept, in order
    modes, covariance, log_weight, kept = (_pick(m, first) for m in (modes, covariance, log_weight, kept))
    logits = log_weight.masked_fill(~kept, -torch.inf)
    logits[0] = logits[0].nan_to_num(neginf=0.0)  # a unit whose every end scored -inf keeps its first
    components = TailedGaussian(modes.transpose(0, 1),
                                torch.linalg.cholesky(covariance).transpose(0, 1).to(modes.dtype))
    # a leapfrog step may diverge far out: its density there is scored, and the proposal rejected, not refused
    return dist.MixtureSameFamily(dist.Categorical(logits=logits.T.to(modes.dtype), validate_args=False),
                                  components, validate_args=False)


def _climb(target) -> torch.Tensor:
    """Each unit's ends of :data:`MODE_STEPS` Adam steps up ``log p(x, z)`` from :data:`MODE_STARTS` places."""
    draws = target.start(MODE_STARTS + 63).detach()
    starts = torch.cat([draws[MODE_STARTS - 1:].double().mean(0, keepdim=True).to(draws.dtype),
                        draws[:MODE_STARTS - 1]])
    return ascend(target, starts)


def ascend(target, starts: torch.Tensor, steps: int = MODE_STEPS) -> torch.Tensor:
    """The ends of ``steps`` Adam steps up each unit's ``log p(x, z)`` from ``starts`` ``(count, units, d)``, at
    :data:`MODE_LR`, decaying a hundredfold over the last quarter."""
    with torch.inference_mode(False), torch.enable_grad():
        modes = starts.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([modes], lr=MODE_LR)
        full = int(FULL_RATE_SHARE * steps)
        decay = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.01 ** (max(0, step - full) / max(1, steps - full)))
        for _ in range(steps):
            optimizer.zero_grad()
            loss = -sum(part.nan_to_num(neginf=-1e30).sum() for part in target.log_joint(modes))
            loss.backward()
            optimizer.step()
            decay.step()
    return modes.detach()


def finish(target, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``ends`` ``(count, units, d)`` of Adam's climb, moved on by damped Newton steps where the quadratic model
    about an end promises more than :data:`NEWTON_GAIN` nats, :math:`\tfrac12 g^\top H^{-1} g`; with
    ``-d^2 log p(x, z) / dz^2`` at the ends returned (``(count, units, d, d)``, as :func:`_precision` gives it).

    Each step tries :math:`z + 2^{-k} H^{-1} g` for :math:`k = 0, 1, \ldots` (curvatures floored at
    :data:`MIN_CURVATURE`) and takes the first that raises :math:`\log p(x, z)`. Adam moves about :data:`MODE_LR` a
    step: a tester's row 1,826 units out in a Cauchy prior lay about 90 times beyond the climb's reach, and AIS from
    there read about -11,800 nats against a truth of -19.5. One Newton step reaches a mode where the log joint is near
    quadratic about it, however far.
    """
    ends = ends.clone()
    precision = torch.stack([_precision(target, end) for end in ends])
    units = torch.arange(ends.shape[1], device=ends.device)
    for _ in range(NEWTON_STEPS):
        part = target.select(units)
        height, gradient = _height_and_gradient(part, ends[:, units])
        values, vectors = floored_eigh(precision[:, units])
        step = (vectors @ ((vectors.transpose(-1, -2) @ gradient[..., None]) / values[..., None]))[..., 0]  # H^-1 g
        promising = 0.5 * (gradient * step).sum(-1) > NEWTON_GAIN
        if not promising.any():
            break
        lengths = 0.5 ** torch.arange(NEWTON_LENGTHS, dtype=torch.float64, device=ends.device)
        tried = (ends[:, units][None].double() + lengths[:, None, None, None] * step[None]).to(ends.dtype)
        with torch.no_grad():
            heights = sum(piece.double() for piece in part.log_joint(tried.flatten(0, 1))).view(tried.shape[:3])
        raised = heights.nan_to_num(nan=-math.inf) > height[None]
        first = raised.to(torch.uint8).argmax(0)  # the longest step that raises it
        moved = promising & raised.any(0)
        if not moved.any():
            break
        chosen = tried.gather(0, first[None, ..., None].expand((1,) + tried.shape[1:]))[0]
        ends[:, units] = torch.where(moved[..., None], chosen, ends[:, units])
        units = units[moved.any(0)]
        precision[:, units] = torch.stack([_precision(target.select(units), end) for end in ends[:, units]])
    return ends, precision


def _height_and_gradient(target, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(x, z)`` ``(count, units)`` and its gradient ``(count, units, d)``, in float64, at ``z``."""
    with torch.inference_mode(False), torch.enable_grad():
        points = z.clone().requires_grad_(True)
        height = sum(part for part in target.log_joint(points))
        gradient = torch.autograd.grad(height.nan_to_num(neginf=-1e30).sum(), points)[0]
    return height.detach().double().nan_to_num(nan=-math.inf), gradient.double().nan_to_num()


def _precision(target, mode: torch.Tensor) -> torch.Tensor:
    """``-d^2 log p(x, z) / dz^2`` at ``mode`` ``(units, d)``, by central differences of the gradient, symmetrized."""
    dim = mode.shape[-1]
    shifts = STEP * torch.eye(dim, dtype=mode.dtype, device=mode.device)  # (d, d): one row per direction
    with torch.inference_mode(False), torch.enable_grad():
        points = torch.cat([mode[None] + shifts[:, None], mode[None] - shifts[:, None]]).requires_grad_(True)
        gradient = torch.autograd.grad(sum(part.sum() for part in target.log_joint(points)), points)[0]
    hessian = -(gradient[:dim] - gradient[dim:]).transpose(0, 1) / (2 * STEP)  # (units, d, d), row i: d g / d z_i
    return (0.5 * (hessian + hessian.transpose(-1, -2))).double().nan_to_num()


def laplace_sds(target, mode: torch.Tensor) -> torch.Tensor:
    r"""The standard deviations ``(units, d)`` along each axis of the Laplace approximation at ``mode`` ``(units, d)``,
    :math:`\sqrt{\mathrm{diag}\, H^{-1}}` (curvatures floored at :data:`MIN_CURVATURE`)."""
    values, vectors = floored_eigh(_precision(target, mode))
    covariance = vectors @ torch.diag_embed(1.0 / values) @ vectors.transpose(-1, -2)
    return covariance.diagonal(dim1=-2, dim2=-1).sqrt()


def floored_eigh(precision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvalues of ``precision`` floored at :data:`MIN_CURVATURE`, and its eigenvectors."""
    values, vectors = torch.linalg.eigh(precision)
    return values.clamp(min=MIN_CURVATURE), vectors


def _pick(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor``'s ends ``(starts, units, ...)`` in the order ``index`` ``(n, units)`` gives each unit."""
    return tensor.gather(0, index.view(index.shape + (1,) * (tensor.dim() - 2)).expand(index.shape + tensor.shape[2:]))


def _distinct(modes: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Which ends ``(starts, units)`` are new: none before it (in order) lies within :data:`SAME_MODE` of it."""
    kept = torch.ones(modes.shape[:2], dtype=torch.bool, device=modes.device)
    limit = SAME_MODE * modes.shape[-1]
    for k in range(1, len(modes)):
        apart = modes[k] - modes[:k]  # (k, units, d)
        distance = torch.einsum("kui,kuij,kuj->ku", apart, precision[:k], apart)
        kept[k] = ~((distance < limit) & kept[:k]).any(0)
    return kept


class TailedGaussian(dist.TorchDistribution):
    r""":math:`(1-\epsilon)\,\mathcal{N}(\mu, \Sigma) + \epsilon\,t_\nu(\mu, \Sigma)`, with :math:`\epsilon` =
    :data:`TAIL_SHARE` and :math:`\nu` = :data:`TAIL_DOF`: a Gaussian's bulk, and tails that fall polynomially.
    Written here: Pyro has the two families but no mixture of different families."""

    arg_constraints = {"loc": constraints.real_vector, "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, validate_args=None):
        self.loc, self.scale_tril = loc, scale_tril
        self.gaussian = dist.MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)
        self.tails = dist.MultivariateStudentT(loc.new_tensor(TAIL_DOF), loc, scale_tril, validate_args=False)
        super().__init__(self.gaussian.batch_shape, self.gaussian.event_shape, validate_args=False)
        dim, dof = loc.shape[-1], TAIL_DOF
        self.log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # log |Sigma|^(1/2)
        self.tails_constant = (math.lgamma((dof + dim) / 2) - math.lgamma(dof / 2) - dim / 2 * math.log(dof * math.pi)
                               + math.log(TAIL_SHARE))

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return TailedGaussian(self.loc.expand(batch_shape + self.event_shape),
                              self.scale_tril.expand(batch_shape + self.event_shape + self.event_shape))

    def sample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            gaussian, tails = self.gaussian.sample(sample_shape), self.tails.sample(sample_shape)
            in_tails = torch.rand(gaussian.shape[:-1], dtype=gaussian.dtype, device=gaussian.device) < TAIL_SHARE
            return torch.where(in_tails[..., None], tails, gaussian)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        gaussian = self.gaussian.log_prob(value)
        dim = self.event_shape[-1]
        mahalanobis = -2 * (gaussian + self.log_det) - dim * math.log(2 * math.pi)  # one triangular solve for both
        tails = self.tails_constant - self.log_det - (TAIL_DOF + dim) / 2 * torch.log1p(mahalanobis / TAIL_DOF)
        return torch.logaddexp(gaussian + math.log1p(-TAIL_SHARE), tails)
