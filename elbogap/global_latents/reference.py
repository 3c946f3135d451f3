r"""A reference posterior for a model with global latents, and how far each guide's moments are from it.

``nuts``: Pyro's NUTS (``pyro.infer.MCMC``), chains run one after another from their own
seeds, with split :math:`\hat R` and the effective sample size of ``pyro.ops.stats`` checked
against the thresholds of Vehtari et al. [1] (:math:`\hat R < 1.01`, ESS above 100 per chain).
``ais``: the final states of the evidence's AIS chains, weighted by their normalized importance
weights (free, but only as good as the chains' effective number), or, where they are worth more effective draws
and their weights' tail allows, draws of the evidence's fitted Gaussian reference weighted by importance
(:func:`ais_reference`).

Per latent site and element, a guide's standardized mean error is
:math:`(\mathbb{E}_q - \mathbb{E}_{\text{ref}}) / \mathrm{sd}_{\text{ref}}` and its scale ratio
:math:`\mathrm{sd}_q / \mathrm{sd}_{\text{ref}}` (below 1: q too narrow, as mean-field
families tend to be). A run compares them in the coordinates its guides fit
(:meth:`~elbogap.global_latents.model.GlobalLatentModel.unconstrained`: log for a positive site), where a
weighted reference's sd holds at a few hundred effective draws; a positive site's own right tail does not (a
Gamma-Poisson model's shape: 248 effective draws gave sd(a) 21% low, sd(log a) 6%).

References:

[1] Rank-normalization, folding, and localization: an improved R-hat for assessing convergence
    of MCMC, Aki Vehtari, Andrew Gelman, Daniel Simpson, Bob Carpenter, Paul-Christian Bürkner,
    arXiv:1903.08008
"""

import math
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from elbogap.errors import UsageError
from elbogap.global_latents.evaluation import moments
from elbogap.inference.weights import effective_sample_size as kish_ess
from elbogap.inference.weights import pareto_khat
from elbogap.progress import Progress, as_progress

RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100
#: the fewest effective draws a reference needs for its per-site comparison to be read as a finding: a guide's
#: standardized mean error then carries a reference s.e. of at most 0.1, and its sd ratio about 7% for light tails
#: (1/2 sqrt((kurtosis - 1) / draws): 18% at kurtosis 14)
RELIABLE_DRAWS = 100
#: the largest PSIS k-hat at which the fitted reference's weighted draws replace the AIS chains' states: an sd is a
#: second moment, whose weighted estimate has a heavier tail than the weights' own. Drawn from a Gaussian narrower than
#: a Gaussian target (benchmarks/reference_draws.py), 2048 draws read the sd to 2.9% at k-hat 0.30 (Kish's count
#: claims 1.6%), 3.6% at 0.35, 5.9% at 0.43 and 8.5% at 0.48, where 256 chains' states claim 4.4%
REFERENCE_DRAWS_KHAT = 0.3
#: elements per site whose moments and errors are kept one by one in results (the rest are summarized)
KEPT_ELEMENTS = 50


@dataclass
class Reference:
    """Posterior draws or weighted states, each site's elements as ``(count, size)``, and how they were made."""

    method: str
    values: dict[str, torch.Tensor]
    weights: torch.Tensor | None = None
    diagnostics: dict = field(default_factory=dict)

    def moments(self) -> dict[str, dict]:
        return moments(self.values, self.weights)


