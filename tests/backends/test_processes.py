"""Local worker processes start from a server that imported the stack once, with none of the driver's state."""

import multiprocessing
import os
import subprocess
import sys

import pyro
import pytest
import torch

from elbogap.backends import WORKER_MODULES, worker_context
from elbogap.errors import UsageError


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


ENDED_BY_ITS_DRIVER = """
import multiprocessing, os, sys
from tqdm.auto import tqdm


def work(settled):
    if settled:  # as elbogap's workers start (the stack is imported here only: the other case stays cheap)
        from elbogap.backends import in_worker

        in_worker()
    for _ in tqdm(range(2), file=open(os.devnull, "w")):
        pass
    os._exit(0)  # ended from outside: no finalizer runs, as for a worker its driver terminates


if __name__ == "__main__":
    worker = multiprocessing.get_context("forkserver").Process(target=work, args=(sys.argv[1] == "settled",))
    worker.start()
    worker.join()
    sys.exit(worker.exitcode)
"""


def test_a_worker_ended_from_outside_leaves_no_semaphore_for_the_resource_tracker_to_warn_of(tmp_path):
    """tqdm's default lock is a named multiprocessing semaphore; a worker ended before its finalizers ran left it
    registered, and Python's resource tracker printed two lines under a study's one-line error. A worker's bars now
    take a lock of its own process (in_worker)."""
    script = tmp_path / "driver.py"
    script.write_text(ENDED_BY_ITS_DRIVER)
    ended = {how: subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=120,
                                 cwd=tmp_path) for how in ("default", "settled")}
    assert ended["settled"].returncode == 0 == ended["default"].returncode, ended["settled"].stderr
    assert "leaked semaphore" in ended["default"].stderr  # what the test would miss if tqdm changed its lock
    assert "resource_tracker" not in ended["settled"].stderr, ended["settled"].stderr


def test_a_script_with_no_main_guard_is_refused_in_one_line_before_a_worker_imports_it(tmp_path):
    """A worker process imports the script that started it and runs its top-level code again: a tester's quick start
    called elbogap.compare at the top of a script and got multiprocessing's traceback and "its process died". A
    guarded script, a module run with -m (it has a spec) and a notebook (no file) are let through."""
    import types

    from elbogap.backends import refuse_unguarded_script

    bare, guarded = tmp_path / "bare.py", tmp_path / "guarded.py"
    bare.write_text("import elbogap\nelbogap.compare('vae', ['diag'], 'digits')\n")
    guarded.write_text("import elbogap\n\nif __name__ == '__main__':\n    elbogap.compare('vae', ['diag'], 'digits')\n")
    with pytest.raises(UsageError, match=r"bare.py calls elbogap at its top level.*if __name__ == \"__main__\""):
        refuse_unguarded_script(types.SimpleNamespace(__file__=str(bare), __spec__=None))
    for main in (types.SimpleNamespace(__file__=str(guarded), __spec__=None),
                 types.SimpleNamespace(__file__=str(bare), __spec__=types.SimpleNamespace(name="bare")),
                 types.SimpleNamespace(__spec__=None)):
        refuse_unguarded_script(main)
