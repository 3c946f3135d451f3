"""Training (SVI) and evaluation (ELBO, log p(x), the KL gap) of models and guides."""

from elbogap.inference.evaluation import Evaluation, evaluate
from elbogap.inference.gap import kl_gap
from elbogap.inference.log_joint import log_joint
from elbogap.inference.log_px import choose_method, exact_log_px, quadrature_log_px
from elbogap.inference.objectives import OBJECTIVES, make_objective
from elbogap.inference.snr import GroupSNR, gradient_snr
from elbogap.inference.train import KLWeight, Trainer, TrainResult, make_svi, refit_guide, train

__all__ = [
    "OBJECTIVES", "Evaluation", "GroupSNR", "KLWeight", "TrainResult", "Trainer", "choose_method", "evaluate",
    "exact_log_px", "gradient_snr", "kl_gap", "log_joint", "make_objective", "make_svi", "quadrature_log_px",
    "refit_guide", "train",
]
