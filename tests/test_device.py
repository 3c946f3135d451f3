"""The --device setting: refused in one line where it does not exist; the CPU path is the default."""

import pytest
import torch

from elbogap.config import Config
from elbogap.data import load_data
from elbogap.device import resolve_device, rng_devices, rng_state, set_rng_state
from elbogap.errors import UsageError


def test_cpu_is_the_default_and_resolves():
    assert Config().device == "cpu" and resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("name", "message"), [("gpu0", "unknown --device"), ("meta", "runs on cpu or cuda")])
def test_unknown_devices_are_named(name, message):
    with pytest.raises(UsageError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(elbogap, tmp_path):
    code, stderr = elbogap("compare", "--device", "cuda", "--out", tmp_path / "out")  # refused before any work
    assert code == 2 and "sees no CUDA GPU" in stderr and "--device cpu" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_data_moves_whole_and_cpu_tensors_need_no_gpu_generators():
    data = load_data("digits", binarize="dynamic")
    moved = data.to(torch.device("cpu"))
    assert moved.train_fixed is not None and moved.dynamic and torch.equal(moved.test, data.test)
    assert rng_devices(data.train, 3.0) == []


def test_rng_state_round_trips():
    state = rng_state(torch.device("cpu"))
    first = torch.rand(3)
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), first)
