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
``OUT/shared/`` for every guide's run. Training's ELBO checks (``--schedule converge``) score fixed draws of q
(:func:`elbo_check`).
"""

import fcntl
import hashlib
import io
import json
import math
import os
from pathlib import Path

import pyro
import torch

from elbogap import streams
from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.errors import UsageError
from elbogap.global_latents.elbo import VectorizedModelELBO
from elbogap.global_latents.evaluation import (
    draws_broadcast,
    guide_draws,
    moments,
    plate_nesting,
    pointwise_log_likelihood,
    precise_draws,
    summarize_draws,
)
from elbogap.global_latents.evidence import ais_evidence, bdmc_evidence
from elbogap.global_latents.guides import SUBSAMPLING_AUTOGUIDES, GlobalAutoGuide, GlobalProgramGuide, global_guide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.reference import against_reference, ais_reference, nuts_reference, site_moments
from elbogap.inference.convergence import ConvergenceSettings, ConvergeSchedule
from elbogap.inference.train import Trainer
from elbogap.inference.weights import group_spread_dof, log_mean_exp, log_mean_exp_stderr
from elbogap.phases import Phases
from elbogap.progress import Progress, as_progress

#: how far q's importance estimate of log p(D) may sit above AIS's, in standard errors, before AIS is doubted
DISAGREEMENT = 3.0


def batch_size(config, model: GlobalLatentModel, guide) -> int:
    """Rows per SVI step: minibatches only where the program subsamples its data plate and the guide follows it."""
    follows = isinstance(guide, GlobalProgramGuide) or (isinstance(guide, GlobalAutoGuide)
                                                        and guide.name in SUBSAMPLING_AUTOGUIDES)
    if model.takes_index and (follows or not model.local_sites):
        return min(config.batch_size, model.num_data)
    return model.num_data


def global_trainer(config, model: GlobalLatentModel, guide, data, seed: int, freeze_model: bool, schedule, rule,
                   lr_decay: float, loss_scale: float) -> Trainer:
    """SVI on the whole data set (minibatches only where :func:`batch_size` allows them), rows in their order for a
    program that reads them by position, particles drawn at once where the programs broadcast (else the program
    scored by ``vmap``: :class:`~elbogap.global_latents.elbo.VectorizedModelELBO`)."""
    vectorize, nesting = particle_layout(model, guide, data.train) if config.particles > 1 else (False, 1)
    rows = batch_size(config, model, guide)
    trainer = Trainer(model, guide, data.train, rows, config.lr, config.objective, config.particles, seed,
                      freeze_model=freeze_model, lr_decay=lr_decay, jit=False, shuffle=model.takes_index,
                      schedule=schedule, convergence=rule, loss_scale=loss_scale, vectorize=vectorize,
                      max_plate_nesting=nesting)
    if config.particles > 1 and not vectorize and rows == model.num_data and config.objective == "elbo":
        plate = -(nesting + 1) if getattr(guide, "vectorizable", False) else None  # the guide alone broadcasts
        trainer.svi.loss = VectorizedModelELBO(model, config.particles, plate)  # the program scored by vmap
    return trainer


def particle_layout(model: GlobalLatentModel, guide, data: torch.Tensor) -> tuple[bool, int]:
    """Whether SVI's particles can be drawn at once under a plate (the guide and the program broadcast over it, as
    :func:`~elbogap.global_latents.evaluation.guide_draws` finds out by trying), and how deep the programs' plates
    nest (the particle plate goes left of them)."""
    with torch.random.fork_rng():
        return draws_broadcast(model, guide, data), plate_nesting(model, guide, data)


def study_cache(run_dir: Path, kind: str, model, data: torch.Tensor, settings: dict, seed: int, compute):
    """``compute()``, or what it returned before for the same model parameters, data, settings and seed.

    Kept in ``OUT/shared/KIND-HASH.pt`` beside the study's runs (read with ``weights_only``), so
    the guides of one study share one evidence, one NUTS run, one BDMC. Runs of one seed in other
    worker processes (or Ray tasks on a shared ``--out``) wait on a lock file beside it while the
    first computes, then read its result: the work is done once per seed, not once per worker.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "settings": settings, "seed": seed, "spec": model.spec},
                             sort_keys=True).encode())
    buffer = io.BytesIO()
    torch.save({"data": data.cpu(), "params": {k: v.cpu() for k, v in model.state_dict().items()}}, buffer)
    digest.update(buffer.getvalue())
    path = Path(run_dir).parent.parent / "shared" / f"{kind}-{digest.hexdigest()[:16]}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if path.is_file():
            return load_checkpoint(path)
        value = compute()
        mine = path.with_name(f".{path.name}.{os.getpid()}")
        save_checkpoint(mine, value)
        os.replace(mine, path)
    return value


