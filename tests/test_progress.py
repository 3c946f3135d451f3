"""How a run says how far it is: tqdm bars here, or a status file for the driver of several workers."""

import pytest

from elbogap import progress as progress_module
from elbogap.progress import Bars, StatusFile, as_progress, path_text, read_status


@pytest.mark.parametrize(("labels", "text"), [
    (["evaluate test", "AIS on 8 points"], "evaluate test › AIS on 8 points"),
    (["q* test", "q* test"], "q* test"),
    (["BDMC", "BDMC on 4 points"], "BDMC on 4 points"),
    (["training", "curve evaluation"], "training › curve evaluation"),
    ([], ""),
])
def test_a_path_reads_outermost_first_and_a_label_that_repeats_its_phase_stands_for_both(labels, text):
    assert path_text(labels) == text


def test_the_status_file_holds_the_open_path_its_counts_and_each_phase_entered_once(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "WRITE_EVERY", 0.0)  # every count written at once
    status = StatusFile(tmp_path / "run" / "progress.json")  # the run directory need not exist yet
    for _ in range(2):  # a phase entered again is not news
        with status.phase("evaluate test"):
            with status.bar("AIS on 8 points", 30, unit="transition") as bar:
                bar.update(5)
                bar.set_postfix(acceptance=0.6)
                now = read_status(status.path)
                assert [entry["label"] for entry in now["open"]] == ["evaluate test", "AIS on 8 points"]
                counted = now["open"][-1]
                assert (counted["n"], counted["total"], counted["unit"], counted["postfix"]) == (
                    5, 30, "transition", "acceptance=0.6")
            assert [entry["label"] for entry in read_status(status.path)["open"]] == ["evaluate test"]
    final = read_status(status.path)
    assert final["open"] == []
    assert [(entered["text"], entered.get("total")) for entered in final["history"]] == [
        ("evaluate test", None), ("evaluate test › AIS on 8 points", 30)]


def test_a_phase_ended_by_an_error_closes_the_bars_left_open_inside(tmp_path):
    status = StatusFile(tmp_path / "progress.json")
    with pytest.raises(RuntimeError), status.phase("training"):
        status.bar("steps", 100).update()  # never closed: the error leaves first
        raise RuntimeError
    assert status.open == [] and read_status(status.path)["open"] == []


def test_bars_are_titled_by_the_run_and_the_phases_they_are_in(capsys):
    progress = Bars(run="diag-seed0")
    with progress.phase("evaluate test"), progress.bar("AIS on 8 points", 3) as bar:
        bar.update(3)
    assert "diag-seed0 › evaluate test › AIS on 8 points" in capsys.readouterr().err
    quiet = as_progress(False)
    with quiet.phase("evaluate test"), quiet.bar("AIS on 8 points", 3) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
    assert as_progress(progress) is progress


def test_a_bar_into_a_redirected_log_redraws_twice_a_minute_not_every_step(capsys):
    """stderr captured (a file, not a terminal): 1,000 quick updates write a handful of redraws, not 1,000."""
    with Bars(run="diag-seed0").bar("training", 1000) as bar:
        assert bar.mininterval == progress_module.LOG_EVERY
        for _ in range(1000):
            bar.update()
    assert capsys.readouterr().err.count("\r") < 10
