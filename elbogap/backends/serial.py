"""Runs one after another in this process, with progress bars: the default backend."""

from elbogap.backends.task import Outcome, RunTask, execute
from elbogap.config import Config
from elbogap.where import where_am_i


class SerialBackend:
    """Each :meth:`wait` executes the next submitted run here; signals reach it directly."""

    name = "local"
    slots = 1
    concurrent_runs = 1

    def __init__(self, config: Config, progress: bool = False):
        self.config, self.progress = config.to_dict(), progress
        self.threads = config.cpus_per_run
        self.queue: list[RunTask] = []
        self.stopped = False

    def submit(self, task: RunTask) -> None:
        self.queue.append(task)

    def wait(self, timeout: float) -> list[Outcome]:
        if self.stopped:
            dropped, self.queue = self.queue, []
            return [Outcome(task, "cancelled") for task in dropped]
        if not self.queue:
            return []
        return [execute(self.config, self.queue.pop(0), self.threads, where_am_i(self.name), progress=self.progress)]

    def stop(self, signum: int) -> None:
        self.stopped = True  # the run in progress has seen the signal itself; the queued ones never start

    def close(self) -> None:
        pass
