"""One sweep loop on every backend: same numbers, same stop and resume, same --on-nan policy."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elbogap.backends.task import Outcome, RunTask
from elbogap.checkpoint import load_checkpoint
from elbogap.cli import main
from elbogap.config import Config
from elbogap.factory import load_dataset
from elbogap.sweep import size_notices, stopped
from tests.backends.conftest import QUICK

STEPS = 60


def sweep_args(programs, out):
    return ["compare", "--model", programs["slowable"], "--guides", "diag", "--seeds", "0,1,2", "--steps", str(STEPS),
            "--eval-every", "10", "--checkpoint-every", "0", "--out", str(out), *QUICK]


def numbers(out):
    return [(run["guide"], run["seed"], run["train"], run["test"])
            for run in json.loads((out / "results.json").read_text())["runs"]]


@pytest.fixture(scope="module")
def serial_numbers(programs, tmp_path_factory):
    """The sweep run one run at a time in this process: the numbers every backend must give."""
    out = tmp_path_factory.mktemp("serial")
    assert main(sweep_args(programs, out)) == 0
    return numbers(out)


def where_runs_ran(out, backend: str) -> None:
    """Each run records where it ran: the backend, its process and host, and on Ray its node; a study on Ray records
    the cluster's workers."""
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {run["where"]["backend"] for run in runs} == {"ray" if backend == "ray" else "local"}
    assert all(run["where"]["pid"] > 0 and run["where"]["host"] for run in runs)
    if backend == "ray":
        assert all(len(run["where"]["node"]) > 8 for run in runs)
        # each run in a worker process of its own (3 runs, 2 CPUs): a run cancelled while it imported left a reused
        # worker half-imported modules, and the next run there failed (sympy without `printing`)
        assert len({run["where"]["pid"] for run in runs}) == len(runs)
        results = json.loads((out / "results.json").read_text(), parse_constant=lambda name: pytest.fail(name))
        assert results["workers"] == 2  # the cluster's 2 CPUs at 1 CPU per run, a number strict JSON can hold
        assert "on 2 worker(s)" in (out / "results.md").read_text()
        saved = json.loads((out / "runs" / "diag-seed0" / "run.json").read_text())["run"]["where"]
        assert saved == runs[0]["where"]


# slow: about 55 s in CI beside the other worker; in CI, the resume test's jobs-ray case ends on Ray with these numbers
@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.slow)])
def test_every_backend_gives_the_serial_numbers_bitwise(backend, backend_flags, programs, serial_numbers, tmp_path):
    assert main([*sweep_args(programs, tmp_path), *backend_flags(backend)]) == 0
    assert numbers(tmp_path) == serial_numbers  # one torch thread per run everywhere
    where_runs_ran(tmp_path, backend)


