"""What the driver of several workers shows: each run's phase, from the status files its workers write."""

import io
import subprocess
import sys

import pytest

from elbogap import progress as progress_module
from elbogap.board import Board, status_line
from elbogap.progress import STATUS, StatusFile, read_status


def test_off_a_terminal_each_phase_a_run_enters_is_one_line_even_between_readings(tmp_path, monkeypatch):
    monkeypatch.setattr("elbogap.board.READ_EVERY", 0.0)
    out = io.StringIO()
    board = Board(file=out)
    assert not board.live
    run_dir = tmp_path / "diag-seed0"
    run_dir.mkdir()
    (run_dir / STATUS).write_text("left by an earlier command")
    board.start("diag-seed0", run_dir)
    assert not (run_dir / STATUS).exists()
    status = StatusFile(run_dir / STATUS)
    with status.bar("training", 100) as bar:
        bar.update(50)
        board.poll()
        board.poll()
    with status.phase("evaluate test"), status.bar("AIS on 8 points", 30, unit="transition") as bar:
        bar.update(30)
    with status.phase("q* test"):  # entered and left between two readings
        pass
    board.finish(run_dir)
    lines = out.getvalue().splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == [
        "training (100 steps)", "evaluate test", "evaluate test › AIS on 8 points (30 transitions)", "q* test"]
    assert all(line.startswith("00:00 diag-seed0  ") for line in lines)
    assert not (run_dir / STATUS).exists()  # the driver tidies up after the run


def test_on_a_terminal_a_run_has_one_line_with_its_path_and_the_innermost_count(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "WRITE_EVERY", 0.0)
    status = StatusFile(tmp_path / STATUS)
    with status.phase("evaluate test"), status.bar("AIS on 20 points", 750, unit="transition") as bar:
        bar.update(300)
        now = read_status(status.path)
        at = now["started"]  # the clock as the run started: the elapsed time is 0 by construction, not by speed
        line = status_line("iaf-seed0", now, at)
        assert line.startswith("iaf-seed0 [00:00] evaluate test › AIS on 20 points: ")
        assert "300/750 transitions" in line
        narrow = status_line("iaf-seed0", now, at, width=95)
        assert "300/750 transitions" in narrow and "› AIS on 20 points" in narrow and len(narrow) <= 95
        assert narrow.startswith("iaf-seed0 [00:00] …")  # the path gives way, from its start
    with status.phase("BDMC"):
        bdmc = read_status(status.path)
        assert status_line("iaf-seed0", bdmc, bdmc["started"]).startswith("iaf-seed0 [00:00] BDMC [")


@pytest.mark.slow  # about 16 s; in CI the tests above: a phase a run enters is one line off a terminal
def test_with_two_workers_the_driver_names_each_runs_evaluation_phases_in_a_log(tmp_path):
    """A study's driver, its output read from a pipe as a scheduler's log would: no redrawn bars, a line per phase
    (--quiet prints none: tests/test_cli.py)."""
    args = [sys.executable, "-m", "elbogap", "compare", "--guides", "diag,iaf", "--seeds", "0", "--steps", "30",
            "--jobs", "2", "--cpus-per-run", "1", "--train-size", "100", "--test-size", "20", "--hidden-dims", "8",
            "--eval-samples", "8", "--iw-samples", "8", "--curve-points", "8", "--train-eval-points", "20",
            "--log-px", "ais", "--ais-steps", "10", "--ais-chains", "2", "--leapfrog-steps", "1", "--gap-points", "0",
            "--bdmc", "2", "--no-figures", "--out", str(tmp_path)]
    shown = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    log = shown.stderr
    for run in ("diag-seed0", "iaf-seed0"):
        for phase in ("training (30 steps)", "evaluate train", "evaluate test › AIS on 20 points (60 transitions)",
                      "BDMC on 2 points"):
            assert f" {run}  {phase}" in log, log
    assert "\r" not in log  # nothing redrawn in a log
    assert not list(tmp_path.glob(f"runs/*/{STATUS}"))
