"""A user's program that raises during a run: one line naming it, exit status 2, the traceback in train.log."""

import numpy as np
import pytest

from elbogap.failures import program_failure

FAILING = '''
import pyro
import pyro.distributions as dist
import torch

TRAINING_CALLS = [0]


def model(x):
    """Raises at step 3 of training, whose batches alone have 7 rows (the first call finds the parameters)."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        if len(x) == 7:
            TRAINING_CALLS[0] += 1
            if TRAINING_CALLS[0] == 4:
                raise RuntimeError("the decoder broke")
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(x), 4), 1.0).to_event(1), obs=x)
'''


@pytest.fixture
def failing(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    np.savetxt(tmp_path / "data.csv", np.random.default_rng(0).normal(size=(30, 4)), delimiter=",")
    return tmp_path


def flags(folder, command):
    which = ["--guides", "diag", "--seeds", 0, "--jobs", 1] if command == "compare" else ["--guide", "diag"]
    # no gradient SNR: its draws on a batch of 7 would count as the program's training calls
    return [command, "--model", f"{folder}/failing.py:model", "--data", folder / "data.csv", "--steps", 5,
            "--batch-size", 7, "--snr-draws", 0, "--quiet", "--no-figures", "--out", folder / "out", *which]


@pytest.mark.parametrize("command", ["compare", "train"])
def test_a_program_that_raises_in_training_ends_the_command_in_one_line(elbogap, failing, command):
    code, error = elbogap(*flags(failing, command))
    run_dir = failing / "out" / ("runs/diag-seed0" if command == "compare" else "")
    assert code == 2 and error.count("\n") == 1 and "Traceback" not in error
    assert (f"the program {failing}/failing.py:model raised RuntimeError: the decoder broke (failing.py:16 in model, "
            f"after site 'z'); the traceback is in {run_dir / 'train.log'} (--debug prints it)") in error
    log = (run_dir / "train.log").read_text()
    assert " step 2 " in log and " step 3 " not in log
    assert "Traceback (most recent call last)" in log and 'raise RuntimeError("the decoder broke")' in log


def test_debug_prints_the_traceback_before_the_line(elbogap, failing):
    code, error = elbogap(*flags(failing, "compare"), "--debug")
    *traceback, line = error.splitlines()
    assert code == 2 and traceback[0] == "Traceback (most recent call last):"
    assert 'raise RuntimeError("the decoder broke")' in error
    assert line.startswith("elbogap: error: the run of guide diag, seed 0 failed: the program")


def test_an_error_with_no_frame_in_a_program_is_elbogaps_own():
    try:
        raise RuntimeError("a bug of elbogap's")
    except RuntimeError as error:
        assert program_failure(error, ["my_vae.py:VAE"]) is None
