"""One run's lifecycle: train a model with one guide and seed into a run directory, with checkpoints
and resume, have its protocol evaluate it (:mod:`elbogap.protocols`), save it, reload it.

The objects come from :mod:`elbogap.factory`; stop requests from whoever owns the process's
signals (:mod:`elbogap.stopping`). A run directory holds ``checkpoint.pt`` (model, guide,
optimizer and RNG state, the resolved configuration), ``run.json`` (metrics, curves, configuration,
versions) and ``train.log``.
"""

import json
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pyro
import torch

from elbogap import streams
from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.config import Config, differences, evaluation_changes
from elbogap.data import Dataset
from elbogap.describe import describe_model, model_text
from elbogap.errors import UsageError
from elbogap.factory import build, for_data, guide_label, load_dataset, make_trainer, warm_start
from elbogap.inference import Trainer
from elbogap.phases import Phases
from elbogap.points import POINTS, save_points
from elbogap.progress import Bars, Progress
from elbogap.protocols import PROTOCOLS, protocol_for
from elbogap.records import upgraded_run
from elbogap.stopping import ShouldStop, StopAsked, no_stop_requests
from elbogap.summary import log_fields
from elbogap.threads import intra_op_threads
from elbogap.versions import versions
from elbogap.where import where_am_i

CHECKPOINT, RUN_JSON, LOG = "checkpoint.pt", "run.json", "train.log"


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint of the last completed step (``step`` None: a
    stack of runs, or a run stopped before its first step, with nothing saved)."""

    def __init__(self, signum: int, step: int | None, run_dir: Path):
        self.signum, self.step, self.run_dir = signum, step, run_dir
        if step is None:  # a stack's runs, or a run stopped before its first step (which --resume starts afresh)
            super().__init__(f"interrupted by {signal.Signals(signum).name}: rerun the same command with --resume to "
                             f"continue; runs go on from their checkpoints under {run_dir.parent}, a run without one "
                             "starts afresh")
            return
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; the checkpoint in "
                         f"{run_dir} holds it: rerun the same command with --resume to continue")


class NumericalFault(Exception):
    """The loss or a parameter became NaN or infinite; the last good checkpoint is left as it was."""


def parameters_finite(params) -> bool:
    """Whether every tensor the run's optimizer updates is finite."""
    return all(bool(torch.isfinite(value).all()) for value in params)


