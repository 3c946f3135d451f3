r"""The protocol of a study of a model with global latents: what is evaluated, on which data, with which estimators.

The data set :math:`D` is every row of the data (see :func:`elbogap.data.load_whole`): the
posterior conditions on all of it, so the evidence :math:`\log p(D)` and every guide's
:math:`\mathrm{ELBO}(D)` are computed on all of it, and
:math:`\log p(D) = \mathrm{ELBO}(q) + \mathrm{KL}(q(\theta, z) \,\|\, p(\theta, z \mid D))`.

Per run (guide and seed): the ELBO of D and its terms from ``--iw-samples`` draws of q (more, up to 16 times, until
its standard error is at most ``--evidence-stderr``); :math:`\log p(D)` by AIS from a Gaussian reference fitted once
per seed (:mod:`elbogap.global_latents.evidence`, independent of the guide); the KL gap with its standard error; q
as an importance proposal (its estimate of :math:`\log p(D)`, ESS, PSIS :math:`\hat k`); each site's moments under q
against a reference posterior (``--reference``), marked rough under 100 effective draws; and with ``--bdmc N`` a
sandwich on N data sets simulated from the prior predictive. The evidence, the NUTS reference and BDMC depend on the
model's parameters, the data, the settings and the seed, not on the guide: they are computed once per study for a
model without parameters, by the first run of the seed to ask while the others wait on a lock, and kept in
``OUT/shared/`` for every guide's run (:func:`~elbogap.global_latents.shared.study_cache`), as is the seed's
mean-field fit that the families containing it start from (:mod:`elbogap.global_latents.warm_start`). Training is
:mod:`elbogap.global_latents.training`.
"""

import json
import math
import time
from pathlib import Path

import torch

from elbogap import streams
from elbogap.checkpoint import save_checkpoint
from elbogap.errors import UsageError
from elbogap.estimators import EstimatorSettings, without_guide
from elbogap.global_latents.evaluation import (
    guide_draws,
    moments,
    pointwise_log_likelihood,
    precise_draws,
    summarize_draws,
)
from elbogap.global_latents.evidence import (
    PRIOR_CHECK_SETTINGS,
    ais_evidence,
    bdmc_evidence,
    one_thread,
)
from elbogap.global_latents.guides import global_guide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.reference import (
    against_reference,
    ais_reference,
    mass_outside_q,
    nuts_reference,
    site_moments,
)
from elbogap.global_latents.shared import study_cache
from elbogap.global_latents.warm_start import mean_field_fit, starts_at_mean_field
from elbogap.inference.weights import (
    FINITE_VARIANCE_KHAT,
    group_spread_dof,
    log_mean_exp,
    log_mean_exp_stderr,
    pareto_khat,
)
from elbogap.model.target import DataSetTarget
from elbogap.phases import Phases
from elbogap.progress import Progress, as_progress
from elbogap.records import with_totals
from elbogap.user_model import resolve_program

#: how far q's importance estimate of log p(D) may sit from AIS's, in standard errors, before either is doubted
DISAGREEMENT = 3.0
#: and in nats, above or below: a difference below this is within the 0.1-nat tolerance the gaps are read to (a
#: tester's conjugate regression: q's estimate 0.018 above an AIS estimate 0.002 from exact, "3 s.e." at k-hat 0.46,
#: was read as AIS not converged; q's own estimate was the one 0.016 off. A Gamma-Poisson rate: q 0.003 below an
#: exact AIS at 3.5 s.e., KL 0.003 from the posterior, was called "a poor importance proposal")
DISAGREEMENT_NATS = 0.05
#: how far below it an estimate with no error bar (k-hat above 0.5) must sit to be noted: without a spread to judge it
#: by, eight schools' IAF, the best family there (gap 0.106), read 0.050 below at k-hat 0.56; a tester's bimodal
#: program's guides, each in one of two modes, 0.72 below
NO_ERROR_BAR_NATS = 0.25


