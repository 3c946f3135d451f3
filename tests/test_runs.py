"""The run lifecycle: a stop request checkpoints the run after the current step."""

import contextlib
import signal

import pytest

from elbogap.config import Config
from elbogap.factory import load_dataset
from elbogap.runs import CHECKPOINT, RUN_JSON, Interrupted, resumable_state, run_one

SMALL = {"train_size": 60, "test_size": 20, "hidden_dims": [8], "steps": 6, "curve_points": 8, "gap_points": 0,
         "eval_samples": 8, "quadrature_points": 8}


@contextlib.contextmanager
def terminated_at_once():
    yield lambda: signal.SIGTERM  # asked after every step, so the first one already stops


def test_a_stop_request_checkpoints_the_run_after_the_current_step(tmp_path):
    config = Config(**SMALL)
    with pytest.raises(Interrupted) as stopped:
        run_one(config, load_dataset(config), "diag", 0, tmp_path, stops=terminated_at_once)
    assert (stopped.value.signum, stopped.value.step) == (signal.SIGTERM, 1)
    assert (tmp_path / CHECKPOINT).is_file() and not (tmp_path / RUN_JSON).exists()
    state = resumable_state(tmp_path, config.replace(resume=True), "diag", 0)
    assert not state["complete"] and state["trainer"]["step"] == 1