def training_curve(losses: list[float], points: int = 100) -> list[list[float]]:
    """``[step, mean ELBO over the preceding window]`` at about ``points`` places."""
    window = max(1, len(losses) // points)
    return [[end, -sum(losses[end - window:end]) / window]
            for end in range(window, len(losses) + 1, window)]


class RunLog:
    """A plain-text log of one run, appended to as it goes."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, message: str) -> None:
        with self.path.open("a") as stream:
            stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run_one(config: Config, data: Dataset, guide_name: str, seed: int, run_dir: str | Path,
            progress: bool | Progress = False, fixed_model: str | Path | None = None, where: dict | None = None,
            stops: Callable[[], AbstractContextManager[ShouldStop]] = no_stop_requests) -> dict:
    """Train the model jointly with one guide from ``seed``, save it, and evaluate both splits.

    With ``fixed_model`` (a run directory), the model is that run's trained model, held fixed:
    only the guide is fitted, so log p(x) is the same for every guide and every ELBO difference
    is a KL difference.

    Returns the run's record: guide, seed, the metrics of :func:`~elbogap.inference.evaluate`
    for ``"train"`` and ``"test"``, ``train_seconds`` (the SVI steps alone), the running ELBO
    (``curve``), the periodic evaluations (``curve_eval``) and ``where`` it ran (backend, host, pid).

    ``stops`` is the context in which stop requests are heard while the run trains
    (:func:`~elbogap.stopping.stop_requests` for SIGINT and SIGTERM); it yields ``should_stop()``,
    asked after every step: on a request the run checkpoints and raises :class:`Interrupted`.

    ``progress`` tells how far the run is, phase by phase: tqdm bars here, each titled with the
    guide and seed (True), or any :class:`~elbogap.progress.Progress`.

    The run trains and evaluates on the intra-op threads its kind of study asks for
    (:attr:`~elbogap.protocols.Protocol.threads`).
    """
    if not isinstance(progress, Progress):
        progress = Bars(progress, run=f"{guide_label(guide_name)}-seed{seed}")
    with intra_op_threads(PROTOCOLS[data.kind].threads):
        return _run(config, data, guide_name, seed, run_dir, progress, fixed_model, where, stops)


def _run(config, data, guide_name, seed, run_dir, progress, fixed_model, where, stops) -> dict:
    config = for_data(config, data, guide_name)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / LOG)
    with progress.phase("setting up"):
        pyro.clear_param_store()
        streams.seeded("training", seed)
        model, guide = build(config, data, guide_name)
        protocol = protocol_for(model)
        described = describe_model(model, config)
        if fixed_model is not None:
            with torch.no_grad():
                model.load_state_dict(load_checkpoint(Path(fixed_model) / CHECKPOINT)["trainer"]["model"])
        num_data = len(data.train)
        steps = config.total_steps(num_data)
        # a saved run (refused here, before any work, where its settings differ) goes on from its checkpoint, which
        # says where it started; a new one starts where its kind starts it
        state = resumable_state(run_dir, config, guide_name, seed) if (run_dir / CHECKPOINT).exists() else None
        begun = time.perf_counter()
        if state is not None or fixed_model is not None:
            started = state.get("warm_start") if state is not None else None
        else:
            with stops() as should_stop:  # the start's own fit (a seed's mean-field fit) hears stop requests too
                try:
                    started = warm_start(config, data, [(model, guide)], [seed], [run_dir], progress, should_stop)[0]
                except StopAsked as stop:
                    log.write("interrupted while the run's start was fitted, before its first step")
                    raise Interrupted(stop.signum, None, run_dir) from None
        warm_seconds = time.perf_counter() - begun
        trainer = make_trainer(config, model, guide, data, seed, freeze_model=fixed_model is not None,
                               keep_start=started is not None)
    eval_every = config.eval_every or max(1, steps // 10)
    stacked = None  # trained with other seeds at once: how many, from the checkpoint the study wrote
    curve_eval: list[dict] = []
    # training's phases add up over every session of the run
    phases = Phases({"train": 0.0, **({"mean_field_fit": warm_seconds} if started else {})})
    if state is not None:
        if state["complete"] and (run_dir / RUN_JSON).is_file():
            saved = json.loads((run_dir / RUN_JSON).read_text())
            changed = evaluation_changes(saved["config"], config.to_dict())
            if not changed:
                return upgraded_run(saved["run"])
            log.write(f"re-evaluate the trained run: evaluation settings changed ({', '.join(changed)})")
        trainer.load_state_dict(state["trainer"])
        stacked = state.get("stacked")
        curve_eval = json.loads(state["curve_eval"])
        phases = Phases(json.loads(state.get("phases", '{"train": 0.0}')))
        log.write(f"resume at step {trainer.step_count}")
    else:
        settings = config.replace(guide=guide_name, seed=seed).to_dict()  # the run's own, not the study's defaults
        log.write(f"start guide={guide_name} seed={seed} steps={steps} config={json.dumps(settings)}")
        log.write(f"model {model_text(described)}")

    def save(complete: bool) -> None:
        with phases("checkpoints"):
            phases.seconds["train"] = trainer.seconds
            save_run_checkpoint(run_dir, config, guide_name, seed, trainer, complete, curve_eval, phases.seconds,
                                stacked, started, second if complete else None)

    def fault(step: int) -> NumericalFault:
        message = (f"guide {guide_name}, seed {seed}: the loss or a parameter became NaN/inf at step {step}; "
                   "likely cause: a learning rate too high for this model and data (try a smaller --lr, "
                   f"--lr-decay or --kl-warmup) or extreme data values; the last good checkpoint in {run_dir} "
                   "is intact")
        log.write(message)
        return NumericalFault(message)

    def after_step(trainer: Trainer) -> None:
        step = trainer.step_count
        if trainer.losses and not math.isfinite(trainer.losses[-1]) or not parameters_finite(trainer.svi.params):
            raise fault(step)
        if signum := should_stop():
            save(complete=False)
            log.write(f"interrupted after step {step}")
            raise Interrupted(signum, step, run_dir)
        if trainer.checks_window_at(step, steps):
            with phases("curve_evaluations"):
                trainer.check_window(steps)
        if step % eval_every == 0 or step == steps:
            with phases("curve_evaluations"), progress.phase("curve evaluation"):
                point = {"step": step, **protocol.curve_point(model, guide, data, config)}
            curve_eval.append({**point, **measure_snr(trainer, config.snr_draws, phases, progress)})
            log.write(f"step {step} " + " ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4f}"
                                                 for k, v in curve_eval[-1].items() if k != "step"))
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save(complete=False)

    with stops() as should_stop:
        try:
            fit = trainer.run(steps, after_step, progress,
                              desc="training (until converged)" if trainer.schedule is not None else "training")
        except ValueError as error:  # a distribution refusing NaN parameters inside the step
            if parameters_finite(trainer.svi.params) and "nan" not in str(error).lower():
                raise
            raise fault(trainer.step_count + 1) from None

        def heard(_) -> None:  # stop requests during a second fit: the run's own fit is checkpointed, unfinished
            if signum := should_stop():
                save(complete=False)
                log.write(f"interrupted while training from a second start, after step {trainer.step_count}")
                raise Interrupted(signum, trainer.step_count, run_dir)

        if state is not None and state["complete"]:
            second = state.get("second_start")
        elif protocol.second_start is not None:
            second = protocol.second_start(config, data, model, guide, trainer, seed, run_dir, progress, heard)
            if second:
                phases.add("second_start", second["seconds"])
                log.write(f"trained again from the {second['starts'][1]}: ELBO {second['elbo'][1]:.4f} against "
                          f"{second['elbo'][0]:.4f} from {second['starts'][0]}; kept {second['kept']}")
        else:
            second = None
    save(complete=True)
    convergence = second["convergence"] if second else trainer.convergence(steps)
    log.write(f"converged={convergence['converged']} ({convergence['rule']} rule)"
              + (f": {convergence['reason']}" if convergence.get("reason") else ""))
    steps = trainer.step_count
    last = curve_eval[-1] if curve_eval and curve_eval[-1]["step"] == steps else {}
    # measured at the last point of the curve, after the last step; else (no step, or a checkpoint from before) now
    snr = snr_record(last) if "snr_draws" in last else measure_snr(trainer, config.snr_draws, phases, progress)
    metrics = protocol.evaluate(model, guide, data, config, seed, phases, progress, run_dir=run_dir)
    save_points(run_dir / POINTS, metrics)
    if config.bdmc:
        with phases("bdmc"), progress.phase("BDMC"):
            metrics["bdmc"] = protocol.bdmc(model, data, config, seed, run_dir, progress)
        log.write("bdmc " + " ".join(f"{k}={metrics['bdmc'][k]:.4f}" for k in ("lower", "upper", "width")))
    log.write(f"seconds {phases.line()}")
    log.write(f"final {final_line(metrics)}")
    run = {"guide": guide_label(guide_name), "guide_spec": guide_name, "seed": seed, "model": described, **metrics,
           "converged": convergence["converged"], "convergence": convergence, "lr": config.lr,
           "particles": config.particles, "train_seconds": fit.seconds, "seconds": phases.seconds, "steps": steps,
           "compiled_loss": trainer.svi.compiled and not stacked,  # a stack's steps are its own program
           **snr, **({"stacked_seeds": stacked} if stacked else {}),
           **({"warm_start": {key: value for key, value in started.items() if key != "check"}} if started else {}),
           **({"second_start": {key: value for key, value in second.items() if key != "convergence"}}
              if second else {}),
           "curve": training_curve(fit.losses), "curve_eval": curve_eval,
           "model_from": None if fixed_model is None else str(fixed_model),
           "where": where or where_am_i("local")}
    record = {"config": config.to_dict(), "versions": versions(), "run": run}
    write_atomically(run_dir / RUN_JSON, json.dumps(record, indent=2))
    return run


def measure_snr(trainer: Trainer, draws: int, phases: Phases, progress: Progress) -> dict:
    """The training gradient's signal-to-noise now (:meth:`~elbogap.inference.Trainer.gradient_snr`) as a run
    records it: ``snr_GROUP`` (median over entries), ``snr_GROUP_mean`` and ``snr_GROUP_entries`` per group
    (encoder, decoder), ``snr_draws`` and ``snr_batch_size``; nothing where ``draws`` is 0 or nothing is fitted."""
    if not draws:
        return {}
    with phases("gradient_snr"), progress.phase("gradient SNR"):
        groups = trainer.gradient_snr(draws)
    return snr_fields(groups, draws, trainer.batch_size)


def snr_fields(groups: dict, draws: int, batch_size: int) -> dict:
    """The record of :func:`measure_snr` from each group's :class:`~elbogap.inference.snr.GroupSNR`."""
    record = {}
    for name, snr in groups.items():
        record.update({f"snr_{name}": snr.median, f"snr_{name}_mean": snr.mean, f"snr_{name}_entries": snr.entries})
    return {**record, "snr_draws": draws, "snr_batch_size": batch_size} if record else {}


def snr_record(point: dict) -> dict:
    """A run's final signal-to-noise numbers, read from its last point of the curve (measured there)."""
    return {key: value for key, value in point.items() if key.startswith("snr_")}


def final_line(metrics: dict) -> str:
    """The run's last numbers as ``split_key=value``: per split, log p(x), the ELBO on its points and the KL gap
    (on ``log_px_points``) before the whole split's ELBO and IWAE (on ``num_points``) and the gap split."""
    fields = {}
    for split in ("train", "test"):
        if split in metrics:
            fields.update({f"{split}_{key}": value for key, value in log_fields(metrics[split]).items()})
    return " ".join(f"{key}={value}" if isinstance(value, int) else f"{key}={value:.4f}"
                    for key, value in fields.items())


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a run stopped mid-write never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_run_checkpoint(run_dir: Path, config: Config, guide_name: str, seed: int, trainer: Trainer, complete: bool,
                        curve_eval: list | None = None, phases: dict | None = None, stacked: int | None = None,
                        started: dict | None = None, second: dict | None = None) -> None:
    """A run's ``checkpoint.pt``: its configuration, trainer state, curve and phases (``stacked``: the number of seeds
    it was trained with at once, by the study, before the run resumed it; ``started``: the fit it started from, the
    record :func:`~elbogap.factory.warm_start` gave; ``second``: the record of a second start, kept in the finished
    run's checkpoint)."""
    save_checkpoint(Path(run_dir) / CHECKPOINT, {
        "config": json.dumps(config.to_dict()), "guide_name": guide_name, "seed": seed, "complete": complete,
        "trainer": trainer.state_dict(), "curve_eval": json.dumps(curve_eval or []),
        "phases": json.dumps(phases or {"train": trainer.seconds}), **({"stacked": stacked} if stacked else {}),
        **({"warm_start": started} if started else {}), **({"second_start": second} if second else {}),
    })


def resumable_state(run_dir: Path, config: Config, guide_name: str, seed: int) -> dict:
    """The checkpoint in ``run_dir``, if ``--resume`` was given (or the study trained it with other seeds at once,
    :mod:`elbogap.seeds`) and it belongs to this configuration."""
    state = load_checkpoint(run_dir / CHECKPOINT)
    if not config.resume and not (state.get("stacked") and not state["complete"]):
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    changed = differences(json.loads(state["config"]), config.to_dict())
    if state["guide_name"] != guide_name or state["seed"] != seed:
        changed = ["guide/seed", *changed]
    if changed:
        raise UsageError(f"{run_dir} holds a checkpoint from another configuration (it differs in "
                         f"{', '.join(changed)}); resume with the same settings or choose another --out")
    return state


def load_run(run_dir: str | Path, device: str | None = None, data: Dataset | None = None):
    """Rebuild a saved run: ``(config, data, model, guide, checkpoint)``, on ``device`` (default: the run's).

    ``data``, the run's data set already loaded (another run of the same study), saves loading it again.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist; give one written by elbogap train, or a run "
                         "of a study, OUT/runs/GUIDE-seedN, that elbogap compare wrote")
    state = load_checkpoint(run_dir / CHECKPOINT)
    config = Config(**json.loads(state["config"]))
    config = config if device is None else config.replace(device=device)
    data = data if data is not None else load_dataset(config)
    pyro.clear_param_store()
    model, guide = build(config, data, state["guide_name"])
    try:
        with torch.no_grad():
            model.load_state_dict(state["trainer"]["model"])
            guide.load_state_dict(state["trainer"]["guide"])
    except RuntimeError as error:
        raise UsageError(f"the checkpoint in {run_dir} does not match its configuration: "
                         f"{str(error).splitlines()[0]}") from None
    return config, data, model, guide, state
