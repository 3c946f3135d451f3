"""The main job: every guide with every seed, on whichever backend; both splits evaluated.

One loop for every backend (:mod:`elbogap.backends`): fixed-model reference runs first, then
the runs, each saved as it finishes; the ``--on-nan`` policy; SIGINT/SIGTERM stop the runs with
checkpoints, and ``--resume`` continues them on any backend.
"""

import importlib.util
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from elbogap.backends import Outcome, RunTask, open_backend
from elbogap.board import Board
from elbogap.config import Config, to_toml
from elbogap.data import flattened_points
from elbogap.errors import UsageError
from elbogap.export import export_study
from elbogap.factory import (
    build,
    check_gradient,
    check_rows,
    for_data,
    guide_label,
    left_out_by_size,
    load_dataset,
    with_kind_guides,
)
from elbogap.failures import ProgramFailed
from elbogap.records import of_whole_data_set
from elbogap.report import write_results
from elbogap.runs import LOG, Interrupted, NumericalFault
from elbogap.seeds import merge_outcomes, pending_stacks
from elbogap.stopping import stop_requests
from elbogap.summary import split_line
from elbogap.user_model import is_user_model
from elbogap.versions import versions

#: seconds the driver waits for a report before it looks at signals and failures again
POLL = 0.2


class RunFailed(Exception):
    """A run raised an error that is not a usage mistake or a numerical fault: a bug, here or in a program."""


def run_name(guide: str, seed: int) -> str:
    """``GUIDE-seedSEED``; a user's guide program is named by its file stem and name (``my_vae.VAE``)."""
    return f"{guide_label(guide)}-seed{seed}"


def skipped_run(guide_name: str, seed: int, fault: str) -> dict:
    """The record of a run stopped by a NaN fault under ``--on-nan skip``, said on stderr."""
    print(f"elbogap: skipped {fault}", file=sys.stderr)
    return {"guide": guide_label(guide_name), "guide_spec": guide_name, "seed": seed, "failed": fault}


def buildable_guides(config: Config, data, at_default: bool) -> tuple[Config, dict[str, str]]:
    """``config`` once every guide of it is built for its model and checked against ``--gradient``, before any
    training (a bad one fails the study now, not in the middle). Where ``--guides`` was left at its default
    (``at_default``), a family the model or the settings refuse (an autoregressive flow on a one-dimensional latent,
    a flow without an inverse under ``--gradient stl``) is left out instead, with why, unless every one is, and so is a
    family the model's size prices out (``Protocol.left_out_by_size``: the IAF above 1,000 global latents); a family
    the user named is refused as any bad input is, or runs."""
    left_out, built = {}, None  # the model of a family built so far: what decides a family's size before building
    for name in config.guides:
        if at_default and built is not None and (why := left_out_by_size(data, built, name)):
            left_out[name] = why  # not built: Pyro's IAF for 10,000 latents would hold 900 million weights
            continue
        try:
            model, guide = build(config, data, name)
            check_gradient(for_data(config, data, name), data, guide, model)
        except UsageError as refusal:
            if not at_default:
                raise
            left_out[name] = str(refusal)
            continue
        built = model
        if at_default and (why := left_out_by_size(data, model, name)):
            left_out[name] = why
    if len(left_out) == len(config.guides):
        raise UsageError(next(iter(left_out.values())))
    return config.replace(guides=[name for name in config.guides if name not in left_out]), left_out


def say_left_out(left_out: dict[str, str]) -> None:
    """One line on stderr for each default family :func:`buildable_guides` left out, with why."""
    for name, why in left_out.items():
        print(f"elbogap: {name} is left out of the default guides: {why}", file=sys.stderr)