def nuts_reference(model, data: torch.Tensor, chains: int = 2, warmup: int = 500, samples: int = 500,
                   seed: int = 0, progress: bool | Progress = False) -> Reference:
    """``chains`` NUTS chains on the whole data set, each from its own seed, with R-hat, ESS and divergences.

    ``progress`` counts the iterations, warm-up and sampling, of every chain in one bar.
    """
    started = time.perf_counter()
    runs, divergences = [], 0
    with as_progress(progress).bar("NUTS", chains * (warmup + samples)) as bar:
        for chain in range(chains):
            pyro.set_rng_seed(seed + chain)
            kernel = NUTS(model.full_program, jit_compile=False)

            def count(_kernel, _values, stage, i, chain=chain):
                bar.update()
                if i == 0:
                    bar.set_postfix(chain=f"{chain + 1}/{chains}", stage=stage.lower(), refresh=False)

            # one bar over every chain, which Pyro's own bar (one per chain) cannot give a driver
            mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, num_chains=1, hook_fn=count,
                        disable_progbar=True)
            try:
                mcmc.run(data)
            except Exception as error:
                reason = str(error).splitlines()[0] if str(error) else ""
                raise UsageError(f"NUTS cannot run {model.spec}: {type(error).__name__}: {reason}; "
                                 "use --reference ais or none") from None
            runs.append(mcmc.get_samples())
            divergences += int(sum(len(v) for v in mcmc.diagnostics().get("divergences", {}).values()))
    values = {name: torch.cat([run[name].reshape(samples, -1) for run in runs]).detach()
              for name in model.latent_sites}
    grouped = {name: torch.stack([run[name].reshape(samples, -1) for run in runs]).double()
               for name in model.latent_sites}
    rhat = {name: float(split_gelman_rubin(x).max()) if chains > 1 else float("nan") for name, x in grouped.items()}
    ess = {name: float(effective_sample_size(x).min()) for name, x in grouped.items()}
    warnings = []
    bad_rhat = [f"{name} {value:.3f}" for name, value in rhat.items() if value > RHAT_LIMIT]
    if bad_rhat:
        warnings.append(f"R-hat above {RHAT_LIMIT} ({', '.join(bad_rhat)}): the chains disagree; "
                        "raise --nuts-warmup and --nuts-samples")
    if chains < 2:
        warnings.append("one chain: R-hat cannot be computed; use --nuts-chains 2 or more")
    low_ess = [f"{name} {value:.0f}" for name, value in ess.items() if value < ESS_PER_CHAIN * chains]
    if low_ess:
        warnings.append(f"effective sample size below {ESS_PER_CHAIN} per chain ({', '.join(low_ess)}): "
                        "the reference moments are noisy; raise --nuts-samples")
    if divergences:
        warnings.append(f"{divergences} divergent transitions: NUTS may miss part of the posterior "
                        "(reparameterize, e.g. non-centered)")
    effective = min(ess.values()) if ess else 0.0
    reliable = effective >= RELIABLE_DRAWS and (chains < 2 or all(value <= RHAT_LIMIT for value in rhat.values()))
    if not reliable:
        warnings.append(_unreliable(effective, "raise --nuts-samples and --nuts-warmup"))
    diagnostics = {"chains": chains, "warmup": warmup, "samples": samples, "rhat_max": rhat, "ess_min": ess,
                   "divergences": divergences, "effective_draws": effective, "reliable": reliable,
                   "warnings": warnings, "seconds": time.perf_counter() - started}
    return Reference("nuts", values, None, diagnostics)


def _unreliable(effective: float, remedy: str) -> str:
    return (f"the reference rests on {effective:.0f} effective draws (or its chains disagree), under the "
            f"{RELIABLE_DRAWS} its per-site comparison needs: the table of each guide against it is rough, not a "
            f"finding; {remedy}")