def evidence_state(model, data, config, seed, run_dir, progress, stream: str = "evidence") -> dict:
    """log p(D) of ``data`` (:func:`~elbogap.global_latents.evidence.ais_evidence`, or the estimator of
    :mod:`elbogap.estimators` that ``--log-px`` names, of those that read no guide), once per seed, from
    ``stream``."""
    if (estimator := without_guide().get(config.log_px)) is not None:
        return estimated_evidence(estimator, model, data, config, seed, run_dir, stream)
    settings = config.evidence_settings()

    def compute():
        streams.seeded(stream, seed)
        evidence = ais_evidence(model, data, settings, progress=progress)
        draws = {} if evidence.draws is None else {"draws": evidence.draws[0], "draws_log_w": evidence.draws[1]}
        return {"summary": evidence.summary(settings), "log_w": evidence.log_w, "states": evidence.states, **draws}

    key = {**settings.to_dict(), "stream": stream, "prior_check": PRIOR_CHECK_SETTINGS}
    return study_cache(run_dir, "evidence", model, data, key, seed, compute)


def estimated_evidence(estimator, model, data, config, seed, run_dir, stream: str) -> dict:
    """log p(D) by a target-generic estimator on the whole data set (one unit), with its draws and log-weights (a
    weighted reference posterior, as AIS's chains are), once per seed."""
    settings = EstimatorSettings(samples=config.iw_samples, keep_draws=True, grid_points=config.quadrature_points)

    def compute():
        streams.seeded(stream, seed)
        started = time.perf_counter()
        with one_thread():
            estimate = estimator.estimate(DataSetTarget(model, data), settings)
        log_w, draws = estimate.info.pop("log_w")[:, 0], estimate.info.pop("draws")[:, 0]
        khat = float(pareto_khat(log_w[:, None])[0]) if estimator.sampled else math.nan  # a grid's weights: no tail
        summary = {"log_evidence": float(estimate.values[0]), "stderr": float(estimate.stderr[0]),
                   "dof": estimate.dof if math.isfinite(estimate.dof) else None,  # None: a normal interval
                   "method": estimator.name, "start": "prior", "sampled": estimator.sampled,
                   "description": estimator.description.format(log_px_samples=estimate.info["samples"]),
                   "seconds": time.perf_counter() - started, "khat": khat if math.isfinite(khat) else None,
                   "effective_chains": float(log_w.softmax(0).pow(2).sum().reciprocal()), **estimate.info}
        return {"summary": summary, "log_w": log_w, "states": draws}

    key = {"estimator": estimator.name, "samples": settings.samples, "grid_points": settings.grid_points,
           "stream": stream}  # every setting an estimator reads: a resumed study with another grid computes anew
    return study_cache(run_dir, "evidence", model, data, key, seed, compute)


def refuse_estimator(setting: str, model: GlobalLatentModel, data: torch.Tensor) -> None:
    """One line where ``--log-px setting`` cannot estimate this model's log p(D)."""
    if setting in ("auto", "ais"):
        return
    usable = [name for name, estimator in without_guide().items() if estimator.applies(DataSetTarget(model, data))]
    estimator = without_guide().get(setting)
    if estimator is None:
        raise UsageError(f"--log-px {setting} is for models whose latents are per data point; for log p(D) of this "
                         f"model use --log-px auto (AIS) or one of {', '.join(usable)}")
    if setting not in usable:
        raise UsageError(f"--log-px {setting} needs {estimator.requirement}, which this model ({model.latent_dim} "
                         f"latent dimensions) is not; use --log-px auto (AIS) or one of {', '.join(usable)}")


