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

import torch

from elbogap.backends import in_worker, worker_context
from elbogap.backends.task import Outcome, RunTask, execute
from elbogap.config import Config
from elbogap.where import where_am_i


def _serve(inbox, reports, config: dict, threads: int, status: bool) -> None:
    """A worker: execute each task from ``inbox`` and report its outcome, until handed None; with ``status``,
    each run writes how far it is to its run directory for the driver."""
    in_worker()
    try:
        while (task := inbox.get()) is not None:
            reports.put(execute(config, task, threads, where_am_i("local"), status=status))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; an idle worker just leaves
        pass


class _Worker:
    def __init__(self, context, reports, config: dict, threads: int, status: bool):
        self.inbox = context.Queue()
        self.process = context.Process(target=_serve, args=(self.inbox, reports, config, threads, status), daemon=True)
        self.process.start()
        self.task: RunTask | None = None


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
        idle = next((worker for worker in self.workers if worker.task is None and worker.process.is_alive()), None)
        if idle is None:
            idle = _Worker(self.context, self.reports, self.config, self.threads, self.status)
            self.workers.append(idle)
        idle.task = task
        idle.inbox.put(task)

    def wait(self, timeout: float) -> list[Outcome]:
        try:
            outcome = self.reports.get(timeout=timeout)
        except queue.Empty:
            died = [worker for worker in self.workers if worker.task is not None and not worker.process.is_alive()]
            outcomes = [Outcome(worker.task, "error", f"its process died (exit code {worker.process.exitcode})")
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
            if worker.process.is_alive():
                worker.inbox.put(None)
        for worker in self.workers:
            worker.process.join(timeout=5)
