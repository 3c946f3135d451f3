"""Programs whose sites do not fit the data or each other are refused in one line before any run."""

import numpy as np
import pytest

PROGRAMS = '''
import pyro
import pyro.distributions as dist
import torch


def per_point(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(x), 4), 1.0).to_event(1), obs=x)


def wide_decoder(x):
    """A decoder written for MNIST: 784 logits for 4-column data."""
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=torch.zeros(len(x), 784)).to_event(1), obs=x)


def too_many_events(x):
    """.to_event(2) inside the data plate: the data set would count once per point."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(x), 4), 1.0).to_event(2), obs=x)


CALLS = [0]


def changing(x):
    """A latent site on every other call."""
    CALLS[0] += 1
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        if CALLS[0] % 2:
            pyro.sample("extra", dist.Normal(torch.zeros(len(x)), 1.0))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(x), 4), 1.0).to_event(1), obs=x)


def shared_guide(x):
    """One z for every point, where the model has one per point."""
    pyro.sample("z", dist.Normal(pyro.param("loc", torch.zeros(2)), 1.0).to_event(1))


def regression(x):
    gain = pyro.sample("gain", dist.LogNormal(0.0, 1.0))
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(gain * (x[:, :3] @ w), 1.0), obs=x[:, 3])


def regression_of_every_column(x):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x[:, :3] @ w, 1.0), obs=x)


def growing(x):
    CALLS[0] += 1
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([CALLS[0]]).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x[:, :1] @ w[:1], 1.0), obs=x[:, 3])


def negative_gain_guide(x):
    """Draws outside the support of the model's positive gain."""
    pyro.sample("gain", dist.Normal(-1.0, 0.1))
    pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))


def guide_without_gain(x):
    pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))


def subsampling(x):
    """A plate that subsamples itself: on the 3 rows of the first trace it takes them all."""
    with pyro.plate("data", len(x), subsample_size=min(8, len(x))) as index:
        z = pyro.sample("z", dist.Normal(torch.zeros(len(index), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(index), 4), 1.0).to_event(1), obs=x[index])


def masked_observation(x):
    """Pyro samples an obs_mask's masked entries as a latent site, 'x_unobserved'."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(len(x), 4), 1.0).to_event(1), obs=x,
                    obs_mask=x[:, 0] > 0)


def subsampling_regression(x):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with pyro.plate("data", len(x), subsample_size=8) as index:
        pyro.sample("y", dist.Normal(x[index, :3] @ w, 1.0), obs=x[index, 3])
'''


@pytest.fixture
def study(tmp_path):
    (tmp_path / "programs.py").write_text(PROGRAMS)
    rows = np.random.default_rng(0).integers(0, 2, size=(30, 4)).astype(float)
    np.savetxt(tmp_path / "data.csv", rows, delimiter=",")
    return tmp_path


