r"""``elbogap calibrate``: each guide fitted to data sets simulated from the model, and where the truth falls in q.

For :math:`m = 1..M` (``--simulations``): latents :math:`\theta^*_m` and a data set :math:`D_m` from the prior
predictive, shaped like the study's data (the model's own program with its observed sites sampled, written back
into the columns they were read from, as BDMC simulates); every guide trained on :math:`D_m` as ``compare`` trains
it (the kind's defaults: until converged), then drawn ``--calibration-draws`` times; per latent element the share of
draws below :math:`\theta^*_m` (:mod:`elbogap.calibration.stats`). Each simulation also records each fit's
ELBO of :math:`D_m` and whether it converged; with ``--calibration-gaps``, :math:`\log p(D_m)` by the study's
evidence estimator (AIS from a fitted reference), BDMC's stochastic upper bound from the chains run back from
:math:`\theta^*_m` (an exact posterior draw of :math:`D_m`), and each fit's KL gap between them. The study's seed
is the first of ``--seeds``; simulation ``m`` draws from the ``simulation`` stream with counter ``m``, and its fits
train from that seed (its evidence from the ``bdmc`` stream of that seed). A model whose latents are per data point
is calibrated against the model each guide trained with instead (:func:`calibrate_per_point`).
"""

import contextlib
import json
import math
import signal
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from elbogap import streams
from elbogap.backends import holds_objects, in_worker, local_jobs, worker_context
from elbogap.backends.processes import keep_watch
from elbogap.calibration.stats import below_shares, interval_coverage, site_summary
from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.config import Config, differences
from elbogap.data import Dataset
from elbogap.errors import UsageError
from elbogap.factory import build, for_data, guide_label, load_dataset, make_trainer, with_kind_guides
from elbogap.failures import ProgramFailed, program_failure
from elbogap.global_latents.evaluation import guide_draws
from elbogap.global_latents.evidence import sandwich
from elbogap.global_latents.stacked import NotStackable, StackedFits, refusal
from elbogap.global_latents.training import batch_size
from elbogap.inference.bdmc import simulate
from elbogap.inference.convergence import ConvergenceSettings
from elbogap.inference.evaluation import sample_latents
from elbogap.progress import redraw_every
from elbogap.protocols import PROTOCOLS
from elbogap.runs import Interrupted, load_run
from elbogap.sites import constrain, latent_sites, split_flat, split_latents
from elbogap.stopping import stop_requests
from elbogap.sweep import buildable_guides, compare, say_left_out
from elbogap.threads import intra_op_threads
from elbogap.versions import versions


