import pytest
import torch

from elbogap.errors import UsageError
from elbogap.guides import build_guide
from elbogap.inference import evaluate, make_objective, train
from elbogap.model import VAE
from tests.conftest import optimal_diag_guide


def mean_loss(objective, model, guide, x, repeats=200):
    losses = torch.tensor([objective.loss(model.model, guide.guide, x) for _ in range(repeats)])
    return losses.mean() / len(x), losses.std() / len(x) / repeats**0.5


@pytest.mark.parametrize(("name", "particles"), [("elbo", 1), ("meanfield", 1), ("iwae", 10)])
def test_training_objectives_estimate_their_bounds(name, particles, linear_model, linear_data):
    """Pyro's losses agree with elbogap's evaluation of the same bound (ELBO, or IWAE with K=10)."""
    guide = optimal_diag_guide(linear_model, scale_factor=1.5)
    loss, loss_stderr = mean_loss(make_objective(name, particles), linear_model, guide, linear_data)
    torch.manual_seed(0)
    if name == "iwae":  # elbogap's own K=10 estimate, repeated for a precise mean
        repeats = torch.stack([
            evaluate(linear_model, guide, linear_data, iw_samples=10, elbo_samples=1,
                     log_px_method="iwae").per_point["log_px"].mean() for _ in range(50)])
        bound, bound_stderr = repeats.mean(), repeats.std() / 50**0.5
    else:
        metrics = evaluate(linear_model, guide, linear_data, elbo_samples=2000).metrics
        bound, bound_stderr = metrics["elbo"], metrics["elbo_stderr"]
    assert -loss == pytest.approx(float(bound), abs=4 * float((loss_stderr**2 + bound_stderr**2) ** 0.5))


def test_importance_weighted_bound_is_tighter_than_the_elbo(linear_model, linear_data):
    guide = optimal_diag_guide(linear_model, scale_factor=1.5)
    elbo, elbo_se = mean_loss(make_objective("elbo"), linear_model, guide, linear_data)
    iwae, iwae_se = mean_loss(make_objective("iwae", 10), linear_model, guide, linear_data)
    exact = float(linear_model.log_px(linear_data).mean())
    assert -elbo < -iwae - 4 * (elbo_se**2 + iwae_se**2) ** 0.5
    assert -iwae < exact + 4 * iwae_se


@pytest.mark.parametrize("objective", ["meanfield", "iwae"])
@pytest.mark.parametrize("name", ["diag", "mixture", "iaf", "planar", "local"])
def test_vectorized_objectives_train_every_kind_of_guide(objective, name):
    x = torch.rand(64, 10).round()
    model = VAE(10, 2, hidden_dims=(16,))
    guide = build_guide(name, model, len(x), hidden_dims=(16,))
    if (name, objective) == ("mixture", "iwae"):  # the mixture trains on its ELBO summed over components
        with pytest.raises(UsageError, match="summed over components"):
            train(model, guide, x, steps=1, objective=objective, num_particles=4)
        return
    losses = train(model, guide, x, steps=60, batch_size=32, lr=1e-2, objective=objective,
                   num_particles=4).losses
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) < sum(losses[:10])


def test_unknown_objective_is_named():
    with pytest.raises(ValueError, match="elbo, meanfield, iwae"):
        make_objective("kl")
