"""Runs in local processes (``--jobs N``), each in a fresh interpreter of its own.

Runs are independent, so a sweep of small models, which use a core poorly from one process,
finishes sooner in several. torch's threads are shared out among the jobs unless
``--cpus-per-run`` says otherwise. A signal to the driver is passed on to every running
process, which checkpoints its run and stops.
"""

import multiprocessing
import os
import queue

import torch

from elbogap.backends.task import Outcome, RunTask, execute, where_am_i
from elbogap.config import Config


def _execute_and_report(config: dict, task: RunTask, threads: int, reports) -> None:
    reports.put(execute(config, task, threads, where_am_i("local")))


class ProcessBackend:
    """Up to ``config.jobs`` runs at once, in spawned processes that report through a queue."""

    name = "local"

    def __init__(self, config: Config):
        self.config = config.to_dict()
        self.slots = config.jobs
        self.threads = config.cpus_per_run or max(1, torch.get_num_threads() // config.jobs)
        self.context = multiprocessing.get_context("spawn")  # no forked torch or Pyro state
        self.reports = self.context.Queue()
        self.running: dict[RunTask, multiprocessing.Process] = {}

    def submit(self, task: RunTask) -> None:
        process = self.context.Process(target=_execute_and_report,
                                       args=(self.config, task, self.threads, self.reports))
        process.start()
        self.running[task] = process

    def wait(self, timeout: float) -> list[Outcome]:
        try:
            outcome = self.reports.get(timeout=timeout)
        except queue.Empty:
            died = [(task, process) for task, process in self.running.items() if process.exitcode not in (None, 0)]
            for task, _ in died:  # killed, or hit in start-up, before it could report
                del self.running[task]
            return [Outcome(task, "error", f"its process died (exit code {process.exitcode})")
                    for task, process in died]
        self.running.pop(outcome.task).join()
        return [outcome]

    def stop(self, signum: int) -> None:
        for process in self.running.values():
            try:
                os.kill(process.pid, signum)
            except (ProcessLookupError, TypeError):  # already gone, or not started
                pass

    def close(self) -> None:
        for process in self.running.values():
            process.join(timeout=5)
