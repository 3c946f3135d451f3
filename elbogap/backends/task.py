"""One run as a task any backend can execute, and the outcome it reports back."""

import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from elbogap.config import Config
from elbogap.errors import UsageError


@dataclass(frozen=True)
class RunTask:
    """Train ``guide`` from ``seed`` into ``run_dir``; with ``reference``, on that run's model, held fixed.

    With ``stack`` (``(seed, run_dir)`` pairs), train those seeds of ``guide`` as one program and write each run's
    checkpoint (:func:`elbogap.seeds.stack_outcome`), for the runs to be evaluated afterwards; ``seed`` and
    ``run_dir`` are then the first pair's (where its progress is shown).
    """

    guide: str
    seed: int
    run_dir: str
    reference: str | None = None
    stack: tuple[tuple[int, str], ...] = ()

    @property
    def name(self) -> str:
        """What the task is called where its progress is shown."""
        if self.stack:
            return f"{Path(self.run_dir).name.rpartition('-seed')[0]}-seeds{','.join(str(s) for s, _ in self.stack)}"
        return Path(self.run_dir).name


@dataclass(frozen=True)
class Outcome:
    """How a task ended. ``status`` is ``ok`` (``payload``: the run record), ``fault`` (a NaN/inf;
    the message), ``interrupted`` (``(signum, step)``: checkpointed and stopped), ``cancelled``
    (never started), ``usage`` or ``error`` (the message; for ``error``, the traceback), ``program`` (a user's
    program raised: ``(one line naming it, the traceback)``), ``died`` (its worker process ended before it could
    report: the message)."""

    task: RunTask
    status: str
    payload: Any = None


#: the data set last loaded in this process, by the settings that shape it: a reused worker loads it once
_LOADED: dict[str, Any] = {}
DATA_SETTINGS = ("data", "data_dir", "binarize", "train_size", "test_size", "data_seed", "test_fraction", "device")


def _dataset(config: Config, load):
    files = [os.stat(path) for path in (config.data, config.data_dir) if path and os.path.exists(path)]
    key = repr([getattr(config, name) for name in DATA_SETTINGS] + [(f.st_mtime_ns, f.st_size) for f in files])
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load(config)
    return _LOADED[key]


def execute(config: dict, task: RunTask, threads: int | None = None, where: dict | None = None,
            cwd: str | None = None, progress: bool = False, status: bool = False) -> Outcome:
    """Run ``task`` here and report how it ended; never raises for what a run can run into.

    ``progress`` shows the run's tqdm bars here; ``status`` instead writes how far it is to
    ``progress.json`` in its run directory, for a driver that shows several runs
    (:class:`~elbogap.progress.StatusFile`).

    ``threads`` sets torch's thread count for the run (worker processes are reused, so the
    environment alone cannot be trusted). ``cwd``, the driver's working directory, makes
    relative paths in the configuration (data files, model and guide programs) mean what they
    meant to the driver, where that directory exists.
    """
    # imported here, not above: backends stay importable without the training and evaluation stack
    from elbogap.factory import load_dataset
    from elbogap.failures import keep_traceback, program_failure
    from elbogap.progress import STATUS, StatusFile, as_progress
    from elbogap.runs import Interrupted, NumericalFault, run_one
    from elbogap.seeds import stack_outcome, stacked_runs
    from elbogap.stopping import stop_requests

    previous_threads, previous_cwd = torch.get_num_threads(), os.getcwd()
    added_path = False
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if cwd is not None and cwd != previous_cwd and os.path.isdir(cwd):
            os.chdir(cwd)
            if cwd not in sys.path:  # package.module:name programs are found beside the driver, as on its machine
                sys.path.insert(0, cwd)
                added_path = True
        settings = Config(**config)
        if status:
            progress = StatusFile(Path(task.run_dir) / STATUS)
        with as_progress(progress).phase("loading data"):
            data = _dataset(settings, load_dataset)
        if task.stack:
            with stop_requests() as should_stop:
                outcome = stack_outcome(settings, data, task.guide, stacked_runs(task), progress, should_stop)
                if signum := should_stop():
                    return Outcome(task, "interrupted", (signum, None))
            return Outcome(task, "ok", {"fits_at_once": outcome})
        run = run_one(settings, data, task.guide, task.seed, Path(task.run_dir), progress,
                      fixed_model=task.reference, where=where, stops=stop_requests)
        return Outcome(task, "ok", run)
    except Interrupted as stop:
        return Outcome(task, "interrupted", (stop.signum, stop.step))
    except KeyboardInterrupt:  # a stop request that came outside training (Ray's cancel raises it there)
        return Outcome(task, "interrupted", (signal.SIGINT, None))
    except NumericalFault as fault:
        return Outcome(task, "fault", str(fault))
    except UsageError as error:
        return Outcome(task, "usage", str(error))
    except Exception as error:  # reported by the driver, which owns the terminal; the run's log keeps the traceback
        details = traceback.format_exc().rstrip()
        keep_traceback(task.run_dir, details)
        failure = program_failure(error, [config.get("model"), task.guide])
        if failure is None:  # elbogap's own code: a bug, reported with its traceback
            return Outcome(task, "error", details)
        return Outcome(task, "program", (failure, details))
    finally:
        torch.set_num_threads(previous_threads)
        if added_path:
            sys.path.remove(cwd)
        if os.getcwd() != previous_cwd:
            os.chdir(previous_cwd)
