r"""Annealed importance sampling per point (:func:`~elbogap.inference.ais.ais_log_px`), from the start
``--ais-init`` names: Gaussians at each point's posterior modes (the default), the prior, or the guide's q.

A lower bound on :math:`\log p(x)` in expectation, the same for every guide of a seed where it does not start from
q; its standard error is the spread of log-means over groups of chains. It needs the guide for the start from q, and
beside it IWAE from q's draws, which it is checked against (:func:`ais_against_iwae`).
"""

import time

import torch

from elbogap.estimators import Estimator, EstimatorSettings, LogPxEstimate, register
from elbogap.inference.ais import AISSettings, ais_log_px


def ais(target, settings: EstimatorSettings) -> LogPxEstimate:
    """AIS on each unit of ``target`` with ``settings.ais`` (its defaults where None), and a record of the run."""
    ais = settings.ais or AISSettings()
    judged = settings.judged
    started = time.perf_counter()
    result = ais_log_px(target.model, target.x, ais, guide=judged.guide, index=judged.index,
                        progress=settings.progress)
    run = {**ais.to_dict(), "points": len(target.x), "seconds": time.perf_counter() - started,
           "acceptance": result.acceptance.tolist(),
           "step_sizes": result.step_sizes.double().log().mean(1).exp().tolist()}
    info = {"samples": ais.chains, "ais": run}
    if ais.chains < 2:
        info["log_px_note"] = "AIS with one chain has no standard error (shown as NaN): use --ais-chains 2 or more"
    return LogPxEstimate(result.log_px, result.stderr, info, result.jackknife_stderr, result.dof, result.bias_bound)


def ais_against_iwae(per_point: dict, rows: torch.Tensor, threshold: float = 3.0) -> dict:
    r"""How far IWAE from q lies above AIS on the AIS points, and a warning where AIS is visibly the looser bound.

    Both are stochastic lower bounds on :math:`\log p(x)`, so where the guide's IWAE mean exceeds AIS's by
    more than ``threshold`` standard errors of the difference, AIS had too few temperatures or chains
    for this model: the reported log p(x), and so the KL gap, are too low.
    """
    difference = (per_point["log_px_iwae"] - per_point["log_px_ais"])[rows].double()
    stderr = float((per_point["log_px_iwae_jackknife_stderr"][rows].double().pow(2)
                    + per_point["log_px_ais_jackknife_stderr"][rows].double().pow(2)).sum().sqrt() / len(difference))
    out = {"iwae_above_ais": float(difference.mean()), "iwae_above_ais_stderr": stderr}
    if out["iwae_above_ais"] > threshold * stderr and out["iwae_above_ais"] > 0:
        out["log_px_warning"] = (f"IWAE from q is {out['iwae_above_ais']:.3f} nats above AIS on its points "
                                 f"({out['iwae_above_ais'] / max(stderr, 1e-12):.0f} standard errors): AIS has not "
                                 "converged at these settings and the KL gap is understated; raise --ais-steps "
                                 "(and --ais-chains)")
    return out


register(Estimator(
    "ais", "annealed importance sampling from the {ais[start]}, {ais[chains]} chains x {ais[steps]} temperatures x "
           "{ais[leapfrog_steps]} leapfrog steps (a lower bound in expectation)", ais, needs_guide=True,
    uses_iw_draws=True, kept_as="log_px_ais", check=ais_against_iwae,
    caveat="AIS's error (the ± of one seed, the (s.e.) of several) is the spread of its chains, not its bias: from the "
           "prior AIS reads low in expectation (0.03-0.09 nats per point on a tester's 4-latent program at 500 "
           "temperatures), so log p(x) and the KL gap may sit lower than their ± says; from Gaussians at each point's "
           "posterior modes (the default start) the bias is far smaller where the posterior is near Gaussian about "
           "them, and each point's own error, and a mean's, holds a bound of 0.001 nats on how far above log p(x) the "
           "start's seldom-drawn tails let it read; "
           "`elbogap evaluate RUN_DIR --bdmc N` measures the bias of AIS from the prior on data simulated from the "
           "model"))