def evidence_state(model, data, config, seed, run_dir, progress, stream: str = "evidence") -> dict:
    """log p(D) of ``data`` (:func:`~elbogap.global_latents.evidence.ais_evidence`), once per seed, from ``stream``."""
    settings = config.evidence_settings()

    def compute():
        streams.seeded(stream, seed)
        evidence = ais_evidence(model, data, settings, progress=progress)
        return {"summary": evidence.summary(settings), "log_w": evidence.log_w, "states": evidence.states}

    return study_cache(run_dir, "evidence", model, data, {**settings.to_dict(), "stream": stream}, seed, compute)


def reference_state(model, data, config, seed, run_dir, evidence: dict, progress) -> dict | None:
    if config.reference == "none":
        return None
    if config.reference == "ais":
        reference = ais_reference(model, evidence["log_w"], evidence["states"])
        return {"method": "ais", "values": reference.values, "weights": reference.weights,
                "diagnostics": json.dumps(reference.diagnostics)}
    settings = {"chains": config.nuts_chains, "warmup": config.nuts_warmup, "samples": config.nuts_samples}

    def compute():
        reference = nuts_reference(model, data, seed=streams.seed_for("reference", seed), progress=progress,
                                   **settings)
        return {"method": "nuts", "values": reference.values, "diagnostics": json.dumps(reference.diagnostics)}

    return study_cache(run_dir, "nuts", model, data, settings, seed, compute)


#: Pyro's autoguides whose family contains the mean field (a diagonal Gaussian over the flat latent vector): a fit of
#: theirs that ends below a mean-field fit's ELBO of the same data stopped short of its own optimum
CONTAINS_MEAN_FIELD = ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal")


def mean_field_check(model: GlobalLatentModel, data, config, seed: int, run_dir: Path, progress) -> dict:
    """The ELBO of D an AutoNormal fit reaches (trained as a run of it trains, until converged; its ELBO from the
    evaluation's precise draws), once per seed: a floor for the optimum of every family that contains the mean field,
    so that such a family's fit that ends below it is warned even where the study has no AutoNormal of its own."""
    settings = {"lr": config.lr, "particles": config.particles, "steps": config.steps, "schedule": config.schedule,
                "tol": config.convergence_tol, "iw_samples": config.iw_samples, "stderr": config.evidence_stderr}

    def compute():
        streams.seeded("mean_field_check", seed)
        guide = global_guide("auto:AutoNormal", model, data.train)
        cap = config.total_steps(len(data.train))
        rule = ConvergenceSettings(tolerance=config.convergence_tol)
        schedule = ConvergeSchedule(elbo_check(model, guide, data, config), rule) if config.schedule == "converge" \
            else None  # as factory.make_trainer gives a run of a model with global latents
        trainer = global_trainer(config, model, guide, data, seed, False, schedule, rule,
                                 1.0 if schedule is not None else config.lr_decay ** (1 / max(cap, 1)), len(data.train))
        trainer.run(cap)
        summary = summarize_draws(precise_draws(model, guide, data.train, config.iw_samples, config.evidence_stderr),
                                  len(data.train))
        return {"check": {"family": "auto:AutoNormal", "elbo": summary["elbo"], "elbo_stderr": summary["elbo_stderr"],
                          "converged": bool(trainer.convergence(cap)["converged"]), "steps": trainer.step_count}}

    with pyro.get_param_store().scope():  # the run's own guide keeps its parameters
        return study_cache(run_dir, "mean_field", model, data.train, settings, seed, compute)["check"]


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
    metrics["rows"] = data.rows
    with phases("evidence"), progress.phase("evidence"):
        evidence = evidence_state(model, rows, config, seed, run_dir, progress)
    summary = evidence["summary"]
    metrics.update(log_evidence=summary["log_evidence"], log_evidence_stderr=summary["stderr"],
                   log_evidence_dof=group_spread_dof(len(evidence["log_w"])),
                   log_evidence_method="ais", log_evidence_start=summary.get("start", "prior"),
                   log_evidence_guide_independent=True)
    metrics["kl_gap"] = metrics["log_evidence"] - metrics["elbo"]
    metrics["kl_gap_stderr"] = math.hypot(metrics["log_evidence_stderr"], metrics["elbo_stderr"])
    for key in ("elbo", "elbo_stderr", "log_evidence", "kl_gap", "kl_gap_stderr", "log_evidence_q"):
        metrics[f"{key}_per_point"] = metrics[key] / num_data
    metrics.update(evidence_check(metrics))
    if (getattr(guide, "name", None) in CONTAINS_MEAN_FIELD and not model.param_names
            and "auto:AutoNormal" not in config.guides):  # with it, the study compares the two runs itself
        with phases("mean_field_check"), progress.phase("mean-field check"):
            metrics["mean_field_check"] = mean_field_check(model, data, config, seed, run_dir, progress)
    record = {"kind": "global", "data": metrics, "evidence": summary}
    with phases("reference"), progress.phase("reference"):
        reference = reference_state(model, rows, config, seed, run_dir, evidence, progress)
    q_moments = moments(draws.values)
    record["q_moments"] = site_moments(q_moments)
    if reference is not None:
        ref_moments = moments(reference["values"], reference.get("weights"))
        record["reference"] = {"method": reference["method"], **json.loads(reference["diagnostics"]),
                               "moments": site_moments(ref_moments),
                               "sites": against_reference(q_moments, ref_moments)}
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
           "log_predictive_method": "log p(D) - log p(D_train), both by AIS"}
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
    above = metrics["log_evidence_q"] - metrics["log_evidence"]
    stderr = math.hypot(metrics["log_evidence_q_stderr"], metrics["log_evidence_stderr"])
    out = {"q_above_ais": above, "q_above_ais_stderr": stderr}
    if math.isnan(stderr):  # q's weights (or AIS's) have no error bar: no test of one against the other
        return out
    if above > DISAGREEMENT * stderr and above > 0:
        out["evidence_warning"] = (f"q's importance estimate of log p(D) is {above:.3f} nats above AIS "
                                   f"({above / max(stderr, 1e-12):.0f} standard errors): AIS has not converged at "
                                   "these settings and the KL gap is overstated by about that much; raise --ais-steps "
                                   "and --ais-chains")
    elif -above > DISAGREEMENT * stderr:
        out["evidence_note"] = (f"q's importance estimate of log p(D) is {-above:.3f} nats below AIS: q is a poor "
                                "importance proposal for this posterior (see k-hat); AIS's value is the one to read")
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


