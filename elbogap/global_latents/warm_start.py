r"""The seed's mean-field fit, and the families that contain it started from it.

A Gaussian family that contains the mean field (a full-rank or low-rank covariance over the model's flat
unconstrained latent vector) has an optimum at least as good as the mean field's: the diagonal Gaussian
:math:`q_\text{MF}` is one of its members. From Pyro's own start (the prior's median, a small scale) the plateau rule
can still stop such a fit short of it: on a Normal-Gamma model over 12 groups, full rank stopped about 1 nat below
the mean-field optimum on both seeds, each called converged, where a crawl along a narrow valley read as a plateau
(BENCHMARKS.md, "Containing families from the mean-field fit").

So, once per seed, AutoNormal is trained as a run of it trains (until converged; the seeds of one stack as one
stacked program), its ELBO of D taken from the evaluation's precise draws (:func:`mean_field_fits`, kept in
``OUT/shared/`` for every guide's run), and

- a run of a containing family starts at :math:`q_\text{MF}`'s mean (:func:`warm_start`): full rank with the
  covariance of q's expected curvature there, low rank with that covariance's closest member of its family
  (:mod:`~elbogap.global_latents.curvature`), each where it raises the ELBO over the mean field's; otherwise at
  :math:`q_\text{MF}` itself, low rank next to it, with a small random ``cov_factor`` (a tenth of the scale Pyro
  draws it at, from the stream ``warm_start``; at zero its gradient vanishes, a saddle) and the diagonal scaled so
  the marginal variances are the mean field's. Its plateau rule then keeps the start as its first level
  (:attr:`~elbogap.inference.convergence.ConvergeSchedule.keep_start`): a first stage that ends below the start
  returns there at a tenth of the rate, so the fit ends at the better of where it started and where it went;
- the run's record keeps the fit as ``data.mean_field_check``, the floor :func:`~elbogap.global_latents.report.
  mean_field_warnings` holds the family's ELBO to.
"""

import hashlib
from pathlib import Path

import pyro
import torch
from pyro.nn import PyroParam
from pyro.util import get_rng_state, set_rng_state

from elbogap import streams
from elbogap.global_latents.autoguides import MEAN_FIELD, autoguide
from elbogap.global_latents.curvature import MIN_PRECISION, PAIRS, ROUNDING_STEPS, STEP, curvature_start, low_rank_start
from elbogap.global_latents.evaluation import precise_draws, summarize_draws
from elbogap.global_latents.guides import global_guide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.shared import seeds_cache, shared_path, study_cache
from elbogap.global_latents.stacked import flat_posterior, stacker
from elbogap.global_latents.training import converging_trainer
from elbogap.inference.stacking import NotStackable
from elbogap.stopping import StopAsked

#: the low-rank factor's start, as a fraction of Pyro's own random start (zero is a saddle of the ELBO in it)
COV_FACTOR_START = 0.1


def mean_field_settings(config, num_data: int) -> dict:
    """What the seed's mean-field fit depends on, beside the model, the data and the seed: every setting its trainer
    reads (the evaluation's settings only set how precisely its ELBO is told, and do not refit it)."""
    return {"lr": config.lr, "particles": config.particles, "cap": config.total_steps(num_data),
            "schedule": config.schedule, "tol": config.convergence_tol, "objective": config.objective,
            "lr_decay": config.lr_decay, "batch_size": config.batch_size, "stacked_fits": config.stacked_fits,
            "with": "loc and scale"}


def mean_field_fit(model: GlobalLatentModel, data, config, seed: int, run_dir: Path, progress) -> dict:
    """The seed's mean-field fit (:func:`mean_field_fits`)."""
    return mean_field_fits(model, data, config, [seed], [run_dir], progress)[seed]


def mean_field_fits(model: GlobalLatentModel, data, config, seeds, run_dirs, progress,
                    should_stop=lambda: None) -> dict[int, dict]:
    """Per seed, AutoNormal trained on the whole data set as a run of it trains (until converged):
    ``{"check": {family, elbo, elbo_stderr, converged, steps, fits_at_once}, "loc": ..., "scale": ...}``, its q as
    a diagonal Gaussian over the flat unconstrained latent vector and its ELBO of D from the evaluation's precise
    draws.

    Kept in ``OUT/shared/`` (:mod:`~elbogap.global_latents.shared`); the seeds not there yet are trained at once where
    they stack (:func:`train_mean_field`); where ``should_stop()`` answers during their training, none is kept or
    returned. The caller's random state and param store are left as they were."""
    settings = mean_field_settings(config, len(data.train))
    paths = {seed: shared_path(run_dir, "mean_field", model, data.train, settings, seed)
             for seed, run_dir in zip(seeds, run_dirs, strict=True)}
    rng = get_rng_state()
    try:
        with pyro.get_param_store().scope(), progress.phase("mean-field fit"):
            fits = seeds_cache(paths, lambda missing: train_mean_field(model, data, config, missing, should_stop))
    finally:
        set_rng_state(rng)
    return fits