@pytest.mark.parametrize(("first", "then"), [  # in CI the pair that stops one kind of backend and resumes on another
    pytest.param("serial", "jobs", marks=pytest.mark.slow), ("jobs", "ray"),
    pytest.param("ray", "serial", marks=pytest.mark.slow),
])
def test_sigterm_stops_the_sweep_with_checkpoints_and_another_backend_resumes_it(
        first, then, backend_flags, programs, serial_numbers, tmp_path):
    out = tmp_path / "out"
    programs["flag"].touch()  # training slows to 0.1 s a step: the signal lands mid-run
    try:
        process = subprocess.Popen([sys.executable, "-m", "elbogap.cli", *sweep_args(programs, out),
                                    *backend_flags(first)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wave = [0] if first == "serial" else [0, 1]  # the runs that start at once
        logs = [out / "runs" / f"diag-seed{seed}" / "train.log" for seed in wave]
        deadline = time.time() + 120
        while not all(log.is_file() and "step 10 " in log.read_text() for log in logs) and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # to the driver alone, as a scheduler would
        _, stderr = process.communicate(timeout=120)
    finally:
        programs["flag"].unlink()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    several = len(wave) > 1  # two runs stopped: the line names their folder, not one of them (a tester's named one)
    assert ("runs go on from their checkpoints" in stderr) == several and ("after step" in stderr) != several
    for seed in wave:
        state = load_checkpoint(out / "runs" / f"diag-seed{seed}" / "checkpoint.pt")
        assert not state["complete"] and 10 <= state["trainer"]["step"] < STEPS
    assert not (out / "runs" / "diag-seed2").exists()  # never started: left for --resume

    assert main([*sweep_args(programs, out), *backend_flags(then)]) == 2  # refused: would overwrite the runs
    assert main([*sweep_args(programs, out), *backend_flags(then), "--resume"]) == 0
    assert numbers(out) == serial_numbers  # bitwise, whichever backend ran each part: one torch thread per run
    where_runs_ran(out, then)  # the runs resumed there and the one begun there


def group_members(group: int) -> list[int]:
    """The processes still alive in process group ``group`` (zombies left out)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited while read
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="group_members reads /proc")
@pytest.mark.parametrize("kill", ["group SIGTERM", "driver SIGKILL"])
def test_a_study_killed_keeps_every_run_and_leaves_no_worker(kill, backend_flags, programs, tmp_path):
    """A batch scheduler's SIGTERM reaches the driver, its fork server and its workers at once: the fork server dies
    and reads its live workers as dead. The study still ends as an interruption (no traceback), every running run
    checkpoints, and no worker goes on with no driver (a tester's orphan held the terminal's pipe for 9 minutes).
    A driver killed outright: its workers stop their runs as SIGTERM would (checkpoints kept) and leave."""
    out = tmp_path / "out"
    programs["flag"].touch()
    try:
        process = subprocess.Popen([sys.executable, "-m", "elbogap.cli", *sweep_args(programs, out),
                                    *backend_flags("jobs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        logs = [out / "runs" / f"diag-seed{seed}" / "train.log" for seed in (0, 1)]
        deadline = time.time() + 120
        while not all(log.is_file() and "step 10 " in log.read_text() for log in logs) and time.time() < deadline:
            time.sleep(0.05)
        if kill == "group SIGTERM":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.kill()
        _, stderr = process.communicate(timeout=120)
        deadline = time.time() + 30
        while group_members(process.pid) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        programs["flag"].unlink()
    assert group_members(process.pid) == []
    if kill == "group SIGTERM":
        assert process.returncode == 128 + signal.SIGTERM and "--resume" in stderr and "Traceback" not in stderr
    for seed in (0, 1):
        assert not load_checkpoint(out / "runs" / f"diag-seed{seed}" / "checkpoint.pt")["complete"]


@pytest.mark.parametrize("backend", ["serial", "jobs", pytest.param("ray", marks=pytest.mark.slow)])  # ray: 20 s
def test_on_nan_skip_marks_the_run_failed_and_goes_on(backend, backend_flags, programs, tmp_path):
    code = main(["compare", "--model", programs["nan"], "--guides", "diag,full", "--seeds", "0", "--steps", "60",
                 "--on-nan", "skip", "--out", str(tmp_path), *QUICK, *backend_flags(backend)])
    assert code == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [run["guide"] for run in runs] == ["diag", "full"] and all("NaN" in run["failed"] for run in runs)
    assert "Failed runs" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("backend", ["serial", "jobs", "ray"])
def test_a_nan_in_a_fixed_model_reference_run_is_one_behaviour_on_every_backend(
        backend, backend_flags, programs, tmp_path, capsys):
    args = ["compare", "--model", programs["nan"], "--mode", "fixed-model", "--guides", "diag,full", "--seeds", "0",
            "--steps", "60", *QUICK, *backend_flags(backend)]
    assert main([*args, "--out", str(tmp_path / "stop")]) == 1
    stderr = capsys.readouterr().err
    assert "NaN" in stderr and "reference-diag-seed0" in stderr
    assert not (tmp_path / "stop" / "runs" / "diag-seed0").exists()  # no guide trained on a broken model

    assert main([*args, "--on-nan", "skip", "--out", str(tmp_path / "skip")]) == 0
    results = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert "NaN" in results["reference_runs"][0]["failed"]
    assert [run["guide"] for run in results["runs"]] == ["diag", "full"]
    assert all("its fixed model (reference run, seed 0) failed" in run["failed"] for run in results["runs"])
    assert not (tmp_path / "skip" / "runs" / "diag-seed0").exists()


@pytest.mark.parametrize(("status", "stopping", "asked", "counts_as_stopped"), [
    ("interrupted", False, True, True),
    ("died", False, True, True),  # a scheduler's SIGTERM killed the worker before the driver passed it on
    ("died", False, False, False),  # killed with no stop asked: a failure
    ("program", False, True, False),  # the user's program raised as the signal came: its error is still shown
    ("usage", False, True, False),
    ("program", True, True, True),  # once the study is stopping, whatever ends is stopped
])
def test_a_run_that_fails_on_its_own_as_a_stop_is_asked_stays_a_failure(status, stopping, asked, counts_as_stopped):
    outcome = Outcome(RunTask("diag", 0, "runs/diag-seed0"), status, "a message")
    assert stopped(outcome, stopping, asked) is counts_as_stopped


def test_a_size_larger_than_its_split_is_said():
    """A tester's --test-size 1000 on a 100-row test split was used as 100 without a word."""
    data = load_dataset(Config(train_size=200))
    assert size_notices(Config(train_size=200, test_size=100000), data) == [
        f"--test-size 100000 is more than the test split's {len(data.test)} rows: all {len(data.test)} are used"]
    assert size_notices(Config(train_size=200, test_size=len(data.test)), data) == []
