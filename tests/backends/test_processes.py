"""Local worker processes start from a server that imported the stack once, with none of the driver's state."""

import multiprocessing
import os
import sys

import pyro
import torch

from elbogap.backends import WORKER_MODULES, worker_context


def report_state(reports) -> None:
    reports.put((sorted(pyro.get_param_store().keys()), [name for name in WORKER_MODULES if name in sys.modules],
                 os.getppid()))


def test_a_worker_has_the_stack_imported_and_none_of_the_drivers_param_store():
    pyro.param("driver_only", torch.zeros(1))
    context = worker_context()
    reports = context.Queue()
    workers = [context.Process(target=report_state, args=(reports,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    states = [reports.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    for params, imported, parent in states:
        assert params == []  # a fresh param store: not forked from this process
        assert imported == list(WORKER_MODULES)  # imported once, in the server, before the fork
        assert parent != os.getpid()  # the server's child, not this process's
    assert states[0][2] == states[1][2]  # one server for both


def test_a_platform_without_a_fork_server_spawns_its_workers(monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    assert worker_context().get_start_method() == "spawn"