def reference_state(model, data, config, seed, run_dir, evidence: dict, progress) -> dict | None:
    if config.reference == "none":
        return None
    if config.reference == "ais":  # the evidence's weighted draws: AIS's chains, or another estimator's draws
        draws = (evidence["draws"], evidence["draws_log_w"]) if "draws" in evidence else None
        reference = ais_reference(model, evidence["log_w"], evidence["states"],
                                  evidence["summary"].get("sampled", True), draws)
        return {"method": evidence["summary"].get("method", "ais"), "values": reference.values,
                "weights": reference.weights, "diagnostics": json.dumps(reference.diagnostics)}
    settings = {"chains": config.nuts_chains, "warmup": config.nuts_warmup, "samples": config.nuts_samples}

    def compute():
        reference = nuts_reference(model, data, seed=streams.seed_for("reference", seed), progress=progress,
                                   **settings)
        return {"method": "nuts", "values": reference.values, "diagnostics": json.dumps(reference.diagnostics)}

    return study_cache(run_dir, "nuts", model, data, settings, seed, compute)


def evaluate_global(model: GlobalLatentModel, guide, data, config, seed: int, phases=None,
                    progress: bool | Progress = False, run_dir: Path | None = None) -> dict:
    """The metrics of one trained guide on the whole data set ``data.train`` (see the module's description)."""
    phases = phases if phases is not None else Phases()
    progress = as_progress(progress)
    rows = data.train
    run_dir = Path(run_dir if run_dir is not None else ".")
    num_data = len(rows)
    with phases("evaluate_q"), progress.phase("evaluate q"):
        streams.seeded("evaluation", seed)
        draws = precise_draws(model, guide, rows, config.iw_samples, config.evidence_stderr)
        metrics = summarize_draws(draws, num_data)
        if at_bound := guide.scales_at_bound(seed):
            metrics["scales_at_bound"] = at_bound
    metrics["rows"] = data.rows
    if data.held_out:
        metrics["held_out_rows"] = list(data.held_out)
    with phases("evidence"), progress.phase("evidence"):
        evidence = evidence_state(model, rows, config, seed, run_dir, progress)
    summary = evidence["summary"]
    metrics.update(log_px=summary["log_evidence"], log_px_stderr=summary["stderr"],
                   log_px_dof=summary.get("dof", group_spread_dof(len(evidence["log_w"]))),
                   log_px_method=summary.get("method", "ais"), log_px_start=summary.get("start", "prior"),
                   log_px_guide_independent=config.mode == "fixed-model"
                   or not any(value.numel() for value in model.state_dict().values()))
    metrics["kl_gap"] = metrics["log_px"] - metrics["elbo"]
    metrics["kl_gap_stderr"] = math.hypot(metrics["log_px_stderr"], metrics["elbo_stderr"])
    for key in ("elbo", "elbo_stderr", "log_px", "kl_gap", "kl_gap_stderr", "log_px_iwae"):
        metrics[f"{key}_per_point"] = metrics[key] / num_data
    metrics = with_totals(metrics)  # D is one unit: each total is its number
    metrics.update(evidence_check(metrics))
    if starts_at_mean_field(model, guide) and (config.warm_start != "off"
                                                      or "auto:AutoNormal" not in config.guides):
        with phases("mean_field_fit"):  # where the run started from it, read from OUT/shared/ at no cost
            metrics["mean_field_check"] = mean_field_fit(model, data, config, seed, run_dir, progress)["check"]
    record = {"kind": "global", "train": metrics, "evidence": summary}
    with phases("reference"), progress.phase("reference"):
        reference = reference_state(model, rows, config, seed, run_dir, evidence, progress)
    q_moments = moments(draws.values)
    record["q_moments"] = site_moments(q_moments)
    if reference is not None:
        weights = reference.get("weights")
        ref_moments = moments(reference["values"], weights)
        # compared where q is fitted: a positive site's heavy right tail makes a weighted reference's sd unreliable at
        # a few hundred effective draws, its log's not (a tester's Gamma-Poisson model: sd(a) 21% low, sd(log a) 6%)
        q_fitted, ref_fitted = moments(model.unconstrained(draws.values)), model.unconstrained(reference["values"])
        sites = against_reference(q_fitted, moments(ref_fitted, weights))
        for name, share in mass_outside_q(q_fitted, ref_fitted, weights).items():
            sites[name]["mass_outside_q"] = share
        record["reference"] = {"method": reference["method"], **json.loads(reference["diagnostics"]),
                               "moments": site_moments(ref_moments), "coordinates": "unconstrained",
                               "sites": sites, "sites_constrained": against_reference(q_moments, ref_moments)}
    record["sites"] = {"global": model.global_sites, "local": model.local_sites,
                       "shapes": {name: list(shape) for name, shape in model.latent_sites.items()},
                       "latent_dim": model.latent_dim}
    if len(data.test):
        with phases("held_out"), progress.phase("held-out evidence"):
            record["test"] = held_out_metrics(model, data, config, seed, run_dir, evidence, draws, progress)
    with phases("pointwise_log_lik"), progress.phase("log-likelihood per row"):
        pointwise = pointwise_log_likelihood(model, draws.values, rows)
    save_draws(run_dir, draws, reference, pointwise)
    return record


