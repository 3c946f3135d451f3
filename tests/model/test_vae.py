import pytest
import torch
from pyro import poutine

from elbogap.model import VAE, build_model


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_model_is_a_pyro_program_with_z_and_x_sites(likelihood):
    model = VAE(6, 3, hidden_dims=(8, 8), activation="tanh", likelihood=likelihood)
    x = torch.rand(4, 6).round()
    trace = poutine.trace(model.model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (4, 3)
    assert trace.nodes["x"]["is_observed"]
    assert trace.nodes["x"]["fn"].event_shape == (6,)
    assert torch.isfinite(trace.log_prob_sum())


@pytest.mark.parametrize("num_data", [10, 100])
def test_data_plate_scales_a_minibatch_to_the_full_data_set(num_data):
    """Inside the plate every site's log-density is multiplied by num_data / batch size."""
    model = VAE(6, 2, hidden_dims=(8,))
    x = torch.rand(5, 6).round()
    z = torch.randn(5, 2)
    conditioned = poutine.condition(model.model, data={"z": z})
    unscaled = poutine.trace(conditioned).get_trace(x).log_prob_sum()
    scaled = poutine.trace(conditioned).get_trace(x, torch.arange(5), num_data).log_prob_sum()
    torch.testing.assert_close(scaled, unscaled * num_data / 5)


def test_unknown_names_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="vae, linear"):
        build_model("resnet", 4, 2)
    with pytest.raises(ValueError, match="gaussian"):
        build_model("linear", 4, 2, likelihood="bernoulli")
