r"""The closed form: :math:`\log p(x)` of a model that states it (``model.log_px``, the linear-Gaussian model's
:math:`\mathcal{N}(x; b, W W^\top + \sigma^2 I)`). Its error is zero."""

import torch

from elbogap.estimators import Estimator, EstimatorSettings, LogPxEstimate, register


def has_closed_form(target) -> bool:
    return getattr(target.model, "has_exact_posterior", False)


@torch.inference_mode()
def exact(target, settings: EstimatorSettings) -> LogPxEstimate:
    """The model's closed-form evidence of each unit of ``target``."""
    values = target.model.log_px(target.x)
    return LogPxEstimate(values, torch.zeros_like(values), {"samples": 0})


register(Estimator("exact", "exact (closed form)", exact, applies=has_closed_form,
                   requirement="a model with a closed-form evidence (--model linear)", sampled=False))