def train_mean_field(model: GlobalLatentModel, data, config, seeds: list[int],
                     should_stop=lambda: None) -> dict[int, dict]:
    """AutoNormal of each seed (initialized from the stream ``mean_field_check``) trained until converged: as one
    stacked program where the fits stack (:func:`~elbogap.global_latents.stacked.stacker`), else one at a time;
    none (an empty dict) where ``should_stop()`` answers during their training."""
    cap = config.total_steps(len(data.train))

    def heard(_) -> None:  # after each step of a fit trained alone
        if signum := should_stop():
            raise StopAsked(signum)

    runs, states = [], []
    for seed in seeds:
        streams.seeded("mean_field_check", seed)
        guide = global_guide(MEAN_FIELD, model, data.train)
        runs.append((model, guide, converging_trainer(config, model, guide, data, seed)))
        states.append(get_rng_state())
    try:
        if len(seeds) < 2:
            raise NotStackable("one seed")
        stack = stacker(config, data, MEAN_FIELD, runs, seeds)
    except NotStackable:
        for (_, _, trainer), state in zip(runs, states, strict=True):
            set_rng_state(state)  # each seed trains on its own stream, whichever seeds are asked for with it
            try:
                trainer.run(cap, heard)
            except StopAsked:
                return {}
        verdicts = [(trainer.convergence(cap)["converged"], trainer.step_count) for _, _, trainer in runs]
        at_once = 1
    else:
        stack.run(should_stop)
        if should_stop():
            return {}
        stack.write_back()
        verdicts = [(stack.verdict(g)["converged"], stack.steps[g]) for g in range(len(seeds))]
        at_once = len(seeds)
    fits = {}
    for seed, (_, guide, _), (converged, steps) in zip(seeds, runs, verdicts, strict=True):
        streams.seeded("mean_field_check", seed)
        summary = summarize_draws(precise_draws(model, guide, data.train, config.iw_samples, config.evidence_stderr),
                                  len(data.train))
        with torch.no_grad():
            q = flat_posterior(guide.auto).base_dist
        fits[seed] = {"check": {"family": MEAN_FIELD, "elbo": summary["elbo"],
                                "elbo_stderr": summary["elbo_stderr"], "converged": converged, "steps": steps,
                                "fits_at_once": at_once},
                      "loc": q.loc.detach().clone(), "scale": q.scale.detach().clone()}
    return fits


def starts_at_mean_field(model: GlobalLatentModel, guide) -> bool:
    """Whether ``guide``'s family starts at the seed's mean-field fit (it contains it), on a model whose posterior does
    not move as it trains."""
    family = autoguide(getattr(guide, "name", ""))
    return family is not None and family.starts_at_mean_field and not model.param_names


def warm_start(config, data, runs: list[tuple], seeds: list[int], run_dirs: list, progress,
               should_stop=lambda: None) -> list[dict | None]:
    """Start each run's guide (``runs``: its model and guide; a family that starts at the mean-field fit,
    :attr:`~elbogap.global_latents.autoguides.Autoguide.starts_at_mean_field`) at its seed's
    mean-field fit (see the module; the seeds' fits trained at once where they are not in ``OUT/shared/`` yet); per
    run, the fit's record, or None where it starts where Pyro starts it (another family, ``--warm-start off``).
    :class:`~elbogap.stopping.StopAsked` where ``should_stop()`` answered while the fits trained: none is kept."""
    if config.warm_start == "off" or not all(starts_at_mean_field(model, guide) for model, guide in runs):
        return [None] * len(runs)
    fits = mean_field_fits(runs[0][0], data, config, seeds, [Path(run_dir) for run_dir in run_dirs], progress,
                           should_stop)
    starts = []
    with progress.phase("start at the mean-field fit"):  # full rank's curvature: 16 d gradients of the log joint
        for (model, guide), seed, run_dir in zip(runs, seeds, run_dirs, strict=True):
            if signum := should_stop():
                raise StopAsked(signum)
            starts.append(start_at(model, data.train, guide, fits[seed], seed, Path(run_dir)))
    return starts