def held_out_metrics(model, data, config, seed, run_dir, evidence: dict, draws, progress) -> dict:
    r"""The held-out rows' log predictive density :math:`\log p(D_\text{test} \mid D_\text{train})`.

    Guide-independent: :math:`\log p(D) - \log p(D_\text{train})`, both by AIS (the rows of D
    being the train rows followed by the held-out ones). From q, for a model without per-point
    latents: :math:`\log \frac1S \sum_s p(D_\text{test} \mid \theta_s)`, :math:`\theta_s \sim q`,
    the predictive density the fitted guide implies.
    """
    rows = torch.cat([data.train, data.test])
    full = GlobalLatentModel(model.fn, rows, model.spec)
    whole = evidence_state(full, rows, config, seed, run_dir, progress, stream="held_out_evidence")["summary"]
    train = evidence["summary"]
    out = {"num_points": len(data.test), "log_predictive": whole["log_evidence"] - train["log_evidence"],
           "log_predictive_stderr": math.hypot(whole["stderr"], train["stderr"]),
           "log_predictive_method": f"log p(D) - log p(D_train), both by {train.get('method', 'AIS')}"}
    out["log_predictive_per_point"] = out["log_predictive"] / len(data.test)
    if not model.local_sites:
        z = model.pack(draws.values, batch_dims=1)
        with torch.no_grad():
            _, lik_all = full.log_density(z, rows)
            _, lik_train = model.log_density(z, data.train)
        log_w = (lik_all - lik_train).double()
        out["log_predictive_q"] = float(log_mean_exp(log_w))
        out["log_predictive_q_stderr"] = float(log_mean_exp_stderr(log_w))
    return out


def run_bdmc(model, data, config, seed: int, run_dir, progress: bool | Progress = False) -> dict:
    """BDMC on ``--bdmc`` data sets simulated from the model's prior predictive (shared by the study's guides)."""
    return study_cache(run_dir, "bdmc", model, data.train, {**config.evidence_settings().to_dict(),
                                                            "datasets": config.bdmc}, seed,
                       lambda: bdmc_summary(model, data.train, config, seed, progress))["summary"]


def bdmc_summary(model, data, config, seed, progress) -> dict:
    streams.seeded("bdmc", seed)
    summary, datasets = bdmc_evidence(model, data, config.bdmc, config.evidence_settings(), progress=progress)
    return {"summary": summary, "datasets": torch.stack(datasets)}


