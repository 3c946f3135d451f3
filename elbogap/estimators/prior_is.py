r"""Importance sampling from the prior, the textbook baseline:
:math:`\log p(x) \approx \log \frac1S \sum_s p(x \mid z_s)`, :math:`z_s \sim p(z)`.

Unbiased for :math:`p(x)`, a lower bound on :math:`\log p(x)` in expectation, and guide-independent; its variance
grows as the posterior narrows relative to the prior (exponentially in the information the data carry), so it is
precise only for weak data or few latents. Its standard error is the group spread of the log-weights
(:func:`~elbogap.inference.weights.log_mean_exp_stderr`, with its own rule for declining one under an infinite
variance), as for every importance estimate here.
"""

import torch

from elbogap.estimators import Estimator, EstimatorSettings, LogPxEstimate, register
from elbogap.inference.weights import group_spread_dof, importance_estimate


@torch.no_grad()
def prior_is(target, settings: EstimatorSettings) -> LogPxEstimate:
    """``settings.samples`` draws of the prior per unit of ``target``, scored by the likelihood, in chunks."""
    units = target.batch_size
    chunk = max(1, settings.element_budget // max(1, target.x.numel()))  # a draw scores every unit's rows
    log_w, draws = [], []
    for start in range(0, settings.samples, chunk):
        z = target.start(min(chunk, settings.samples - start))
        log_w.append(target.log_joint(z)[1].detach().double().reshape(z.shape[0], units))
        if settings.keep_draws:
            draws.append(z.detach())
    log_w = torch.cat(log_w)
    estimate = importance_estimate(log_w)
    info = {"samples": settings.samples, "ess": float(estimate.ess.mean())}
    if settings.keep_draws:
        info.update(draws=torch.cat(draws), log_w=log_w)
    return LogPxEstimate(estimate.log_mean, estimate.stderr, info, estimate.jackknife,
                         group_spread_dof(settings.samples))


register(Estimator("prior-is", "importance sampling from the prior with K={log_px_samples} draws (a lower bound in "
                               "expectation, precise only where the data say little)", prior_is))
