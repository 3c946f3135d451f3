import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from elbogap.errors import UsageError
from elbogap.global_latents.model import GlobalLatentModel, is_global_model
from tests.global_latents.truth import mixed_data, mixed_model, scale_data, scale_model


def test_sites_are_sorted_into_global_and_per_point_from_the_trace():
    data = mixed_data(12)
    model = GlobalLatentModel(mixed_model(), data, "mixed")
    assert model.global_sites == ["mu"] and model.local_sites == ["z"]
    assert model.latent_dim == 13 and model.num_data == 12
    assert is_global_model(poutine.trace(model.full_program).get_trace(data), data)


def test_log_density_is_the_model_joint_with_the_jacobian_of_the_constrained_scale():
    data = scale_data(20)
    model = GlobalLatentModel(scale_model(), data, "scale")
    z = torch.randn(5, model.latent_dim)
    log_prior, log_lik = model.log_density(z, data)
    for k in range(5):
        values, log_det = model.unpack(z[k])
        trace = poutine.trace(poutine.condition(model.full_program, data=values)).get_trace(data)
        trace.compute_log_prob()
        latent = sum(trace.nodes[name]["log_prob_sum"] for name in model.latent_sites)
        observed = sum(trace.nodes[name]["log_prob_sum"] for name in model.observed_sites)
        assert torch.allclose(log_prior[k], latent + log_det, atol=1e-4)
        assert torch.allclose(log_lik[k], observed, atol=1e-3)
    assert "tau" in model.transforms and model.transforms["tau"].codomain is not None


def reshaping_model(data):
    """Indexes its weights one by one: not written for vmap's batching, so the density falls back to a loop."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    mean = data[:, 0] * float(w[0]) + w[1]  # float() breaks under vmap
    with pyro.plate("data", len(data)):
        pyro.sample("y", dist.Normal(mean, 1.0), obs=data[:, 1])


def test_a_program_vmap_cannot_batch_is_evaluated_one_chain_at_a_time():
    data = torch.randn(10, 2)
    model = GlobalLatentModel(reshaping_model, data, "reshaping")
    z = torch.randn(3, 2)
    log_prior, log_lik = model.log_density(z, data)
    assert model.vectorized is False
    expected = torch.stack([dist.Normal(data[:, 0] * z[k, 0] + z[k, 1], 1.0).log_prob(data[:, 1]).sum()
                            for k in range(3)])
    assert torch.allclose(log_lik, expected, atol=1e-4)


def test_simulated_data_sets_replace_the_observed_columns_only():
    data = torch.cat([torch.randn(15, 1), torch.ones(15, 1)], 1)

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("y", dist.Normal(mu, data[:, 1]), obs=data[:, 0])

    simulated, z = GlobalLatentModel(model, data, "m").simulate(data)
    assert torch.equal(simulated[:, 1], data[:, 1]) and not torch.equal(simulated[:, 0], data[:, 0])
    assert z.shape == (1,)


def discrete_model(data):
    k = pyro.sample("k", dist.Categorical(torch.ones(3) / 3))
    with pyro.plate("data", len(data)):
        pyro.sample("y", dist.Normal(k.float(), 1.0), obs=data[:, 0])


@pyro.infer.config_enumerate
def enumerated_model(data):  # the fix the refusal once suggested, refused the same way
    discrete_model(data)


def model_with_covariates(data, covariates):
    pyro.sample("y", dist.Normal(0.0, 1.0), obs=data)


def self_subsampling_model(data):  # a tester's: its log joint is a random estimate of the data set's
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data), subsample_size=2) as index:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=data[index, 0])


@pytest.mark.parametrize("program, message", [
    (discrete_model, "discrete latent site 'k'"),
    (enumerated_model, "discrete latent site 'k'; elbogap's estimators need continuous latents and do not enumerate "
                       "(config_enumerate is refused too)"),
    (model_with_covariates, "needs argument(s) covariates"),
    (self_subsampling_model, "subsamples its plate 'data' by itself (2 of 6 at a time)"),
])
def test_programs_elbogap_cannot_judge_are_refused_in_one_line(program, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        GlobalLatentModel(program, torch.randn(6, 1), "program")
    assert "\n" not in str(error.value)


def test_one_row_is_a_data_set_for_global_latents_and_no_split_for_per_point_ones(tmp_path):
    """A tester's one-observation data set under a Normal-Inverse-Gamma model was refused as too small "for a train/
    test split", which a model with global latents does not make: D is that one row. A per-point model still needs
    two rows to split."""
    from elbogap.config import Config
    from elbogap.factory import load_dataset

    (tmp_path / "one.csv").write_text("5\n")
    (tmp_path / "models.py").write_text(
        "import pyro, pyro.distributions as dist\n\n\n"
        "def located(data):\n"
        "    location = pyro.sample('location', dist.Normal(data.new_tensor(0.0), 1.0))\n"
        "    with pyro.plate('data', data.shape[0]):\n"
        "        pyro.sample('x', dist.Normal(location, 1.0), obs=data[:, 0])\n\n\n"
        "def per_point(data):\n"
        "    with pyro.plate('data', data.shape[0]):\n"
        "        z = pyro.sample('z', dist.Normal(data.new_tensor(0.0), 1.0))\n"
        "        pyro.sample('x', dist.Normal(z, 1.0), obs=data[:, 0])\n")
    data = load_dataset(Config(model=f"{tmp_path / 'models.py'}:located", data=str(tmp_path / "one.csv")))
    assert data.kind == "global" and data.train.tolist() == [[5.0]] and data.name == "one.csv"
    with pytest.raises(UsageError, match="1 row.*at least 2 are needed for a train/test split"):
        load_dataset(Config(model=f"{tmp_path / 'models.py'}:per_point", data=str(tmp_path / "one.csv")))