def size_notices(config: Config, data) -> list[str]:
    """A line for each of ``--train-size`` and ``--test-size`` that asks for more rows than its split has (a tester's
    ``--test-size 1000`` on a 100-row split was used as 100 without a word)."""
    asked = [("--train-size", config.train_size, "training", data.train),
             ("--test-size", config.test_size, "test", data.test)]
    return [f"{flag} {size} is more than the {name} split's {len(rows)} rows: all {len(rows)} are used"
            for flag, size, name, rows in asked if size is not None and rows is not None and size > len(rows)]


def check_earlier_study(config: Config, out: Path) -> None:
    """Refuse in one line to write over the records of a study already in ``out``: without ``--resume``, or with
    other guides or seeds (each run's own settings are checked against its checkpoint, :func:`~elbogap.runs.
    resumable_state`). A tester's ``--resume`` with one guide of three rewrote the study's results.json and
    config.toml with that guide's run alone."""
    path = out / "results.json"
    if not path.is_file():
        return
    if not config.resume:
        raise UsageError(f"{out} already holds a study's results; pass --resume to continue it or choose another --out")
    saved = json.loads(path.read_text()).get("config", {})
    changed = [name for name in ("guides", "seeds") if saved.get(name) != getattr(config, name)]
    if changed:
        held = ", ".join(f"{name} {saved.get(name)}" for name in changed)
        raise UsageError(f"--resume: the study in {out} has {held}; resume it with the same "
                         f"{' and '.join(f'--{name}' for name in changed)} or choose another --out")


