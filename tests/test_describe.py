"""The model that ran, described: a user's program by its sites from the trace, a built-in model by its settings."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from elbogap.config import Config
from elbogap.describe import describe_model, model_text
from elbogap.model import VAE
from elbogap.user_model import ProgramModel


def two_site_program(x):
    """A latent-5 code and a 2-D offset per point, decoded by a 7-wide network (not --latent-dim, --hidden-dims)."""
    decoder = pyro.module("decoder", nn.Sequential(nn.Linear(7, 7), nn.Tanh(), nn.Linear(7, x.shape[-1])))
    with pyro.plate("data", len(x)):
        code = pyro.sample("code", dist.Normal(torch.zeros(len(x), 5), 1.0).to_event(1))
        offset = pyro.sample("offset", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(decoder(torch.cat([code, offset], -1)), 1.0).to_event(1), obs=x)


def test_a_users_program_is_described_by_its_latent_sites_and_sizes_not_by_the_settings():
    model = ProgramModel(two_site_program, torch.randn(3, 4), "mine.py:two_site_program")
    record = describe_model(model, Config(model="mine.py:two_site_program", latent_dim=2, hidden_dims=[128]))
    assert record["sites"]["latent"] == {"code": [5], "offset": [2]} and record["sites"]["latent_dim"] == 7
    assert record["parameters"] == 7 * 7 + 7 + 7 * 4 + 4 and "hidden_dims" not in record
    assert model_text(record) == ("your program mine.py:two_site_program: latent sites code (5 per data point), "
                                  "offset (2 per data point); observed obs; 88 parameters")


def test_a_built_in_vae_is_described_by_the_settings_that_built_it():
    model = VAE(64, 3, hidden_dims=[16])
    text = model_text(describe_model(model, Config(latent_dim=3, hidden_dims=[16])))
    assert text.startswith("vae: latent site z (3 per data point); observed x; decoder hidden widths 16 (softplus)")