def evidence_check(metrics: dict) -> dict:
    """Compare q's importance estimate of log p(D) with AIS's: both are lower bounds in expectation."""
    above = metrics["log_px_iwae"] - metrics["log_px"]
    stderr = math.hypot(metrics["log_px_iwae_stderr"], metrics["log_px_stderr"])
    out = {"iwae_above_ais": above, "iwae_above_ais_stderr": stderr}
    method = metrics.get("log_px_method", "ais")
    fix = ("raise --evidence-steps and --evidence-chains, or lower --evidence-stderr" if method == "ais"
           else "raise --iw-samples, or use --log-px auto (AIS)")
    if math.isnan(metrics["log_px_stderr"]):
        out["log_px_warning"] = (f"log p(D) by {method} has no standard error (its weights' tail says their "
                                   f"variance is infinite): it may be far too low, and every gap with it; {fix}")
        return out
    name = "AIS" if method == "ais" else method
    if math.isnan(stderr):  # q's weights have no error bar: above may be an outlier; far below is said as below
        if -above > NO_ERROR_BAR_NATS:
            out["log_px_note"] = (f"q's importance estimate of log p(D) is {-above:.3f} nats below {name}'s, with no "
                                  f"error bar (k-hat {metrics.get('khat_mean', math.nan):.2f}): q is a poor "
                                  f"importance proposal for this posterior; {name}'s value is the one to read")
        return out
    if above > max(DISAGREEMENT * stderr, DISAGREEMENT_NATS):
        out["log_px_warning"] = (f"q's importance estimate of log p(D) is {above:.3f} nats above {name}'s "
                                 f"({above / max(stderr, 1e-12):.0f} standard errors): {name} has not converged "
                                 f"at these settings and the KL gap is overstated by about that much; {fix}")
    elif -above > max(DISAGREEMENT * stderr, DISAGREEMENT_NATS):
        khat = math.nan if metrics.get("khat_mean") is None else metrics["khat_mean"]  # None: too few draws to fit
        why = ("q is a poor importance proposal for this posterior" + (f" (k-hat {khat:.2f})" if khat == khat else ""))
        if khat <= FINITE_VARIANCE_KHAT:  # its own draws look fine: what it lacks lies where they never go
            why = (f"q misses part of the posterior that its own draws cannot show (k-hat {khat:.2f} reads well): "
                   "q is narrower than the posterior in some direction (as a mean-field q is across correlated "
                   "latents), or a mode or a tail lies where q does not reach")
        out["log_px_note"] = (f"q's importance estimate of log p(D) is {-above:.3f} nats below {name}'s: {why}; "
                              f"{name}'s value is the one to read")
    return out


def save_draws(run_dir: Path, draws, reference: dict | None, pointwise: dict | None = None) -> None:
    """q's draws and the reference's, for the marginal figures and the ArviZ export, with the log-likelihood per row
    at q's first draws (``draws.pt`` in the run directory)."""
    state = {"q": draws.values}
    if pointwise:
        state["log_likelihood"] = pointwise
    if reference is not None:
        state["reference"] = reference["values"]
        if reference.get("weights") is not None:
            state["reference_weights"] = reference["weights"]
    save_checkpoint(Path(run_dir) / "draws.pt", state)


@torch.no_grad()
def curve_point(model, guide, data, config, samples: int = 16) -> dict:
    """A cheap point of the training curve: the ELBO of D per data point from a few draws of q."""
    with torch.random.fork_rng():
        draws = guide_draws(model, guide, data.train, samples)
    return {"train_elbo": float(draws.log_w.mean()) / len(data.train)}


def build_for(config, data, guide_name: str):
    """:func:`build_global` on a study's data set (its whole data, ``data.train``)."""
    return build_global(config, data.train, guide_name)


def build_global(config, data: torch.Tensor, guide_name: str, spec_model=None, instances: dict | None = None,
                 modules: dict | None = None):
    """A fresh model with global latents (the program ``config.model``) and the guide ``guide_name`` on ``data``."""
    instances = {} if instances is None else instances
    modules = {} if modules is None else modules
    if spec_model is None:
        program, owner = resolve_program(config.model, "model", data.shape[-1], config.latent_dim, instances, modules)
        model = GlobalLatentModel(program, data, config.model, owner)
    else:
        model = spec_model
    if config.device != "cpu":
        raise UsageError("models with global latents run on the CPU; drop --device")
    refuse_estimator(config.log_px, model, data)
    guide = global_guide(guide_name, model, data, config.flow_depth, instances, modules)
    return model, guide