@pytest.mark.parametrize(("model", "guide", "message"), [
    ("wide_decoder", "diag", "the site 'x' has a value of shape (3, 4) but a distribution of shape (3, 784) "
                             "(batch (3,) + event (784,))"),
    ("too_many_events", "diag", "the site 'x' has a value of shape (3, 4) but a distribution of shape (3, 3, 4) "
                                "(batch (3,) + event (3, 4)), so its log p would count the value more than once"),
    ("changing", "diag", "trace changes between calls on the same data: site 'extra' appears in one trace only"),
    ("per_point", "shared_guide", "on the draws of the guide {programs}:shared_guide: the site 'z' has a value of "
                                  "shape (2,) but a distribution of shape (3, 2)"),
    ("regression_of_every_column", "auto:AutoNormal", "the site 'y' has a value of shape (30, 4) but a distribution "
                                                      "of shape (30,)"),
    ("growing", "auto:AutoNormal", "trace changes between calls on the same data: site 'w' has shape (1,) then (2,)"),
    ("regression", "negative_gain_guide", "on the draws of the guide {programs}:negative_gain_guide: the site "
                                          "'gain' holds -"),
    ("regression", "guide_without_gain", "does not sample the model's latent site(s) gain"),
    ("masked_observation", "diag", "gives its site 'x' an obs_mask, and Pyro samples the masked entries as a latent "
                                   "site ('x_unobserved')"),
    ("subsampling", "diag", "subsamples its plate 'data' (8 of 24 rows): elbogap feeds it minibatches itself"),
    ("subsampling_regression", "auto:AutoNormal", "subsamples its plate 'data' (8 of 30 rows)"),
])
def test_a_program_whose_sites_do_not_fit_is_refused_before_any_run(elbogap, study, model, guide, message):
    programs = study / "programs.py"
    guide = guide if ":" in guide or guide == "diag" else f"{programs}:{guide}"
    code, error = elbogap("compare", "--model", f"{programs}:{model}", "--guides", guide, "--data",
                          study / "data.csv", "--steps", 5, "--jobs", 1, "--seeds", 0, "--quiet", "--no-figures",
                          "--out", study / "out")
    assert code == 2
    assert error.startswith("elbogap: error: ") and error.count("\n") == 1 and "Traceback" not in error
    assert message.format(programs=programs) in error
    assert not (study / "out").exists()  # refused before any training, and no empty --out left behind


def test_data_outside_the_likelihoods_support_is_named_by_its_value_and_row(elbogap, tmp_path):
    """A tester's Beta-Bernoulli model on a column holding one 2: the line named the support, not the value or row."""
    (tmp_path / "coin.py").write_text("import pyro\nimport pyro.distributions as dist\n\n\ndef model(data):\n"
                                      "    p = pyro.sample('p', dist.Beta(data.new_tensor(2.0), 3.0))\n"
                                      "    with pyro.plate('data', data.shape[0]):\n"
                                      "        pyro.sample('y', dist.Bernoulli(p), obs=data[:, 0])\n")
    np.savetxt(tmp_path / "flips.csv", np.array([0, 1, 1, 2, 0], dtype=float)[:, None], delimiter=",")
    code, error = elbogap("compare", "--model", f"{tmp_path}/coin.py:model", "--data", tmp_path / "flips.csv",
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and error.count("\n") == 1
    assert "the site 'y' holds 2 at index (3,) of its value, outside the support Boolean() of its Bernoulli" in error
    assert not (tmp_path / "out").exists()


def test_a_row_outside_an_event_supports_is_named_by_its_element_and_column(elbogap, tmp_path):
    """A tester's Poisson counts with one -2: the line said "a value of shape (4,) at index (0,)", not the value; and
    where the row was not among the 3 the program was first traced on, a run failed with a traceback."""
    (tmp_path / "counts.py").write_text("import pyro\nimport pyro.distributions as dist\n\n\ndef model(x):\n"
                                        "    with pyro.plate('data', x.shape[0]):\n"
                                        "        rate = pyro.sample('rate', dist.Gamma(x.new_tensor(2.0), 1.0))\n"
                                        "        pyro.sample('x', dist.Poisson(rate[:, None].expand(x.shape))"
                                        ".to_event(1), obs=x)\n")
    np.savetxt(tmp_path / "counts.csv", np.array([[1, -2, 3], [1, 2, 3], [4, 5, 6], [0, 1, 2]]), delimiter=",")
    code, error = elbogap("compare", "--model", f"{tmp_path}/counts.py:model", "--data", tmp_path / "counts.csv",
                          "--out", tmp_path / "out", "--quiet")
    assert code == 2 and error.count("\n") == 1
    assert "the site 'x' holds -2 in column 2 of the row 1, -2, 3, outside the support" in error
    assert not (tmp_path / "out").exists()
    code, error = elbogap("train", "--model", f"{tmp_path}/counts.py:model", "--data", tmp_path / "counts.csv",
                          "--out", tmp_path / "run", "--quiet")
    assert code == 2 and "holds -2 in column 2" in error and not (tmp_path / "run").exists()