def simulated_dataset(model, data: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One data set from the prior predictive, shaped like ``data``; its latents as one flat vector (as the model
    packs them) and per site (flat, in their supports)."""
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        simulated, z = model.simulate(data)
    values, _ = model.unpack(z)
    return simulated, z, {name: value.detach().reshape(-1).double().cpu().numpy() for name, value in values.items()}


def evidence_sandwich(config: Config, simulated: torch.Tensor, z: torch.Tensor, seed: int, name: str) -> dict:
    """log p(D) of one simulated data set by the study's evidence estimator and BDMC's upper bound from its true
    latents ``z`` (:func:`~elbogap.global_latents.evidence.sandwich`)."""
    dataset = Dataset(name, simulated, simulated[:0], kind="global")
    model, _ = build(config, dataset, config.guides[0])
    with torch.random.fork_rng(devices=[]):
        streams.seeded("bdmc", seed)
        return sandwich(model, simulated, z.to(simulated.dtype), config.evidence_settings())


def fit_and_rank(config: Config, simulated: torch.Tensor, truth: dict, guide_name: str, seed: int,
                 name: str) -> dict:
    """Train ``guide_name`` on one simulated data set and rank the truth among its draws (see the module)."""
    dataset = Dataset(name, simulated, simulated[:0], kind="global")
    pyro.clear_param_store()
    streams.seeded("training", seed)
    model, guide = build(config, dataset, guide_name)
    resolved = for_data(config, dataset, guide_name)
    trainer = make_trainer(resolved, model, guide, dataset, seed)
    steps = resolved.total_steps(len(simulated))
    trainer.run(steps)
    draws = guide_draws(model, guide, simulated, config.calibration_draws)
    return fit_record(draws.values, draws.log_w, truth, trainer.convergence(steps), trainer.step_count)


def fit_record(values: dict[str, torch.Tensor], log_w: torch.Tensor, truth: dict, verdict: dict, steps: int,
               **extra) -> dict:
    """One fit's record: per site the share of q's draws ``values`` (``(count, *shape)`` each) below the truth, the
    ELBO of the data set from the draws' log weights and its standard error, and the convergence verdict."""
    shares = {site: below_shares(values[site].detach().reshape(len(log_w), -1).double().cpu().numpy(),
                                 value).tolist() for site, value in truth.items()}
    log_w = log_w.detach().double()
    finite = bool(torch.isfinite(log_w).all())  # a fit that gave up on NaN: no ELBO (results.json holds no NaN)
    record = {"shares": shares, "elbo": float(log_w.mean()) if finite else None,
              "elbo_stderr": float(log_w.std() / math.sqrt(len(log_w))) if finite else None,
              "converged": verdict["converged"], "steps": steps, **extra}
    if not verdict["converged"]:
        record["convergence"] = verdict.get("reason", "")
    return record


#: where a calibration study keeps the traceback of a user's program that raised, in ``--out``
FAILURE_LOG = "calibrate.log"


def simulation_record(config: Config, data: torch.Tensor, base, index: int, seed: int,
                      fitted: dict | None = None) -> dict:
    """Simulation ``index`` (seeded ``seed``): its data set and true latents, every guide fitted and ranked (those in
    ``fitted``, by label, were fitted at once with other simulations' fits: :func:`stacked_fits`), and
    with ``--calibration-gaps`` its evidence sandwich and each fit's gap. A user's program that raises becomes
    :class:`~elbogap.failures.ProgramFailed`, one line naming the program and where, its traceback kept in
    ``FAILURE_LOG`` (it is made here, where the frames are, also in a worker process)."""
    with failures_named(config, f"simulation {index}"):
        return _simulation_record(config, data, base, index, seed, fitted or {})


@contextlib.contextmanager
def failures_named(config: Config, where: str):
    """A user's program that raises inside becomes :class:`~elbogap.failures.ProgramFailed`: one line naming
    ``where``, the program and the place, the traceback appended to ``FAILURE_LOG`` in ``--out``."""
    try:
        yield
    except (UsageError, KeyboardInterrupt, NotStackable):
        raise
    except Exception as error:
        failure = program_failure(error, [config.model, *config.guides])
        if failure is None:
            raise
        details = traceback.format_exc().rstrip()
        with open(Path(config.out) / FAILURE_LOG, "a") as log:
            log.write(f"{where}:\n{details}\n")
        raise ProgramFailed(f"{where}: {failure}; the traceback is in {Path(config.out) / FAILURE_LOG}",
                            details if config.debug else None) from None


def _simulation_record(config: Config, data: torch.Tensor, base, index: int, seed: int, fitted: dict) -> dict:
    simulated, z, truth = simulated_dataset(base, data, seed)
    name = f"simulation {index}"
    fits = {guide_label(guide): fitted.get(guide_label(guide)) or fit_and_rank(config, simulated, truth, guide, seed,
                                                                             name) for guide in config.guides}
    record = {"index": index, "seed": seed, "truth": {site: value.tolist() for site, value in truth.items()},
              "fits": fits}
    if config.calibration_gaps:
        evidence = evidence_sandwich(config, simulated, z, seed, name)
        record["evidence"] = evidence
        for fit in (fit for fit in fits.values() if fit["elbo"] is not None):  # the gap, and its bound from BDMC
            fit["kl_gap"] = evidence["lower"] - fit["elbo"]
            fit["kl_gap_stderr"] = math.hypot(evidence["lower_stderr"], fit["elbo_stderr"])
            fit["kl_gap_upper"] = evidence["upper"] - fit["elbo"]
    return record


#: a worker process's study: its configuration, data and the model the simulations are drawn from
_WORKER: dict = {}


def _start_worker(config: dict, lifeline) -> None:
    in_worker()
    keep_watch(lifeline)  # no simulation outlives its driver
    torch.set_num_threads(1)
    settings = Config(**config)
    data = load_dataset(settings)
    _WORKER.update(config=settings, data=data.train, base=build(settings, data, settings.guides[0])[0])


def _worker_simulation(index: int, seed: int, fitted: dict) -> dict:
    return simulation_record(_WORKER["config"], _WORKER["data"], _WORKER["base"], index, seed, fitted)


def calibration_jobs(config: Config) -> int:
    """Simulations at once: as runs at once (:func:`~elbogap.backends.local_jobs`), at most one per simulation;
    1 where a program is a Python object (it cannot leave this process)."""
    return 1 if holds_objects(config) else min(local_jobs(config, config.simulations), config.simulations)


#: where an interrupted chunk of stacked fits keeps its finished guides' fits and the running stack, in ``--out``
STACKED_CHECKPOINT = "stacked-fits.pt"
#: elements (fits x particles x data) one stack of fits may hold at a step: its chunk of simulations is sized by it
STACK_ELEMENTS = 2**24


def stacked_fits(config: Config, base, chunk: list[tuple[int, int]], guide_name: str, data: torch.Tensor,
                 should_stop, progress: bool, saved: dict | None = None,
                 on_stop: Callable[[dict], None] | None = None, simulations: list | None = None) -> list[dict] | None:
    """Fit ``guide_name`` to the simulations ``chunk`` (``(index, seed)`` each) as one program
    (:class:`~elbogap.global_latents.stacked.StackedFits`), each fit initialized as a lone one (the stream
    ``training`` of its seed) and trained at the family's settings; then rank each truth among its fit's draws.
    The records are :func:`fit_and_rank`'s. None if ``should_stop`` answered, after ``on_stop(state)`` with the
    stack's state, which ``saved`` continues from; :class:`NotStackable` if the program cannot be stacked.
    ``simulations``: the chunk's :func:`simulated_dataset` results, where the caller has them already."""
    simulations = simulations or [simulated_dataset(base, data, seed) for _, seed in chunk]
    dataset = Dataset("simulation", simulations[0][0], simulations[0][0][:0], kind="global")
    resolved = for_data(config, dataset, guide_name)
    guides = []
    for (simulated, _, _), (index, seed) in zip(simulations, chunk, strict=True):  # as fit_and_rank builds a fit
        pyro.clear_param_store()
        streams.seeded("training", seed)
        guides.append(build(config, Dataset(f"simulation {index}", simulated, simulated[:0], kind="global"),
                            guide_name)[1])
    if batch_size(resolved, base, guides[0]) < len(data):
        raise NotStackable("the program subsamples its rows (stacked fits take every row at each step)")
    cap = resolved.total_steps(len(data))
    converge = resolved.schedule == "converge"
    stack = StackedFits(base, guides, torch.stack([simulated for simulated, _, _ in simulations]),
                        [seed for _, seed in chunk], resolved.lr, resolved.particles, cap,
                        ConvergenceSettings(tolerance=resolved.convergence_tol), converge,
                        1.0 if converge else resolved.lr_decay ** (1 / max(cap, 1)))
    if saved is not None:
        stack.load_state_dict(saved)
    with tqdm(desc=f"{guide_label(guide_name)}: {len(chunk)} fits at once", disable=not progress,
              leave=False, mininterval=redraw_every(), maxinterval=max(redraw_every(), 10.0)) as bar:
        stack.run(should_stop, bar)
    if should_stop():
        if on_stop is not None:
            on_stop(stack.state_dict())
        return None
    z, log_w = stack.final_draws(config.calibration_draws)
    values = base.site_values(z)
    return [fit_record({site: value[g] for site, value in values.items()}, log_w[g], truth, stack.verdict(g),
                       stack.steps[g], stacked=True,
                       **({"resumed_at_step": int(saved["steps"][g])} if saved is not None else {}))
            for g, (_, _, truth) in enumerate(simulations)]


def stacked_chunk(config: Config, data: torch.Tensor, least: int = 1) -> int:
    """Simulations per stack: as many as :data:`STACK_ELEMENTS` allows for the widest step, at least ``least`` (the
    worker processes that share what is left of each simulation)."""
    particles = max(for_data(config, Dataset("d", data, data[:0], kind="global"), guide).particles
                    for guide in config.guides)
    return max(least, STACK_ELEMENTS // max(1, particles * data.numel()))


class CalibrationInterrupted(Interrupted):
    """A calibration study stopped on SIGINT or SIGTERM; the simulations done are saved in results.json."""

    def __init__(self, signum: int, done: int, planned: int, out: Path):
        self.signum, self.step, self.run_dir = signum, None, out
        Exception.__init__(self, f"interrupted by {signal.Signals(signum).name} after {done} of {planned} simulations; "
                                 f"{out / 'results.json'} holds them: rerun the same command with --resume to finish")


def resumed(config: Config) -> list[dict]:
    """The simulations a study in ``--out`` already did (with ``--resume``), or a refusal to overwrite it."""
    path = Path(config.out) / "results.json"
    if not path.is_file():
        return []
    if not config.resume:
        raise UsageError(f"{config.out} already holds results; pass --resume to continue that calibration study or "
                         "choose another --out")
    saved = json.loads(path.read_text())
    if saved.get("kind") != "calibration":
        raise UsageError(f"{path} is not a calibration study's; choose another --out")
    changed = [name for name in differences(saved["config"], config.to_dict())
               if name not in ("simulations", "jobs", "stacked_fits")]
    if changed:
        raise UsageError(f"--resume: the study in {config.out} was run with other settings ({', '.join(changed)}); "
                         "rerun with its own settings or choose another --out")
    return [simulation for simulation in saved["simulations"] if simulation["index"] < config.simulations]


def calibrate(config: Config, progress: bool = False, on_simulation: Callable[[dict], None] | None = None) -> dict:
    """Run the calibration study ``config`` describes; returns ``{"config", "versions", "simulations", "summary",
    "planned", "complete", "seconds", "fits_at_once"}``. ``on_simulation(results)`` after each simulation, so partial
    results can be saved; with ``--resume`` the simulations already in ``--out`` are kept and the rest run.

    Each guide's fits of a chunk of simulations train as one program where it can (:func:`stacked_fits`; with
    ``--stacked-fits off``, or where the probe refuses, one at a time, said in one line and in ``fits_at_once``);
    the rest of each simulation (the fits that are not stacked, and with ``--calibration-gaps`` its evidence) runs
    in :func:`calibration_jobs` worker processes. Each simulation is seeded by its index alone, so the results do
    not depend on how many workers, nor on where a study was stopped (a stacked fit, up to floating-point rounding).
    SIGINT or SIGTERM stops it (:class:`CalibrationInterrupted`)."""
    config.validate()
    data = load_dataset(config)
    at_default = config.guides == Config().guides
    config = with_kind_guides(config, data).replace(warm_start="off")  # each fit starts where Pyro starts it
    if not PROTOCOLS[data.kind].whole_data_units:  # its unit is a data point: simulate points, not data sets
        return calibrate_per_point(config, progress, on_simulation)
    config, left_out = buildable_guides(config, data, at_default)  # a bad guide fails before any simulation
    if progress:
        say_left_out(left_out)
    base = build(config, data, config.guides[0])[0]
    done = resumed(config)
    seed, jobs = config.seeds[0], calibration_jobs(config)
    results = {"config": config.to_dict(), "versions": versions(), "kind": "calibration", "seed": seed,
               "guides": [guide_label(name) for name in config.guides], "simulations": [], "workers": jobs,
               "planned": config.simulations, "complete": False, "fits_at_once": {},
               **({"guides_left_out": left_out} if left_out else {}),
               "sites": {name: list(shape) for name, shape in base.latent_sites.items()}}
    finished = {simulation["index"] for simulation in done}
    todo = [(index, streams.seed_for("simulation", seed, index)) for index in range(config.simulations)
            if index not in finished]
    started = time.perf_counter()
    bar = tqdm(total=config.simulations, initial=len(done), desc="simulations", disable=not progress, leave=False,
               mininterval=redraw_every(), maxinterval=max(redraw_every(), 10.0))

    def collect(*records: dict) -> None:
        if records:
            results["simulations"] = sorted([*results["simulations"], *records], key=lambda one: one["index"])
            bar.update(len(records))
        if len(results["simulations"]) >= 2:  # a test needs two simulations
            results["summary"] = summarize(results["simulations"])
        results["complete"] = len(results["simulations"]) == config.simulations
        results["seconds"] = {"simulations": time.perf_counter() - started}
        if on_simulation is not None:
            on_simulation(results)

    results["simulations"] = sorted(done, key=lambda one: one["index"])
    collect()
    out = Path(config.out)
    lone = {name: refusal(config, base, name) for name in config.guides}
    lone = {name: why for name, why in lone.items() if why is not None}
    with stop_requests() as should_stop:
        def stopped():
            if signum := should_stop():
                raise CalibrationInterrupted(signum, len(results["simulations"]), config.simulations, out)

        checkpoint = out / STACKED_CHECKPOINT
        # for --resume: each stacked guide's finished fits by simulation, and the stack that was running
        kept = load_checkpoint(checkpoint) if config.resume and checkpoint.is_file() else {"done": {}}
        remaining = list(todo)
        while remaining:
            size = (stacked_chunk(config, data.train, max(jobs, 1)) if len(lone) < len(config.guides)
                    else len(remaining))
            partial = kept.get("partial") or {}
            if set(partial.get("indices", ())) <= {index for index, _ in remaining} and partial.get("indices"):
                chunk = [item for item in remaining if item[0] in partial["indices"]]  # the stack that was running
            else:
                chunk = remaining[:size]
            remaining = [item for item in remaining if item not in chunk]
            fitted = {index: {} for index, _ in chunk}
            indices = [index for index, _ in chunk]
            simulated = None  # the chunk's data sets and truths, simulated once for every guide that stacks
            for name in [name for name in config.guides if name not in lone]:
                label = guide_label(name)
                done_fits = kept["done"].setdefault(label, {})

                def keep(stack_state, label=label, indices=indices):
                    save_checkpoint(checkpoint, {**kept, "partial": {"guide": label, "indices": indices,
                                                                     "state": stack_state}})

                try:
                    if all(str(index) in done_fits for index in indices):
                        fits = [done_fits[str(index)] for index in indices]
                    else:
                        resume = partial.get("state") if (partial.get("guide"), partial.get("indices")) == (
                            label, indices) else None
                        simulated = simulated or [simulated_dataset(base, data.train, seed) for _, seed in chunk]
                        fits = _stacked(config, base, chunk, name, data.train, should_stop, progress, resume, keep,
                                        simulated)
                except NotStackable as why:
                    lone[name] = str(why)
                    if progress:
                        print(f"{label}: one fit at a time ({why})", file=sys.stderr)
                    continue
                if fits is None:
                    stopped()
                done_fits.update({str(index): fit for index, fit in zip(indices, fits, strict=True)})
                kept.pop("partial", None)
                save_checkpoint(checkpoint, kept)  # a stop in what follows keeps these fits
                results["fits_at_once"][label] = max(len(chunk), results["fits_at_once"].get(label, 0))
                for index, fit in zip(indices, fits, strict=True):
                    fitted[index][label] = fit
            for name, why in lone.items():
                results["fits_at_once"][guide_label(name)] = f"one at a time: {why}"
            items = [(index, simulation_seed, fitted[index]) for index, simulation_seed in chunk]
            rest = jobs > 1 and (lone or config.calibration_gaps)  # work left that a worker would share
            if not rest:
                with intra_op_threads(1):
                    if not lone and not config.calibration_gaps:  # every fit done: the records are saved at once
                        collect(*[simulation_record(config, data.train, base, *item) for item in items])
                    for index, simulation_seed, done_fits in items if lone or config.calibration_gaps else ():
                        stopped()
                        collect(simulation_record(config, data.train, base, index, simulation_seed, done_fits))
            else:
                context = worker_context()
                lifeline, keeper = context.Pipe(duplex=False)  # the workers read; only this process writes
                pool = ProcessPoolExecutor(min(jobs, len(items)), mp_context=context,
                                           initializer=_start_worker, initargs=(config.to_dict(), lifeline))
                try:
                    pending = {pool.submit(_worker_simulation, *item) for item in items}
                    while pending:
                        stopped()
                        ready, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                        for future in ready:
                            try:
                                record = future.result()
                            except BrokenProcessPool:  # killed by a stop that reached the workers first: a stop
                                for _ in range(10):  # the driver's own signal may land a moment later
                                    stopped()
                                    time.sleep(0.1)
                                raise
                            collect(record)
                finally:  # the workers end with the study, whether it finished, failed or was stopped
                    lifeline.close()
                    keeper.close()
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.terminate()
                    pool.shutdown(wait=False, cancel_futures=True)
    checkpoint.unlink(missing_ok=True)  # every simulation is in results.json now
    bar.close()
    return results


def _stacked(config, base, chunk, name, data, should_stop, progress, saved, on_stop, simulations):
    """:func:`stacked_fits`, a user's program that raises turned into one line (:func:`failures_named`)."""
    with failures_named(config, f"simulation {chunk[0][0]} (with {len(chunk) - 1} others fitted at once)"):
        return stacked_fits(config, base, chunk, name, data, should_stop, progress, saved, on_stop, simulations)


def summarize(simulations: list[dict]) -> dict:
    """Per guide: per latent site the SBC and VSBC tests (:func:`~elbogap.calibration.stats.site_summary`), the
    central 90% interval's coverage over every element and simulation, and the fits' convergence."""
    summary = {}
    for guide in simulations[0]["fits"]:
        fits = [simulation["fits"][guide] for simulation in simulations]
        sites = {site: np.array([fit["shares"][site] for fit in fits]) for site in fits[0]["shares"]}
        coverage, coverage_stderr = interval_coverage(np.concatenate(list(sites.values()), 1))
        summary[guide] = {"sites": {site: site_summary(shares) for site, shares in sites.items()},
                          "coverage_90": coverage, "coverage_90_stderr": coverage_stderr,
                          "converged": sum(fit["converged"] is True for fit in fits), "fits": len(fits),
                          "mean_elbo": None if any(fit["elbo"] is None for fit in fits) else
                          float(np.mean([fit["elbo"] for fit in fits]))}
        gapped = [fit for fit in fits if "kl_gap" in fit]  # --calibration-gaps: fits with an ELBO have a gap
        if len(gapped) >= 2:
            gaps = np.array([fit["kl_gap"] for fit in gapped])
            summary[guide].update(mean_kl_gap=float(gaps.mean()), mean_kl_gap_stderr=float(
                gaps.std(ddof=1) / math.sqrt(len(gaps))), median_kl_gap=float(np.median(gaps)),
                mean_kl_gap_upper=float(np.mean([fit["kl_gap_upper"] for fit in gapped])), gap_fits=len(gapped))
    return summary


def per_site(flat: np.ndarray, sizes: dict[str, torch.Size]) -> dict[str, list]:
    """One point's flat latent vector (or its shares) cut into the model's latent sites (:func:`split_flat`), each
    kept flat: ``sizes`` maps each site to ``(its number of elements,)``, in the flat vector's order."""
    return {name: piece.tolist() for name, piece in split_flat(sizes, torch.from_numpy(flat)).items()}


def in_supports(model, z: torch.Tensor) -> torch.Tensor:
    """Flat latents ``(..., latent_dim)`` on the real line as each site's values in its support, joined flat: a
    simplex site's K proportions, not the K - 1 numbers it is fitted in (the study with global latents ranks its
    sites' values in their supports too)."""
    values, _ = constrain(model, split_latents(model, z))
    return torch.cat([values[name].reshape(*z.shape[:-1], -1) for name in latent_sites(model)], -1)


def calibrate_per_point(config: Config, progress: bool = False,
                        on_simulation: Callable[[dict], None] | None = None) -> dict:
    r"""Calibration of an amortized q with the model it was trained with held fixed (a VAE, a per-point program).

    Each guide trains once as ``compare`` trains it (the first of ``--seeds``; its run directory under ``--out``),
    then its own trained model simulates ``--simulations`` points :math:`z^*_m \sim p(z)`,
    :math:`x_m \sim p(x \mid z^*_m)` (the ``simulation`` stream), and the trained encoder's
    :math:`q(z \mid x_m)` is drawn ``--calibration-draws`` times per point: no refit is needed, the encoder applies
    to any x. Per latent dimension (on the real line, where sites are constrained) u is the share of draws below
    :math:`z^*_m`, tested per latent site of the model as for global latents. Each simulated point is one
    simulation."""
    if config.calibration_gaps:
        raise UsageError("--calibration-gaps applies to models with global latents; for a model with per-point "
                         "latents, elbogap compare reports log p(x) and each guide's gap")
    seed = config.seeds[0]
    started = time.perf_counter()
    trained = compare(config.replace(seeds=[seed], figures=False), config.out, progress=progress)
    results = {"config": config.to_dict(), "versions": versions(), "kind": "calibration", "seed": seed,
               "latents": "per point", "guides": [guide_label(name) for name in config.guides], "simulations": [],
               "runs": [{key: run[key] for key in ("guide", "seed", "converged", "convergence", "run_dir")
                         if key in run} for run in trained["runs"]]}
    fits: dict[str, dict] = {}
    sizes: dict[str, torch.Size] = {}
    for run in trained["runs"]:
        if "failed" in run:
            raise UsageError(f"the guide {run['guide']} failed to train, so it cannot be calibrated: {run['failed']}")
        _, data, model, guide, _ = load_run(Path(config.out) / run["run_dir"])
        sizes = {name: torch.Size([math.prod(shape)]) for name, shape in latent_sites(model).items()}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            streams.seeded("simulation", seed)
            x, truth = simulate(model, data.test[:1] if len(data.test) else data.train[:1], config.simulations)
            draws = in_supports(model, sample_latents(model, guide, x, config.calibration_draws))
            truth = in_supports(model, truth)
        shares = below_shares(draws.double().cpu().numpy().reshape(len(draws), -1),
                              truth.double().cpu().numpy().reshape(-1)).reshape(config.simulations, -1)
        fits[run["guide"]] = {"shares": shares, "truth": truth.double().cpu().numpy().reshape(config.simulations, -1),
                              "converged": run.get("converged")}
    for index in range(config.simulations):
        results["simulations"].append({"index": index, "fits": {
            guide: {"shares": per_site(fit["shares"][index], sizes), "truth": per_site(fit["truth"][index], sizes),
                    "elbo": None, "converged": fit["converged"]} for guide, fit in fits.items()}})
    results["summary"] = summarize(results["simulations"])
    results.update(planned=config.simulations, complete=True,
                   seconds={"simulations": time.perf_counter() - started})
    if on_simulation is not None:
        on_simulation(results)
    return results
