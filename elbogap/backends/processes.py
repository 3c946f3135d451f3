"""Runs in local worker processes (``--jobs N``), each serving run after run.

Runs are independent, so a sweep of small models, which use a core poorly from one process,
finishes sooner in several. Each worker is forked from a server process that imported torch, Pyro and
elbogap once (:func:`~elbogap.backends.worker_context`); it loads the data once, then executes the runs it is
handed. torch's threads are shared out among the jobs unless
``--cpus-per-run`` says otherwise. A signal to the driver is passed on to every worker with a
run in progress, which checkpoints its run and stops.
"""

import os
import queue
import signal
import threading

import torch

from elbogap.backends import in_worker, worker_context
from elbogap.backends.task import Outcome, RunTask, execute
from elbogap.config import Config
from elbogap.where import where_am_i


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie, exited but not reaped, has); on a platform
    without POSIX signals (Windows, where os.kill(pid, 0) would send Ctrl-C), False: there the driver spawns its
    workers itself and multiprocessing's own liveness holds."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the number now another user's process
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:  # no /proc (macOS): existence is all there is to know
        return True


def watch_driver(lifeline, gone: threading.Event | None = None) -> None:
    """Once the driver has gone (killed outright, or stopping; the write end of ``lifeline`` is the driver's alone, so
    it reads end-of-file then), stop this worker's run as SIGTERM would (a training run checkpoints at its next step)
    and let the worker leave: no run goes on with no one to report to, holding the terminal's pipe."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    if gone is not None:
        gone.set()
    signal.raise_signal(signal.SIGTERM)


def keep_watch(lifeline, gone: threading.Event | None = None) -> None:
    """:func:`watch_driver` in a daemon thread of this worker process."""
    threading.Thread(target=watch_driver, args=(lifeline, gone), daemon=True).start()


def _serve(inbox, reports, config: dict, threads: int, status: bool, lifeline) -> None:
    """A worker: execute each task from ``inbox`` and report its outcome, until handed None or its driver is gone
    (``lifeline``: see :func:`watch_driver`); with ``status``, each run writes how far it is to its run directory
    for the driver."""
    in_worker()
    gone = threading.Event()
    keep_watch(lifeline, gone)
    try:
        while not gone.is_set() and (task := inbox.get()) is not None:
            reports.put(execute(config, task, threads, where_am_i("local"), status=status))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; an idle worker just leaves
        pass


class _Worker:
    def __init__(self, context, reports, config: dict, threads: int, status: bool):
        self.inbox = context.Queue()
        lifeline, self.lifeline = context.Pipe(duplex=False)  # the worker reads; only this process holds the writer
        self.process = context.Process(target=_serve, args=(self.inbox, reports, config, threads, status, lifeline),
                                       daemon=True)
        self.process.start()
        lifeline.close()
        self.task: RunTask | None = None

    def alive(self) -> bool:
        """Whether the worker runs: a fork server killed with the study (SIGTERM to its process group) reads its
        live workers as dead."""
        return self.process.is_alive() or running(self.process.pid)


class ProcessBackend:
    """Up to ``slots`` runs at once, in worker processes (:func:`~elbogap.backends.worker_context`) that report
    through one queue; with ``status``, each run writes how far it is to its run directory
    (:class:`~elbogap.progress.StatusFile`)."""

    name = "local"

    def __init__(self, config: Config, jobs: int, status: bool = False):
        self.config, self.status = config.to_dict(), status
        self.slots = self.concurrent_runs = jobs
        self.threads = config.cpus_per_run or max(1, torch.get_num_threads() // jobs)
        self.context = worker_context()
        self.reports = self.context.Queue()
        self.workers: list[_Worker] = []

    def submit(self, task: RunTask) -> None:
        idle = next((worker for worker in self.workers if worker.task is None and worker.alive()), None)
        if idle is None:
            idle = _Worker(self.context, self.reports, self.config, self.threads, self.status)
            self.workers.append(idle)
        idle.task = task
        idle.inbox.put(task)

    def wait(self, timeout: float) -> list[Outcome]:
        try:
            outcome = self.reports.get(timeout=timeout)
        except queue.Empty:
            died = [worker for worker in self.workers if worker.task is not None and not worker.alive()]
            outcomes = [Outcome(worker.task, "died", f"its process died (exit code {worker.process.exitcode})")
                        for worker in died]  # killed, or hit in start-up, before it could report
            for worker in died:
                worker.task = None
            return outcomes
        for worker in self.workers:
            if worker.task == outcome.task:
                worker.task = None
        return [outcome]

    def stop(self, signum: int) -> None:
        for worker in self.workers:
            if worker.task is not None:
                try:
                    os.kill(worker.process.pid, signum)
                except (ProcessLookupError, TypeError):  # already gone
                    pass

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.inbox.put(None)
        for worker in self.workers:
            worker.process.join(timeout=5)
            worker.lifeline.close()
