"""The gradient's signal-to-noise: against closed forms, per group, and invisible to the training it measures."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from elbogap.config import Config
from elbogap.errors import UsageError
from elbogap.factory import load_dataset
from elbogap.guides import build_guide
from elbogap.inference import Trainer
from elbogap.inference.snr import gradient_snr, parameter_groups, signal_to_noise, summarize
from elbogap.model import VAE
from elbogap.runs import run_one
from tests.inference.test_trainer import fresh

X = torch.tensor(1.5)


def model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def scaled_model(x):
    weight = pyro.param("weight", torch.tensor(0.8))
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(weight * z, 1.0), obs=x)


def gaussian_guide(x):
    loc = pyro.param("loc", torch.tensor(0.3))
    log_scale = pyro.param("log_scale", torch.tensor(math.log(0.5)))
    pyro.sample("z", dist.Normal(loc, log_scale.exp()))


def point_guide(x):
    pyro.param("unused", torch.zeros(3))  # registered, never reached by the loss: its gradient is zero
    pyro.sample("z", dist.Delta(pyro.param("loc", torch.tensor(0.3))))


def test_the_ratio_of_a_known_gaussian_gradient_matches_its_closed_form():
    r"""z = m + s e, e ~ N(0, 1): the one-draw loss log q - log p = z^2/2 + (x - z)^2/2 - e^2/2 - log s (+ const)
    has the gradients 2z - x in m (mean 2m - x, sd 2s) and (2z - x) s e - 1 in log s (mean 2s^2 - 1, sd
    sqrt((2m - x)^2 s^2 + 8 s^4))."""
    m, s, draws = 0.3, 0.5, 2000
    (result,) = gradient_snr(Trace_ELBO(), model, gaussian_guide, (X,), draws=draws, seed=0).values()
    expected = torch.tensor([abs(2 * m - X) / (2 * s),
                             abs(2 * s**2 - 1) / math.sqrt((2 * m - X) ** 2 * s**2 + 8 * s**4)])
    # the ratio's standard error is about sqrt((1 + SNR^2 / 2) / M) = 0.027 here: four of them
    assert result.per_entry == pytest.approx(expected, abs=0.1)
    assert result.entries == 2
    assert result.median == pytest.approx(float(result.per_entry.mean()))  # two entries: the middle of them
    assert result.mean == pytest.approx(result.median)


def test_a_gradient_without_noise_has_an_infinite_ratio_and_unreached_entries_are_left_out():
    (result,) = gradient_snr(Trace_ELBO(), model, point_guide, (X,), draws=4).values()
    assert result.entries == 1 and result.median == result.mean == math.inf
    assert result.per_entry[:3].isnan().all() and result.per_entry[3] == math.inf  # "unused" comes first


def test_the_ratio_is_the_absolute_mean_over_the_standard_deviation_and_the_median_of_the_entries():
    grads = torch.tensor([[1.0, 0.0, 2.0, -1.0], [3.0, 0.0, 2.0, 1.0], [2.0, 0.0, 2.0, 3.0]])
    ratio = signal_to_noise(grads)
    assert ratio[0] == pytest.approx(2.0) and ratio[1].isnan() and ratio[2] == math.inf
    assert ratio[3] == pytest.approx(1.0 / 2.0)
    summary = summarize(torch.tensor([3.0, float("nan"), 1.0, 2.0, 10.0]))
    assert (summary.median, summary.mean, summary.entries) == (2.5, 4.0, 4)


def test_the_groups_are_the_guides_and_the_models_parameters_and_a_fixed_model_has_none():
    groups = parameter_groups(scaled_model, gaussian_guide, (X,))
    assert list(groups) == ["encoder", "decoder"]
    store = pyro.get_param_store()
    assert groups["decoder"] == [store["weight"].unconstrained()]
    assert {id(p) for p in groups["encoder"]} == {id(store[name].unconstrained()) for name in ("loc", "log_scale")}
    fixed = poutine.block(scaled_model, hide_types=["param"])
    assert list(parameter_groups(fixed, gaussian_guide, (X,))) == ["encoder"]
    assert set(gradient_snr(Trace_ELBO(), fixed, gaussian_guide, (X,), draws=3)) == {"encoder"}


def test_measuring_leaves_gradients_and_the_random_stream_as_they_were():
    gradient_snr(Trace_ELBO(), scaled_model, gaussian_guide, (X,), draws=2)  # registers the parameters
    loc = pyro.get_param_store()["loc"].unconstrained()
    loc.grad = torch.tensor(7.0)
    state = torch.get_rng_state()
    gradient_snr(Trace_ELBO(), scaled_model, gaussian_guide, (X,), draws=5)
    assert torch.equal(torch.get_rng_state(), state) and loc.grad == 7.0
    assert pyro.get_param_store()["weight"].unconstrained().grad is None


def test_fewer_than_two_draws_are_refused():
    with pytest.raises(UsageError, match="at least 2 draws"):
        gradient_snr(Trace_ELBO(), model, gaussian_guide, (X,), draws=1)
    for draws, message in ((-1, "--snr-draws must be at least 0"), (1, "--snr-draws 1 gives no standard deviation")):
        with pytest.raises(UsageError, match=message):
            Config(snr_draws=draws).validate()


@pytest.mark.parametrize(("objective", "particles", "freeze_model"), [
    ("elbo", 1, False), ("elbo", 1, True), ("meanfield", 1, False), ("iwae", 3, False)])
def test_a_trainer_that_measures_trains_exactly_as_one_that_does_not(objective, particles, freeze_model):
    x = load_dataset(Config(train_size=100)).train

    def losses(measure: bool) -> list[float]:
        model, guide = fresh(name="diag")
        trainer = Trainer(model, guide, x, batch_size=32, lr=1e-2, objective=objective, num_particles=particles,
                          seed=1, freeze_model=freeze_model)
        for _ in range(6):
            trainer.step()
            if measure:
                snr = trainer.gradient_snr(draws=3)
                assert set(snr) == ({"encoder"} if freeze_model else {"encoder", "decoder"})
        return trainer.losses

    assert losses(measure=True) == losses(measure=False)


def test_the_batch_is_fixed_by_the_seed_and_the_measurement_is_reproducible():
    x = load_dataset(Config(train_size=100)).train
    model, guide = fresh(name="diag")
    trainer = Trainer(model, guide, x, batch_size=32, seed=1)
    rows, index = trainer.snr_batch()
    assert len(index) == 32 and torch.equal(rows, x[index]) and torch.equal(trainer.snr_batch()[1], index)
    first, again = trainer.gradient_snr(4), trainer.gradient_snr(4)  # same step, same draws
    assert all(torch.allclose(first[name].per_entry, again[name].per_entry, rtol=0, atol=0, equal_nan=True)
               for name in first)
    other = Trainer(*fresh(name="diag"), x, batch_size=32, seed=2)
    assert not torch.equal(other.snr_batch()[1], index)


def test_a_run_with_the_measurement_trains_and_evaluates_as_one_without(tmp_path):
    config = Config(train_size=60, test_size=20, hidden_dims=[8], steps=6, eval_every=3, curve_points=8, gap_points=0,
                    eval_samples=8, quadrature_points=8)
    data = load_dataset(config)
    without = run_one(config.replace(snr_draws=0), data, "diag", 0, tmp_path / "off")
    measured = run_one(config.replace(snr_draws=4), data, "diag", 0, tmp_path / "on")
    assert measured["curve"] == without["curve"] and measured["test"] == without["test"]
    assert [point["step"] for point in measured["curve_eval"]] == [3, 6]
    for point, plain in zip(measured["curve_eval"], without["curve_eval"], strict=True):
        assert {key: value for key, value in point.items() if not key.startswith("snr_")} == plain
        assert point["snr_encoder"] > 0 and point["snr_decoder"] > 0 and point["snr_draws"] == 4
    assert {key: measured[key] for key in measured if key.startswith("snr_")} == {
        key: value for key, value in measured["curve_eval"][-1].items() if key.startswith("snr_")}
    assert measured["snr_batch_size"] == 60  # the whole training split: it is smaller than a batch
    assert "gradient_snr" in measured["seconds"] and not any(key.startswith("snr_") for key in without)


def test_a_vae_guide_counts_only_its_reached_entries():
    """A per-datapoint guide's rows outside the batch get no gradient, so they are not counted."""
    x = load_dataset(Config(train_size=100)).train
    pyro.clear_param_store()
    model = VAE(64, 2, hidden_dims=(8,))
    guide = build_guide("local", model, 100)
    trainer = Trainer(model, guide, x, batch_size=32, seed=0, jit=False)
    encoder = trainer.gradient_snr(3)["encoder"]
    assert encoder.entries == 32 * 4 and len(encoder.per_entry) == 100 * 4  # a mean and a scale per latent