def ais_reference(model, log_w: torch.Tensor, states: torch.Tensor, sampled: bool = True,
                  draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> Reference:
    """The AIS chains' final states (or another estimator's draws) mapped into each site's support, weighted by their
    normalized weights. Where they are not sampled but a quadrature's grid points (``sampled`` False), the weighted
    moments are the quadrature's: the effective sample size does not apply, and the grid is as reliable as its
    evidence.

    ``draws``, ``(z, log_w)`` of the evidence's fitted Gaussian reference
    (:func:`~elbogap.global_latents.evidence.with_reference_draws`), replace the chains' states where their weights'
    tail is light (PSIS :math:`\\hat k` at most :data:`REFERENCE_DRAWS_KHAT`) and they count more effective draws;
    ``source`` in the diagnostics says which was used, and both effective counts are kept."""
    chains = float(kish_ess(log_w))
    extra = {}
    if sampled and draws is not None:
        khat, counted = float(pareto_khat(draws[1][:, None])[0]), float(kish_ess(draws[1]))
        counted = counted if math.isfinite(khat) and math.isfinite(counted) else 0.0  # a NaN weight: the chains stay
        taken = khat <= REFERENCE_DRAWS_KHAT and counted > chains
        finite_khat = khat if math.isfinite(khat) else None
        extra = {"draws": len(draws[1]), "draws_effective": counted, "draws_khat": finite_khat,
                 "source": "reference_draws" if taken else "chains"}
        if taken:
            states, log_w = draws
    weights = log_w.double().softmax(0)
    states = [model.unpack(z)[0] for z in states]
    values = {name: torch.stack([state[name].reshape(-1) for state in states]).detach()
              for name in model.latent_sites}
    effective = float(kish_ess(log_w))
    if not sampled:
        return Reference("ais", values, weights, {"grid_points": len(weights), "effective_chains": effective,
                                                  "effective_draws": effective, "reliable": True, "warnings": []})
    reliable = effective >= RELIABLE_DRAWS
    warnings = [] if reliable else [_unreliable(effective, "raise --evidence-chains or use --reference nuts")]
    return Reference("ais", values, weights, {"effective_chains": chains, "effective_draws": effective,
                                              "reliable": reliable, "warnings": warnings, **extra})


def against_reference(q_moments: dict, ref_moments: dict) -> dict:
    r"""Per site: standardized mean errors and scale ratios (elementwise for the first elements, summaries for all)."""
    out = {}
    for name, q in q_moments.items():
        ref = ref_moments[name]
        sd_ref = ref["sd"].clamp_min(1e-12)
        error = (q["mean"] - ref["mean"]) / sd_ref
        ratio = q["sd"] / sd_ref
        out[name] = {
            "size": len(error),
            "mean_error_max_abs": float(error.abs().max()),
            "mean_error_rms": float(error.pow(2).mean().sqrt()),
            "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max()),
            "sd_ratio_geomean": float(ratio.clamp_min(1e-300).log().mean().exp()),
            "mean_error": error[:KEPT_ELEMENTS].tolist(), "sd_ratio": ratio[:KEPT_ELEMENTS].tolist(),
        }
    return out


#: how many of q's own sds from q's mean a reference draw lies where :func:`mass_outside_q` counts it: a Gaussian q
#: leaves 0.006% of its own mass there, and 8% of a Gaussian posterior whose sd is 2.3 times its own (a mean-field q
#: of two latents correlated 0.9)
OUTSIDE_SDS = 4.0


def mass_outside_q(q_moments: dict, ref_values: dict, weights: torch.Tensor | None) -> dict[str, float]:
    r"""Per site, the largest share over its elements of the reference posterior's mass lying more than
    :data:`OUTSIDE_SDS` of q's sds from q's mean, :math:`\max_i \Pr_{\text{ref}}(|\theta_i - \mu_{q,i}| > 4
    \sigma_{q,i})`: about half where q sits in one of two modes, which q's standardized mean error cannot see
    when the reference's sd spans both modes."""
    out = {}
    for name, q in q_moments.items():
        draws = ref_values[name].double()
        share = weights.double()[:, None] if weights is not None else draws.new_full((len(draws), 1), 1 / len(draws))
        outside = ((draws - q["mean"]).abs() > OUTSIDE_SDS * q["sd"].clamp_min(1e-12)).double()
        out[name] = float((share * outside).sum(0).max())
    return out


def site_moments(moment: dict) -> dict:
    """A site's moments as lists for results.json (the first elements only)."""
    return {name: {"mean": m["mean"][:KEPT_ELEMENTS].tolist(), "sd": m["sd"][:KEPT_ELEMENTS].tolist()}
            for name, m in moment.items()}


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def weighted_source(reference: dict) -> str:
    """What a weighted reference's draws were, from its record (``reference``): the words results.md and the ArviZ
    export name them by."""
    method = reference.get("method", "unknown")
    if "grid_points" in reference:
        return (f"the {reference['grid_points']} grid points of the evidence's {method}, weighted by p(D, θ) times "
                "their cell's area")
    if method == "ais" and reference.get("source") == "reference_draws":
        return f"{reference['draws']} draws of the evidence's fitted Gaussian reference r, weighted by p(D, θ) / r(θ)"
    if method == "ais":
        return "the AIS chains' final states, weighted by their importance weights"
    return f"the draws of the evidence's estimator ({method}), weighted by their importance weights"