def start_at(model: GlobalLatentModel, rows: torch.Tensor, guide, fit: dict, seed: int,
             run_dir: Path | None = None) -> dict | None:
    """Set ``guide`` (full or low rank) to the mean-field fit ``fit`` (see the module; with the covariance of
    :mod:`~elbogap.global_latents.curvature`, or low rank's closest member of it, where that raises the ELBO on
    ``rows``); its record, or None where its flat vector is not the fit's (a prototype on a subsampled plate): it then
    starts where Pyro starts it. With ``run_dir``, the curvature is kept in the study's ``OUT/shared/``
    (:func:`shared_curvature`): full and low rank of one seed compute it once (16 d gradients of the whole data set's
    log joint: 4.5 s at 1,201 latents on one idle thread, 11 MB), in whichever worker runs first."""
    auto, loc, scale = guide.auto, fit["loc"], fit["scale"]
    if auto.loc.shape != loc.shape:
        return None
    record = {"from": fit["check"]["family"], "elbo": fit["check"]["elbo"], "check": fit["check"]}
    generator = streams.generator("curvature_start", seed)
    shared = None if run_dir is None else shared_curvature(run_dir, model, rows, fit, seed)
    if guide.name == "AutoMultivariateNormal":
        curved = curvature_start(model, rows, loc, scale, generator, shared)
    else:
        curved = low_rank_start(model, rows, loc, scale, auto.cov_factor.shape[-1], generator, shared)
    with torch.no_grad():
        auto.loc.copy_(loc)
        if guide.name == "AutoMultivariateNormal":
            if curved is None:  # Pyro's parametrization: covariance diag(scale) T T^T diag(scale), T unit triangular
                scale_tril, record["covariance"] = torch.diag(scale), "mean field"
            else:
                scale_tril, record["covariance"] = curved["scale_tril"], "expected curvature"
                record.update(elbo_gain=curved["elbo_gain"], elbo_gain_stderr=curved["elbo_gain_stderr"])
            diagonal = scale_tril.diagonal()
            auto.scale = PyroParam(diagonal.clone(), auto.scale_constraint)
            auto.scale_tril = PyroParam(scale_tril / diagonal[:, None], auto.scale_tril_constraint)
        elif curved is not None:  # Pyro's parametrization: covariance diag(scale) (C C^T + I) diag(scale)
            auto.cov_factor.copy_(curved["cov_factor"])
            auto.scale = PyroParam(curved["scale"].clone(), auto.scale_constraint)
            record.update(covariance="expected curvature", rank=auto.cov_factor.shape[-1],
                          elbo_gain=curved["elbo_gain"], elbo_gain_stderr=curved["elbo_gain_stderr"])
        else:  # covariance s (W W^T + I) s: W small, s the mean field's scale shrunk by W's share of the variance
            rank = auto.cov_factor.shape[-1]
            record.update(covariance="mean field", rank=rank)
            factor = torch.randn(auto.cov_factor.shape, generator=streams.generator("warm_start", seed))
            factor *= COV_FACTOR_START / rank ** 0.5  # Pyro draws N(0, 1/rank)
            auto.cov_factor.copy_(factor)
            auto.scale = PyroParam(scale / (1 + factor.pow(2).sum(-1)).sqrt(), auto.scale_constraint)
    return record


def shared_curvature(run_dir: Path, model: GlobalLatentModel, rows: torch.Tensor, fit: dict, seed: int):
    """``shared(compute)`` for :func:`~elbogap.global_latents.curvature.floored_precision`: the curvature at the
    mean-field fit ``fit``, kept in ``OUT/shared/`` under the fit itself (its mean and scale, and their dtype), the
    draws' stream, the curvature's constants, the data, the model and the seed
    (:func:`~elbogap.global_latents.shared.study_cache`)."""
    digest = hashlib.sha256(torch.cat([fit["loc"], fit["scale"]]).double().cpu().numpy().tobytes()).hexdigest()
    settings = {"fit": digest[:16], "dtype": str(fit["loc"].dtype), "stream": streams.seed_for("curvature_start", seed),
                "pairs": PAIRS, "step": STEP, "rounding_steps": ROUNDING_STEPS, "min_precision": MIN_PRECISION}
    return lambda compute: study_cache(run_dir, "curvature", model, rows, settings, seed, compute)