#: draws of q each ELBO check of ``--schedule converge`` scores: under a plate, or one guide trace each (fewer, as
#: they cost a trace each; the checks share their draws, so their differences are precise either way)
CHECK_DRAWS, CHECK_TRACES = 256, 64


def elbo_check(model, guide, data, config):
    """The ELBO of D in nats from ``CHECK_DRAWS`` draws of q (``CHECK_TRACES`` where they are drawn one trace at a
    time), the same draws at every call (the stream ``convergence_checks``), for ``--schedule converge``."""

    @torch.no_grad()
    def check() -> float:
        with torch.random.fork_rng():
            streams.seeded("convergence_checks", 0)
            count = CHECK_DRAWS if draws_broadcast(model, guide, data.train) else CHECK_TRACES
            return float(guide_draws(model, guide, data.train, count).log_w.double().mean())

    return check


@torch.no_grad()
def curve_point(model, guide, data, config, samples: int = 16) -> dict:
    """A cheap point of the training curve: the ELBO of D per data point from a few draws of q."""
    with torch.random.fork_rng():
        draws = guide_draws(model, guide, data.train, samples)
    return {"data_elbo": float(draws.log_w.mean()) / len(data.train)}


def build_for(config, data, guide_name: str):
    """:func:`build_global` on a study's data set (its whole data, ``data.train``)."""
    return build_global(config, data.train, guide_name)


def build_global(config, data: torch.Tensor, guide_name: str, spec_model=None, instances: dict | None = None,
                 modules: dict | None = None):
    """A fresh model with global latents (the program ``config.model``) and the guide ``guide_name`` on ``data``."""
    from elbogap.user_model import resolve_program

    instances = {} if instances is None else instances
    modules = {} if modules is None else modules
    if spec_model is None:
        program, owner = resolve_program(config.model, "model", data.shape[-1], config.latent_dim, instances, modules)
        model = GlobalLatentModel(program, data, config.model, owner)
    else:
        model = spec_model
    if config.device != "cpu":
        raise UsageError("models with global latents run on the CPU; drop --device")
    guide = global_guide(guide_name, model, data, config.flow_depth, instances, modules)
    return model, guide
