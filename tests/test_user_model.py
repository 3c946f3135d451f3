"""A user's own Pyro model, loaded from a file, trained and evaluated with elbogap's guides."""

import json

import numpy as np
import pytest

from elbogap.cli import main
from elbogap.data import flattened_points
from elbogap.errors import UsageError
from elbogap.user_model import import_target

USER_MODEL = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn

decoder = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 64))


def model(x, index=None, num_data=None):
    pyro.module("my_decoder", decoder)
    with pyro.plate("data", num_data or len(x), subsample=index if index is not None else torch.arange(len(x))):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def plain(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        loc = pyro.param("loc", torch.zeros(64))
        pyro.sample("x", dist.Normal(loc + z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def no_latent(x):
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([64]).to_event(1), obs=x)
'''

QUICK = ["--steps", "30", "--eval-samples", "8", "--quadrature-points", "12", "--iw-samples", "16",
         "--hidden-dims", "16", "--seeds", "0", "--gap-points", "0", "--quiet", "--no-figures", "--train-size", "200",
         "--test-size", "50", "--ais-steps", "20", "--ais-chains", "4", "--leapfrog-steps", "2", "--jobs", "1"]


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    return path


def test_compare_trains_and_evaluates_a_users_model(user_file, tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--model", f"{user_file}:model", "--guides", "diag,iaf", "--out", str(out), *QUICK]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [run["guide"] for run in runs] == ["diag", "iaf"]
    assert runs[0]["test"]["log_px_method"] == "quadrature"  # its latent dimension, 2, was read off the trace


def test_a_model_that_takes_only_x_is_scaled_and_evaluated_by_ais_and_importance_sampling(user_file, tmp_path):
    out = tmp_path / "plain"
    args = ["compare", "--model", f"{user_file}:plain", "--guides", "diag",
            "--out", str(out), *QUICK]
    assert main(args) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["test"]["log_px_method"] == "ais" and run["test"]["log_px_points"] == 50  # all 50 test points
    assert run["test"]["log_px_iwae_samples"] == 16


def test_user_model_mistakes_are_named(user_file, tmp_path):
    with pytest.raises(UsageError, match="has no 'missing';"):
        import_target(f"{user_file}:missing")
    with pytest.raises(UsageError, match=r"has no 'modle' \(did you mean 'model'\?\)"):
        import_target(f"{user_file}:modle")
    with pytest.raises(UsageError, match="does not exist"):
        import_target("nowhere.py:model")
    with pytest.raises(UsageError, match="cannot import"):
        import_target("no_such_package_xyz.module:model")
    assert main(["compare", "--model", f"{user_file}:no_latent", "--out", str(tmp_path / "o"), *QUICK]) == 2


def test_points_of_more_than_one_dimension_are_named_in_the_line_a_wrong_shape_gets(tmp_path, elbogap):
    """A tester's .npy held points of shape (3, 2): the program met rows of 6 numbers, and the line on its site's
    shape did not say why. The same line now says how the file's points were read, and a program that reads them
    as rows is told so once, after the input passed its checks (npz members too, those the loader reads, from their
    headers)."""
    np.save(tmp_path / "points.npy", np.random.default_rng(0).normal(size=(40, 3, 2)).astype(np.float32))
    (tmp_path / "shaped.py").write_text(
        "import pyro, pyro.distributions as dist, torch\n\n\n"
        "def model(x):\n"
        "    with pyro.plate('data', x.shape[0]):\n"
        "        z = pyro.sample('z', dist.Normal(torch.zeros(3, 1), 1.0).to_event(2))\n"
        "        pyro.sample('x', dist.Normal(z.expand(x.shape[0], 3, 2), 1.0).to_event(2), obs=x)\n")
    code, err = elbogap("compare", "--model", tmp_path / "shaped.py:model", "--data", tmp_path / "points.npy",
                        "--out", tmp_path / "o", *QUICK)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "value of shape (3, 6)" in err and "points.npy holds data points of shape (3, 2)" in err
    assert "data.reshape(-1, 3, 2)" in err and not (tmp_path / "o").exists()
    np.savez(tmp_path / "split.npz", train=np.zeros((5, 2, 2)), test=np.zeros((3, 2, 2)))
    assert "split.npz holds data points of shape (2, 2); each is read as a row of 4 numbers" in flattened_points(
        str(tmp_path / "split.npz"))
    np.savez(tmp_path / "aux.npz", train=np.zeros((5, 4)), test=np.zeros((3, 4)), images=np.zeros((5, 2, 2)))
    assert flattened_points(str(tmp_path / "aux.npz")) is None  # the loader reads train and test alone
    np.save(tmp_path / "rows.npy", np.zeros((5, 4)))
    assert flattened_points(str(tmp_path / "rows.npy")) is None and flattened_points("digits") is None
