r"""The importance-weighted bound, scaled per data point, with the plain or the doubly reparameterized gradient."""

import math

import torch
from pyro.infer import ELBO, RenyiELBO
from pyro.infer.enum import get_importance_trace
from pyro.util import warn_if_nan

from elbogap.errors import UsageError
from elbogap.inference.stl import StickingTheLanding

#: the plate Pyro's ELBOs draw vectorized particles in
PARTICLE_PLATE = "num_particles_vectorized"


class IWAE(ELBO):
    r"""The IWAE bound [1]; with a sticking guide, the doubly reparameterized gradient of Tucker et al. [2].

    For each data point, :math:`K` draws :math:`z_k = g_\phi(\epsilon_k, x)` give the bound
    :math:`\log \frac1K \sum_k w_k` with :math:`\log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x)`
    and normalized weights :math:`\tilde w_k = w_k / \sum_j w_j`. Its gradients are estimated as

    .. math:: \nabla_\theta = \sum_k \tilde w_k\, \nabla_\theta \log w_k, \qquad
              \nabla_\phi = \sum_k \tilde w_k^2\, \frac{\partial \log \bar w_k}{\partial z_k}
              \frac{\partial z_k}{\partial \phi},

    where :math:`\log \bar w_k` scores :math:`z_k` with q's parameters held fixed, when the guide
    draws from :class:`~elbogap.inference.stl.StickingTheLanding` (see
    :func:`~elbogap.inference.stl.stl_guide`); with an ordinary guide the same loss gives the plain
    estimator, :math:`\nabla_\phi = \sum_k \tilde w_k \nabla_\phi \log w_k`. Unlike the plain estimator's, the encoder's
    signal-to-noise ratio does not fall as :math:`K` grows [2, 3]. The surrogate is
    :math:`\sum_k \perp(\tilde w_k) \log \bar w_k`, and a gradient hook on each draw :math:`z_k`
    multiplies what reaches it by :math:`\tilde w_k` once more, so only the guide's gradient
    gets the square. With :math:`K = 1` this is the sticking-the-landing ELBO.

    Each data point has its own weights, normalized over its own :math:`K` draws; the minibatch
    scale :math:`N / B` (the observed sites' scale, from a subsampled data plate or from a
    program scaled whole) multiplies each point's bound after the logarithm, so the loss, the
    negative bound summed over the minibatch times :math:`N / B`, is an unbiased estimate of the
    full data set's (Pyro's ``RenyiELBO`` 1.9.2 applies the scale to the log-weights before the
    log-sum-exp, which is the same only for :math:`N = B`). What else scales a site (a KL weight)
    stays in its log-weight. With the plain estimator, a model with a latent outside the data
    plate (a global latent, whose bound has no per-point split) is handed to Pyro's ``RenyiELBO``
    (:math:`\alpha = 0`) whole; DReG refuses it. Hand-written because Pyro has no DReG estimator
    (pyro-ppl/pyro#2598, draft #2605) and its IWAE scales minibatches inside the logarithm; not
    compiled (a traced graph would not keep the hooks).

    :param int num_particles: :math:`K`, draws per data point.
    :param int max_plate_nesting: plates in model and guide (elbogap's: 1, the data plate).
    :param bool vectorize_particles: draw the :math:`K` particles at once in a plate.

    References:

    [1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov,
        arXiv:1509.00519

    [2] Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, George Tucker,
        Dieterich Lawson, Shixiang Gu, Chris J. Maddison, arXiv:1810.04152

    [3] Tighter Variational Bounds are Not Necessarily Better, Tom Rainforth, Adam R. Kosiorek,
        Tuan Anh Le, Chris J. Maddison, Maximilian Igl, Frank Wood, Yee Whye Teh, arXiv:1802.04537
    """

    def __init__(self, num_particles: int = 2, max_plate_nesting: int = 1, vectorize_particles: bool = True):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles)
        self._global = None  # Pyro's RenyiELBO, once a model with a global latent was seen under the plain estimator

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _log_weights(self, model, guide, args, kwargs):
        """Per-point log-weights ``(K, batch)``, the minibatch scale, and each particle's draws to hook."""
        particles, draws = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sticking = [site for site in guide_trace.nodes.values()
                        if site["type"] == "sample" and isinstance(site["fn"], StickingTheLanding)]
            if not sticking and _has_global_site(model_trace, guide_trace):
                return None
            scale = _minibatch_scale(model_trace)
            log_w = 0.0
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for name, site in trace.nodes.items():
                    if site["type"] == "sample":
                        _check_per_point(name, site)
                        log_w = log_w + sign * site["log_prob"] / scale
            particles.append(log_w)
            draws.append(sticking)
        if self.vectorize_particles:
            log_w = particles[0] if self.num_particles > 1 else particles[0].unsqueeze(0)
        else:
            log_w = torch.stack(particles)
        return log_w, scale, draws

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        r"""The negative bound, whose gradient is the DReG estimate (``torch.autograd.grad`` keeps the hooks)."""
        if self._global is not None or (found := self._log_weights(model, guide, args, kwargs)) is None:
            return self._whole(model, guide, args, kwargs, "differentiable_loss")
        log_w, scale, draws = found
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        for k, sites in enumerate(draws if self.num_particles > 1 else ()):  # one particle: its weight is 1
            for site in sites:
                _hook(site, weights if self.vectorize_particles else weights[k])
        surrogate = (weights * (log_w - log_w.detach())).sum(0)  # zero in value; its gradient is sum_k w_k grad log w_k
        return -scale * (bound + surrogate).sum()

    def _whole(self, model, guide, args, kwargs, method: str):
        """Pyro's RenyiELBO on a model with a global latent (see above)."""
        if self._global is None:
            self._global = RenyiELBO(alpha=0.0, num_particles=self.num_particles,
                                     max_plate_nesting=self.max_plate_nesting,
                                     vectorize_particles=self.vectorize_particles)
        return getattr(self._global, method)(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        if self._global is not None:
            return self._whole(model, guide, args, kwargs, "loss_and_grads")
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        loss = loss.item()
        warn_if_nan(loss, "loss")
        return loss

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        if self._global is not None or (found := self._log_weights(model, guide, args, kwargs)) is None:
            return self._whole(model, guide, args, kwargs, "loss")
        log_w, scale, _ = found
        loss = -scale * (torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum().item()
        warn_if_nan(loss, "loss")
        return loss


def _global_site(site: dict) -> bool:
    return not any(frame.name != PARTICLE_PLATE for frame in site["cond_indep_stack"])


def _has_global_site(*traces) -> bool:
    return any(site["type"] == "sample" and _global_site(site) for trace in traces for site in trace.nodes.values())


def _check_per_point(name: str, site: dict) -> None:
    if _global_site(site):
        raise UsageError(f"--gradient dreg weighs each data point's own draws, and the site {name!r} lies outside the "
                         "data plate (a global latent); use --gradient reparam with this model")


def _minibatch_scale(model_trace) -> float:
    """``N / B``, the scale of the observed sites: a subsampled data plate's, or a whole program's (``poutine.scale``).

    The latent sites' scales divided by it leave what else scales them (a KL weight).
    """
    scales = {float(site["scale"]) for site in model_trace.nodes.values()
              if site["type"] == "sample" and site["is_observed"]}
    if len(scales) > 1:
        raise UsageError(f"--gradient dreg needs one minibatch scale, and the model's observed sites have several "
                         f"({', '.join(map(str, sorted(scales)))}); use --gradient reparam with this model")
    return scales.pop() if scales else 1.0


def _hook(site: dict, weights: torch.Tensor) -> None:
    """Multiply the gradient that reaches a draw by its particle's normalized weight (the square's second factor)."""
    value = site["value"]
    if not value.requires_grad:
        return
    event_dims = len(site["fn"].event_shape)
    factor = weights.reshape(weights.shape + (1,) * event_dims)
    value.register_hook(lambda grad: grad * factor)
