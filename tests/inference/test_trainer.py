"""The Trainer's schedule, data order and saved state."""

import pyro
import pytest
import torch
from pyro import poutine

from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.data import load_data
from elbogap.guides import build_guide
from elbogap.inference import KLWeight, Trainer
from elbogap.model import VAE


@pytest.fixture(scope="module")
def x():
    return load_data("digits").train[:200]


def fresh(seed=0, name="iaf"):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = VAE(64, 2, hidden_dims=(16,))
    return model, build_guide(name, model, 200, hidden_dims=(16,))


def test_resuming_from_a_saved_state_continues_exactly(x, tmp_path):
    model, guide = fresh()
    straight = Trainer(model, guide, x, batch_size=64, lr=1e-2, seed=3, lr_decay=0.99)
    straight.run(25)
    expected = {k: v.clone() for k, v in guide.state_dict().items()}

    model, guide = fresh()
    first = Trainer(model, guide, x, batch_size=64, lr=1e-2, seed=3, lr_decay=0.99)
    first.run(11)  # stops mid-epoch (4 batches per epoch)
    save_checkpoint(tmp_path / "state.pt", {"trainer": first.state_dict()})

    model, guide = fresh(seed=99)  # different initial weights and RNG: everything must come from the file
    second = Trainer(model, guide, x, batch_size=64, lr=1e-2, seed=3, lr_decay=0.99)
    second.load_state_dict(load_checkpoint(tmp_path / "state.pt")["trainer"])
    second.run(25)
    assert second.losses == straight.losses
    for key, value in guide.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_every_epoch_visits_every_point_once(x):
    model, guide = fresh(name="diag")
    trainer = Trainer(model, guide, x, batch_size=64, seed=0)
    seen = torch.cat([trainer.next_batch()[1] for _ in range(4)])
    assert sorted(seen.tolist()) == list(range(200))
    assert not torch.equal(torch.cat([trainer.next_batch()[1] for _ in range(4)]), seen)


def test_dynamic_binarization_draws_fresh_pixels_every_epoch(x):
    grey = x * 0.5 + 0.25
    model, guide = fresh(name="diag")
    trainer = Trainer(model, guide, grey, batch_size=200, dynamic_binarize=True)
    first, second = trainer.next_batch()[0], trainer.next_batch()[0]
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)


def test_learning_rate_decays_by_the_factor_per_step(x):
    model, guide = fresh(name="diag")
    trainer = Trainer(model, guide, x, batch_size=50, lr=0.1, lr_decay=0.9)
    trainer.run(5)
    lrs = trainer.svi.lrs
    assert lrs == pytest.approx([0.1 * 0.9**5] * len(lrs))


def test_kl_weight_scales_only_the_latent_site(x):
    """With beta = 0 the bound is the reconstruction term alone; with beta = 1 it is the ELBO."""
    model, guide = fresh(name="diag")
    batch = x[:10]
    guide_trace = poutine.trace(guide.guide).get_trace(batch)
    replayed = poutine.replay(model.model, trace=guide_trace)
    for beta in (0.0, 0.3, 1.0):
        weight = KLWeight(beta)
        model_trace = poutine.trace(weight(replayed)).get_trace(batch)
        scaled_guide = poutine.trace(weight(poutine.replay(guide.guide, trace=guide_trace))).get_trace(batch)
        elbo = model_trace.log_prob_sum() - scaled_guide.log_prob_sum()
        z = guide_trace.nodes["z"]
        recon = model_trace.nodes["x"]["fn"].log_prob(batch).sum()
        kl = (z["fn"].log_prob(z["value"]) - model_trace.nodes["z"]["fn"].log_prob(z["value"])).sum()
        torch.testing.assert_close(elbo, recon - beta * kl)


def test_kl_warmup_rises_linearly_to_one(x):
    model, guide = fresh(name="diag")
    trainer = Trainer(model, guide, x, batch_size=100, kl_warmup_steps=4)
    betas = []
    for _ in range(6):
        trainer.step()
        betas.append(trainer.kl_weight.beta)
    assert betas == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
