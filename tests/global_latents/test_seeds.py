"""compare's seeds trained at once: a stop in the middle leaves every run a checkpoint it goes on from alone."""

import signal

import numpy as np

from elbogap.backends import RunTask
from elbogap.checkpoint import load_checkpoint
from elbogap.config import Config
from elbogap.factory import load_dataset
from elbogap.global_latents.seeds import stack_seeds
from elbogap.runs import CHECKPOINT, run_one
from tests.global_latents import truth

REGRESSION = '''
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)
'''


def test_a_stop_while_seeds_train_at_once_leaves_each_run_a_checkpoint_it_goes_on_from(tmp_path):
    (tmp_path / "regression.py").write_text(REGRESSION)
    np.savetxt(tmp_path / "rows.csv", truth.regression_data(15, 2, seed=4).numpy(), delimiter=",")
    config = Config(model=f"{tmp_path / 'regression.py'}:model", data=str(tmp_path / "rows.csv"),
                    guides=["auto:AutoNormal"], seeds=[0, 1], out=str(tmp_path / "out"))
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