def compare(config: Config, out: str | Path | None = None, progress: bool = False,
            on_run: Callable[[dict], None] | None = None) -> dict:
    """Run every guide with every seed on one data set and model.

    Each run is saved as a run directory ``out/runs/GUIDE-seedSEED``. Returns
    ``{"config", "versions", "runs"}``; each run holds its guide, seed, the metrics of
    :func:`~elbogap.inference.evaluate` for ``"train"`` and ``"test"``, ``train_seconds`` (the
    SVI steps alone), its curves and where it ran. Runs are listed by guide, then seed, however
    they finish. ``on_run(results)`` is called after every run, so partial results can be saved.
    """
    config.validate()
    out = Path(out if out is not None else config.out)
    flattened = flattened_points(config.data) if is_user_model(config.model) else None
    try:
        data = load_dataset(config)
        check_rows(config, data)
    except UsageError as error:  # a program that met the rows: say what they are in the same line
        raise UsageError(f"{error}; note: {flattened}" if flattened else str(error)) from None
    notices = size_notices(config, data) + ([flattened] if flattened else [])  # said once the input passed
    config, left_out = buildable_guides(with_kind_guides(config, data), data, config.guides == Config().guides)
    if progress:
        say_left_out(left_out)
    # each run resolves the settings left unset for its own family (runs.run_one); the record shows the kind's
    unresolved, config = config, for_data(config, data)
    results = {"config": config.to_dict(), "versions": versions(), "runs": [],
               **({"guides_left_out": left_out} if left_out else {})}
    references = {}
    if config.mode == "fixed-model":  # one model per seed, trained with the reference guide, then frozen
        model, guide = build(config, data, config.reference_guide)
        check_gradient(config, data, guide, model)
        references = {seed: out / "runs" / f"reference-{config.reference_guide}-seed{seed}" for seed in config.seeds}
    check_earlier_study(config, out)
    for notice in notices:
        print(f"elbogap: {notice}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)  # the input passed its checks: from here on the study writes into out
    backend = open_backend(unresolved, out, progress)
    begun = time.perf_counter()
    results["seconds"] = {"runs": 0.0}
    results["workers"] = backend.concurrent_runs
    # where several runs execute at once, the driver shows each one's phase (a lone run shows its own bars)
    board = Board() if progress and backend.slots > 1 else None
    try:
        failed_references = run_references(backend, config, out, references, results, board)
        finished: dict[tuple, dict] = {}
        # and one bar over the runs, on a terminal
        bar = tqdm(total=len(config.guides) * len(config.seeds), desc="runs", unit="run", leave=False,
                   disable=board is None or not board.live)

        def collect(task: RunTask, run: dict) -> None:
            finished[task.guide, task.seed] = {**run, "run_dir": f"runs/{run_name(task.guide, task.seed)}"}
            results["runs"] = [finished[key] for key in ((g, s) for g in config.guides for s in config.seeds)
                               if key in finished]
            bar.update()
            if progress:
                report_run(task.guide, task.seed, run)
            if on_run is not None:
                on_run(results)

        tasks = []
        for guide_name in config.guides:
            for seed in config.seeds:
                task = RunTask(guide_name, seed, str(out / "runs" / run_name(guide_name, seed)),
                               None if seed not in references else str(references[seed]))
                if seed in failed_references:
                    collect(task, skipped_run(guide_name, seed, f"its fixed model (reference run, seed {seed}) "
                                                                f"failed: {failed_references[seed]}"))
                else:
                    tasks.append(task)
        if stacks := ([] if references else pending_stacks(unresolved, data, tasks, backend.concurrent_runs)):
            results["fits_at_once"] = {}  # each guide's seeds as one program (where the kind stacks them) first

            def stacked(task: RunTask, outcome: dict) -> None:
                merge_outcomes(results["fits_at_once"], task.guide, outcome["fits_at_once"])
                if progress and isinstance(outcome["fits_at_once"], str):
                    print(f"{guide_label(task.guide)}: each seed trains in its run "
                          f"({outcome['fits_at_once'].removeprefix('one at a time: ')})", file=sys.stderr)

            run_tasks(backend, config, stacks, stacked, board)
        run_tasks(backend, config, tasks, collect, board)
        bar.close()
    finally:
        if board is not None:
            board.close()
        backend.close()
    results["seconds"]["runs"] = time.perf_counter() - begun
    return results


def run_references(backend, config: Config, out: Path, references: dict, results: dict,
                   board: Board | None = None) -> dict:
    """Train the fixed-model reference runs; returns ``{seed: fault}`` for those that failed under skip."""
    if not references:
        return {}
    done: dict[int, dict] = {}
    tasks = [RunTask(config.reference_guide, seed, str(run_dir)) for seed, run_dir in references.items()]
    run_tasks(backend, config, tasks, lambda task, run: done.update({task.seed: run}), board)
    results["reference_runs"] = [{**done[seed], "run_dir": str(run_dir.relative_to(out))}
                                 for seed, run_dir in references.items()]
    return {seed: run["failed"] for seed, run in done.items() if "failed" in run}


def run_tasks(backend, config: Config, tasks: list[RunTask], on_run: Callable[[RunTask, dict], None],
              board: Board | None = None) -> None:
    """Run ``tasks`` on ``backend``, up to its ``slots`` at once; ``on_run(task, record)`` as each finishes;
    ``board`` shows how far the running ones are.

    A NaN fault is a record with ``"failed"`` under ``--on-nan skip``; otherwise it, a usage
    error or a crash stops the other runs (each checkpoints) and is raised here. After SIGINT or
    SIGTERM the running runs checkpoint, the rest never start, and :class:`Interrupted` is raised.
    """
    waiting, running = list(tasks), set()
    failure: Exception | None = None
    interrupted: Outcome | None = None
    stopped_runs = 0  # runs that stopped on the request: one names its step, several their folder
    stopping = False
    with stop_requests() as should_stop:
        while running or (waiting and not (should_stop() or failure or interrupted)):
            while waiting and len(running) < backend.slots and not (should_stop() or failure or interrupted):
                task = waiting.pop(0)
                if board is not None:
                    board.start(task.name, task.run_dir)
                backend.submit(task)
                running.add(task)
            if (should_stop() or failure or interrupted) and not stopping:  # every running run checkpoints and stops
                backend.stop(should_stop() or signal.SIGTERM)
                stopping = True
            outcomes = backend.wait(POLL)
            if board is not None:
                board.poll()
            for outcome in outcomes:
                running.discard(outcome.task)
                if board is not None:
                    board.finish(outcome.task.run_dir)
                if outcome.status == "ok":
                    on_run(outcome.task, outcome.payload)
                elif outcome.status == "fault" and config.on_nan == "skip":
                    on_run(outcome.task, skipped_run(outcome.task.guide, outcome.task.seed, outcome.payload))
                elif stopped(outcome, stopping, bool(should_stop())):
                    interrupted = interrupted or outcome
                    stopped_runs += 1
                elif failure is None:
                    failure = as_exception(outcome, config.debug)
    if failure is not None:
        raise failure
    if should_stop() or interrupted:
        signum = should_stop() or interrupted.payload[0]
        task = interrupted.task if interrupted else tasks[0]
        one = interrupted and interrupted.status == "interrupted" and stopped_runs == 1
        step = interrupted.payload[1] if one else None
        raise Interrupted(signum, step, Path(task.run_dir))


def stopped(outcome: Outcome, stopping: bool, asked: bool) -> bool:
    """Whether a run that did not finish counts as stopped, not failed: it checkpointed and stopped, or it ended while
    the study was stopping, or its process died once a stop was asked (a scheduler's SIGTERM reaches the workers
    too, maybe before the driver has passed it on); a run that failed on its own stays a failure."""
    return outcome.status == "interrupted" or stopping or asked and outcome.status in ("died", "cancelled")


def as_exception(outcome: Outcome, debug: bool = False) -> Exception:
    """The error a failed run raises in the driver, naming the run; with ``debug``, a program's traceback too."""
    if outcome.status == "fault":
        return NumericalFault(outcome.payload)
    if outcome.status == "usage":
        return UsageError(outcome.payload)
    if outcome.status == "program":
        failure, details = outcome.payload
        return ProgramFailed(f"the run of guide {outcome.task.guide}, seed {outcome.task.seed} failed: {failure}; "
                             f"the traceback is in {Path(outcome.task.run_dir) / LOG} (--debug prints it)",
                             details if debug else None)
    return RunFailed(f"the run of guide {outcome.task.guide}, seed {outcome.task.seed} failed: {outcome.payload}")


def save_study(results: dict, out: str | Path, config: Config, started: float | None = None) -> None:
    """Write a finished study: results.json/.csv/.md, the resolved ``config.toml`` and, if asked, the figures.

    ``results["seconds"]`` gains the figures' time and, from ``started`` (a ``time.perf_counter()``
    reading at the command's start), the total, which the table's footer states.
    """
    out = Path(out)
    seconds = results.setdefault("seconds", {})
    write_results(results, out)
    (out / "config.toml").write_text(to_toml(config))
    if config.figures:
        from elbogap.plots import make_figures  # matplotlib loads only where figures are drawn

        begun = time.perf_counter()
        make_figures(out)
        seconds["figures"] = time.perf_counter() - begun
    if importlib.util.find_spec("arviz") is not None:  # the optional extra: each run's posterior as NetCDF
        begun = time.perf_counter()
        if export_study(out):  # a per-point study has nothing to export
            seconds["export"] = time.perf_counter() - begun
    if started is not None:
        seconds["total"] = time.perf_counter() - started
    write_results(results, out)


def report_run(guide_name: str, seed: int, run: dict) -> None:
    if "failed" not in run and of_whole_data_set(run):  # one unit, the whole data set
        data = run["train"]
        tqdm.write(f"{guide_name:>10} seed {seed}: log p(D) {data['log_px']:.3f}, ELBO {data['elbo']:.3f}, "
                   f"gap {data['kl_gap']:.3f} ± {data['kl_gap_stderr']:.3f}", file=sys.stderr)
    elif "failed" not in run:
        tqdm.write(f"{guide_name:>10} seed {seed}: test {split_line(run['test'])}", file=sys.stderr)
