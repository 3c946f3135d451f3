r"""The importance-weighted estimate from the guide's own q:
:math:`\log \frac1K \sum_k p(x, z_k) / q(z_k \mid x)`, :math:`z_k \sim q(z \mid x)`.

A lower bound on :math:`\log p(x)` in expectation (Burda et al. 2015), whose bias depends on the guide judged, so it
is not guide-independent. It costs nothing of its own: it is computed with the ELBO from the same draws of q
(:func:`~elbogap.inference.evaluation.evaluate`), and read here from them. Its standard error is the group spread of
the log-weights, declined where q's weights have an infinite variance (k-hat above 0.5 on too many points).
"""

from elbogap.estimators import Estimator, EstimatorSettings, LogPxEstimate, register
from elbogap.inference.weights import group_spread_dof


def iwae(target, settings: EstimatorSettings) -> LogPxEstimate:
    """The IWAE of each unit of ``target`` from the draws of q already taken (``settings.judged``)."""
    draws, samples = settings.judged.draws, settings.judged.samples
    return LogPxEstimate(draws["log_px_iwae"], draws["log_px_iwae_stderr"], {"samples": samples},
                         draws["log_px_iwae_jackknife_stderr"], group_spread_dof(samples))


register(Estimator("iwae", "importance-weighted estimate with K={log_px_samples} samples from q (a lower bound in "
                           "expectation whose bias depends on the guide judged)", iwae, guide_independent=False,
                   needs_guide=True, uses_iw_draws=True))
