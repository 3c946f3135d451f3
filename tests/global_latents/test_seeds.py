"""compare's seeds trained at once: a stop in the middle leaves every run a checkpoint it goes on from alone, and a
program that raises in the stack is reported by its runs in one line."""

import contextlib
import signal
from pathlib import Path

import numpy as np
import pytest

from elbogap.backends import RunTask
from elbogap.checkpoint import load_checkpoint
from elbogap.config import Config
from elbogap.factory import load_dataset
from elbogap.runs import CHECKPOINT, Interrupted, run_one
from elbogap.seeds import stack_seeds
from tests.global_latents import truth
from tests.global_latents.truth import BREAKS_IN_TRAINING, REGRESSION


def test_a_stop_while_seeds_train_at_once_leaves_each_run_a_checkpoint_it_goes_on_from(tmp_path):
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    config = Config(model=f"{tmp_path / 'regression.py'}:model", data=str(tmp_path / "rows.csv"),
                    guides=["auto:AutoNormal"], seeds=[0, 1], out=str(tmp_path / "out"),
                    log_px="quadrature")  # 2 latents: the grid's log p(D), not the 10 s of AIS this test is not about
    data = load_dataset(config)
    tasks = [RunTask("auto:AutoNormal", seed, str(tmp_path / "out" / "runs" / f"auto-AutoNormal-seed{seed}"))
             for seed in (0, 1)]
    asked = [0]

    def stop_after_120_steps():
        asked[0] += 1
        return signal.SIGTERM if asked[0] > 120 else None

    assert stack_seeds(config, data, tasks, should_stop=stop_after_120_steps) == {"auto-AutoNormal": 2}
    for task in tasks:
        state = load_checkpoint(f"{task.run_dir}/{CHECKPOINT}")
        assert state["stacked"] == 2 and not state["complete"] and 100 <= int(state["trainer"]["step"]) <= 121
    run = run_one(config, data, "auto:AutoNormal", 1, tasks[1].run_dir)  # alone, from its step, without --resume
    assert run["stacked_seeds"] == 2 and run["converged"] is True and run["steps"] > 121
    assert load_checkpoint(f"{tasks[1].run_dir}/{CHECKPOINT}")["complete"]


def test_a_stop_while_the_seeds_mean_field_starts_train_keeps_nothing_and_returns_at_once(tmp_path):
    """Full rank starts at each seed's mean-field fit, the seeds' fits trained as one program before the runs (or a
    run's own, alone): a stop asked during that training ends it at the next step, and neither a fit (OUT/shared/)
    nor a run's checkpoint is kept, so --resume trains them afresh."""
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    config = Config(model=f"{tmp_path / 'regression.py'}:model", data=str(tmp_path / "rows.csv"),
                    guides=["auto:AutoMultivariateNormal"], seeds=[0, 1], out=str(tmp_path / "out"))
    data = load_dataset(config)
    tasks = [RunTask("auto:AutoMultivariateNormal", seed,
                     str(tmp_path / "out" / "runs" / f"auto-AutoMultivariateNormal-seed{seed}")) for seed in (0, 1)]
    asked = [0]

    def stop_after_30_steps():
        asked[0] += 1
        return signal.SIGTERM if asked[0] > 30 else None

    assert stack_seeds(config, data, tasks, should_stop=stop_after_30_steps) == {"auto-AutoMultivariateNormal": 0}
    assert asked[0] < 40  # the stop was heard at the next step, not after the fits or the runs' training
    assert not any(Path(task.run_dir, CHECKPOINT).exists() for task in tasks)
    assert [path.suffix for path in (tmp_path / "out").rglob("mean_field*")] == [".lock", ".lock"]  # no fit
    task = tasks[0]  # a run alone fits its own start: a stop asked there is heard at the next step too
    asked[0] = 0

    @contextlib.contextmanager
    def stops():
        yield stop_after_30_steps

    with pytest.raises(Interrupted, match="--resume") as stopped:
        run_one(config, data, task.guide, task.seed, task.run_dir, stops=stops)
    assert stopped.value.step is None and asked[0] < 40 and not Path(task.run_dir, CHECKPOINT).exists()


def test_a_program_that_raises_while_seeds_train_at_once_is_reported_by_its_runs_in_one_line(elbogap, tmp_path):
    (tmp_path / "breaks.py").write_text(BREAKS_IN_TRAINING)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    code, err = elbogap("compare", "--model", tmp_path / "breaks.py:model", "--data", tmp_path / "rows.csv",
                        "--guides", "auto:AutoNormal", "--seeds", "0,1", "--jobs", "1", "--out", tmp_path / "out", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "breaks.py:model raised RuntimeError: the likelihood broke" in err
