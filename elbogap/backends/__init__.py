"""Where the runs of a sweep execute: this process, local processes (``--jobs``), or a Ray cluster.

A run is one task: configuration + guide + seed -> a run directory and a small run record.
Every backend has the same four verbs (``submit``, ``wait``, ``stop``, ``close``), says how many
runs it takes at once (``slots``) and how many execute at once (``concurrent_runs``: Ray takes every
run and runs as many as its CPUs hold), and runs :func:`~elbogap.backends.task.execute`; the
sweep (:mod:`elbogap.sweep`) owns everything else: reference runs, ordering, resume, the
``--on-nan`` policy and saving results.
"""

import ast
import multiprocessing
import os
import sys
import threading
from pathlib import Path

from tqdm.auto import tqdm

from elbogap.backends.task import Outcome, RunTask, execute
from elbogap.config import Config
from elbogap.errors import UsageError
from elbogap.where import where_am_i

__all__ = ["Outcome", "RunTask", "execute", "open_backend", "where_am_i", "worker_context"]

#: what a worker process imports before its first run: the training, evaluation and calibration stack, scikit-learn's
#: data sets, and torch._dynamo (torch imports it when the first optimizer is built, about a second in every process)
WORKER_MODULES = ("elbogap.runs", "elbogap.seeds", "elbogap.factory", "elbogap.calibration.study", "sklearn.datasets",
                  "torch._dynamo")


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def holds_objects(config: Config) -> bool:
    """Whether a program of the study is a Python object (``object:``), which cannot leave this process."""
    return any(spec.startswith("object:") for spec in (config.model, *config.guides))


def local_jobs(config: Config, tasks: int | None = None) -> int:
    """How many of ``tasks`` (default: the study's runs) execute at once on this machine: ``--jobs``, or for 0
    one per available core, at most one per task, and 1 where a program is a Python object."""
    tasks = len(config.guides) * len(config.seeds) if tasks is None else tasks
    if config.jobs:
        return config.jobs
    if holds_objects(config):
        return 1
    return max(1, min(available_cores(), tasks))


def in_worker() -> None:
    """What a local worker process sets first: tqdm's bars guard their writes with a lock of this process alone.
    tqdm's default lock holds a multiprocessing semaphore, named and registered with Python's resource tracker; a
    worker that its driver ends before it exits on its own (a study stopped by another run's failure) never
    unregisters it, and the tracker printed a warning of two lines under the study's one-line error."""
    tqdm.set_lock(threading.RLock())


def worker_context():
    """The multiprocessing context of local worker processes (``--jobs``, calibration's simulations): each worker is
    forked from a server process started once per command, which has imported :data:`WORKER_MODULES` and run nothing
    else. A worker so starts with no torch or Pyro state of this process (as a spawned one would) and without
    importing torch again (about 2 s of a spawned worker's start on two cores). Where the platform has no fork
    server (Windows), each worker is spawned."""
    refuse_unguarded_script()
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_MODULES))
    return context


def refuse_unguarded_script(main=None) -> None:
    """One line where this process runs a script (``python script.py``) with no ``if __name__ == "__main__":`` block:
    a worker process imports the script first, as every multiprocessing start method but fork does, and runs its
    top-level code again, whose call to elbogap then fails in the worker (a tester's quick start ended in
    multiprocessing's traceback and "its process died"). A notebook, ``python -m`` and elbogap's own command have no
    script to import."""
    main = sys.modules["__main__"] if main is None else main
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is not None or not path or not Path(path).is_file():
        return
    try:
        tree = ast.parse(Path(path).read_text())
    except (SyntaxError, UnicodeDecodeError, OSError):  # not a script Python could have run: nothing to say
        return
    if not any(isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) for node in tree.body):
        raise UsageError(f"{Path(path).name} calls elbogap at its top level, and elbogap's worker processes import "
                         "it (as multiprocessing's do): put the calls under if __name__ == \"__main__\": or pass "
                         "jobs=1")


def open_backend(config: Config, out: Path, progress: bool = False):
    """The backend ``config`` asks for: ``ray``, else local worker processes when more than one run executes
    at once (:func:`local_jobs`), else this process. With ``progress``, a run in this process shows its tqdm
    bars, and a run elsewhere writes how far it is to its run directory for the driver
    (:mod:`elbogap.board`)."""
    objects = [spec for spec in (config.model, *config.guides) if spec.startswith("object:")]
    if objects and (config.backend == "ray" or config.jobs > 1):
        raise UsageError(f"{objects[0]} is a Python object that lives in this process only; run it with jobs=1 and "
                         "backend='local', or save the program in a file and name it file.py:name")
    if config.backend == "ray":
        from elbogap.backends.ray import RayBackend

        return RayBackend(config, out, status=progress)
    jobs = local_jobs(config)
    if jobs > 1:
        from elbogap.backends.processes import ProcessBackend

        return ProcessBackend(config, jobs, status=progress)
    from elbogap.backends.serial import SerialBackend

    return SerialBackend(config, progress)
