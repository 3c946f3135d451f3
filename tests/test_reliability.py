"""Runs that survive interruption and numerical faults, and checkpoints that never run code."""

import json
import os
import pickle

import pytest
import torch

from elbogap.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from elbogap.cli import main
from elbogap.errors import UsageError

QUICK = ["--eval-samples", "16", "--quadrature-points", "12", "--hidden-dims", "16", "--curve-points", "32",
         "--gap-points", "0", "--quiet", "--no-figures", "--train-size", "300", "--test-size", "60"]

NAN_MODEL = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn

decoder = nn.Linear(2, 64)
calls = [0]


def model(x, index=None, num_data=None):
    pyro.module("decoder", decoder)
    calls[0] += 1
    with pyro.plate("data", num_data or len(x), subsample=index if index is not None else torch.arange(len(x))):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        logits = decoder(z)
        if calls[0] > 25:  # a fault injected after 25 calls: the likelihood turns NaN
            logits = logits * float("nan")
        pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
'''


def metrics(path):
    return [{split: run[split] for split in ("train", "test")} for run in json.loads(path.read_text())["runs"]]


def test_resume_refuses_a_checkpoint_from_another_configuration(tmp_path, elbogap):
    args = ["train", "--steps", "20", "--out", str(tmp_path / "run"), *QUICK]
    assert main(args) == 0
    code, stderr = elbogap(*args, "--resume", "--lr", "0.1")
    assert code == 2 and "another configuration" in stderr and "lr" in stderr


@pytest.fixture
def nan_model(tmp_path):
    path = tmp_path / "nan_model.py"
    path.write_text(NAN_MODEL)
    return f"{path}:model"


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # Pyro's warnings of the injected fault
def test_a_nan_loss_stops_the_run_naming_step_and_guide(nan_model, tmp_path, elbogap):
    """Run in this process, where a traceback would fail the test."""
    out = tmp_path / "nan"
    code, stderr = elbogap("compare", "--model", nan_model, "--guides", "diag", "--seeds", "0", "--steps", "60",
                           "--checkpoint-every", "10", "--eval-every", "100", "--out", out, *QUICK)
    assert code == 1 and "Traceback" not in stderr
    assert "NaN" in stderr and "guide diag" in stderr and "step" in stderr
    state = load_checkpoint(out / "runs" / "diag-seed0" / "checkpoint.pt")  # the last good one
    assert state["trainer"]["step"] % 10 == 0 and state["trainer"]["losses"].isfinite().all()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_crafted_pickle_is_refused_without_running_it(tmp_path, monkeypatch, elbogap):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "evil"
    run_dir.mkdir()
    with open(run_dir / "checkpoint.pt", "wb") as stream:
        pickle.dump({"format": FORMAT, "payload": Exploit()}, stream)
    with pytest.raises(UsageError, match="refusing to load"):
        load_checkpoint(run_dir / "checkpoint.pt")
    code, stderr = elbogap("evaluate", run_dir)  # in tmp_path, where a pickle that ran would touch pwned
    assert code == 2 and "refusing to load" in stderr
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_of_an_older_format_is_refused_with_what_to_do(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {})
    old = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save({**old, "format": "elbogap-checkpoint-1"}, tmp_path / "checkpoint.pt")
    with pytest.raises(UsageError, match="another version of elbogap .* start the run afresh"):
        load_checkpoint(tmp_path / "checkpoint.pt")


@pytest.mark.parametrize(("args", "message"), [
    (["compare", "--seeds", "0,x"], "not a comma-separated list"),
    (["compare", "--steps", "many"], "invalid int value"),
    (["compare", "--frobnicate"], "unrecognized arguments: --frobnicate; see 'elbogap compare --help'"),
    (["compare", "--stpes", "10"], "--stpes 10 (did you mean --steps?); see 'elbogap compare --help'"),
    (["compare", "--frob", "--guieds", "diag"], "--frob --guieds diag (did you mean --guides?); see"),  # not --jobs
    (["plot", "out", "extra"], "unrecognized arguments: extra; see 'elbogap plot --help'"),
    (["compare", "--on-nan", "ignore"], "unknown --on-nan"),
    (["compare", "--iw-samples", "0"], "--iw-samples must be at least 1"),
    (["compare", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["compare", "--jobs", "-1"], "--jobs must be at least 0"),
    (["compare", "--hidden-dims", "64,-1"], "--hidden-dims must be positive"),
    (["compare", "--activation", "sigmoidish"], "unknown activation"),
    (["compare", "--objective", "kl"], "unknown --objective"),
    (["compare", "--out", "/proc/elbogap"], "cannot write to --out"),
    (["frobnicate"], "invalid choice"),
])
def test_more_bad_input_gets_one_line(args, message, elbogap):
    code, stderr = elbogap(*args)
    assert code == 2, stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_same_seed_same_numbers(tmp_path):
    for name in ("a", "b"):
        assert main(["compare", "--guides", "planar", "--seeds", "5", "--steps", "30",
                     "--out", str(tmp_path / name), *QUICK]) == 0
    assert metrics(tmp_path / "a" / "results.json") == metrics(tmp_path / "b" / "results.json")


def test_resume_with_new_evaluation_settings_re_evaluates_and_keeps_training(tmp_path):
    from elbogap.cli import main

    out = tmp_path / "out"
    args = ["compare", "--guides", "diag", "--seeds", "0", "--steps", "30", "--hidden-dims", "16", "--gap-points", "4",
            "--quadrature-points", "12", "--curve-points", "16", "--quiet", "--no-figures", "--out", str(out)]
    assert main([*args, "--eval-samples", "8"]) == 0
    first = json.loads((out / "results.json").read_text())["runs"][0]
    assert main([*args, "--eval-samples", "8", "--resume"]) == 0  # same settings: the saved record as it was
    assert json.loads((out / "results.json").read_text())["runs"][0] == first
    assert main([*args, "--eval-samples", "24", "--gap-points", "6", "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())["runs"][0]
    assert again["test"]["elbo_samples"] == 24 and again["test"]["gap_points"] == 6
    assert first["test"]["elbo_samples"] == 8 and again["curve"] == first["curve"]  # training was not redone
    assert again["train_seconds"] == first["train_seconds"]
    assert "re-evaluate the trained run: evaluation settings changed (eval_samples, gap_points)" in (
        out / "runs" / "diag-seed0" / "train.log").read_text()
