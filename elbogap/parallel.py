"""The runs of a sweep in parallel processes (``--jobs N``), each run in a process of its own.

Runs are independent (one guide, one seed), so a sweep of small models, which use a core
poorly from one process, finishes sooner in several. Each process runs
:func:`~elbogap.runs.run_one` with ``torch`` threads shared out among the jobs and reports
back through a queue. SIGINT and SIGTERM reach every running process: each checkpoints its
run and stops, runs not yet started are left for ``--resume``.
"""

import multiprocessing
import os
import queue
import signal
from collections.abc import Callable
from pathlib import Path

import torch

from elbogap.config import Config
from elbogap.errors import UsageError
from elbogap.runs import Interrupted, NumericalFault, load_dataset, run_one, skipped_run, stop_requests

#: how often (seconds) the parent looks at its processes while no run reports
POLL = 0.2


def _run_in_process(config: dict, guide: str, seed: int, run_dir: str, reference: str | None,
                    threads: int, reports) -> None:
    torch.set_num_threads(threads)
    key = (guide, seed)
    try:
        config = Config(**config)
        run = run_one(config, load_dataset(config), guide, seed, run_dir, progress=False, fixed_model=reference)
        reports.put((key, "ok", run))
    except Interrupted as stop:
        reports.put((key, "interrupted", (stop.signum, stop.step, str(stop.run_dir))))
    except KeyboardInterrupt:
        reports.put((key, "interrupted", (signal.SIGINT, 0, run_dir)))
    except NumericalFault as fault:
        reports.put((key, "fault", str(fault)))
    except UsageError as error:
        reports.put((key, "usage", str(error)))
    except Exception as error:  # reported by the parent, which owns the terminal
        reports.put((key, "error", f"{type(error).__name__}: {error}"))


def run_parallel(config: Config, tasks: list[tuple[str, int, Path, Path | None]], jobs: int,
                 on_run: Callable[[str, int, dict], None]) -> None:
    """Run ``tasks`` (guide, seed, run directory, fixed-model reference) in up to ``jobs`` processes.

    ``on_run(guide, seed, run)`` receives each finished run (a record with ``"failed"`` for a
    NaN fault under ``--on-nan skip``) in the order they finish. A NaN fault (without skip) or an
    error stops the other runs at their next step, with checkpoints, and is raised here;
    so is :class:`~elbogap.runs.Interrupted` after a signal.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch or Pyro state
    reports = context.Queue()
    threads = max(1, torch.get_num_threads() // jobs)
    waiting, running = list(tasks), {}
    failure: Exception | None = None
    interrupted: tuple | None = None
    signalled = False
    with stop_requests() as stop:
        while running or (waiting and not stop and failure is None):
            while waiting and len(running) < jobs and not stop and failure is None:
                guide, seed, run_dir, reference = waiting.pop(0)
                process = context.Process(target=_run_in_process, args=(
                    config.to_dict(), guide, seed, str(run_dir), None if reference is None else str(reference),
                    threads, reports))
                process.start()
                running[(guide, seed)] = process
            if (stop or failure is not None) and not signalled:  # every running run checkpoints and stops
                for process in running.values():
                    _signal(process, stop[0] if stop else signal.SIGTERM)
                signalled = True
            try:
                key, status, payload = reports.get(timeout=POLL)
            except queue.Empty:
                for key, process in list(running.items()):
                    if process.exitcode not in (None, 0):  # died without a report: killed, or hit in start-up
                        del running[key]
                        if not stop and failure is None:
                            failure = RuntimeError(f"the process of run {key[0]} seed {key[1]} died "
                                                   f"(exit code {process.exitcode})")
                continue
            running.pop(key).join()
            if status == "ok":
                on_run(*key, payload)
            elif status == "fault" and config.on_nan == "skip":
                on_run(*key, skipped_run(*key, payload))
            elif status == "interrupted":
                interrupted = interrupted or payload
            elif failure is None:
                failure = {"fault": NumericalFault, "usage": UsageError}.get(status, RuntimeError)(payload)
    if failure is not None:
        raise failure
    if stop or interrupted:
        signum, step, run_dir = interrupted or (stop[0], 0, str(tasks[0][2]))
        raise Interrupted(stop[0] if stop else signum, step, Path(run_dir))


def _signal(process, signum: int) -> None:
    try:
        os.kill(process.pid, signum)
    except (ProcessLookupError, TypeError):  # already gone, or not started
        pass
