"""A model as a target: per-point units and the whole data set as one unit are two views of one log joint."""

import pyro
import pyro.distributions as dist
import torch

from elbogap.estimators import EstimatorSettings, estimators
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.model.target import DataSetTarget, PointsTarget
from elbogap.user_model import ProgramModel
from tests.conftest import draw_linear_data, known_linear_model


def as_program(linear):
    """The linear-Gaussian model written as a user's program over the whole data set, its z inside the data plate."""
    weight, bias, sigma = linear.weight.detach(), linear.bias.detach(), linear.sigma.detach()

    def program(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(linear.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T + bias, sigma).to_event(1), obs=data)

    return program


def test_the_data_sets_log_joint_is_the_sum_of_its_points_and_the_points_evidence_is_exact():
    linear = known_linear_model()
    x = draw_linear_data(linear, 6)
    points = PointsTarget(linear, x)
    whole = DataSetTarget(GlobalLatentModel(as_program(linear), x, "linear"), x)
    assert (points.batch_size, whole.batch_size) == (6, 1)
    z = points.start(3)  # (3 draws, 6 points, 2 latents); the data set's latents are the points' in row order
    assert z.shape == (3, 6, 2) and whole.start(3).shape == (3, 1, 12)
    per_point = [part.sum(-1) for part in points.log_joint(z)]
    joint = [part[:, 0] for part in whole.log_joint(z.reshape(3, 1, 12))]
    for mine, theirs in zip(per_point, joint, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-9)
    exact = estimators()["exact"].estimate(points, EstimatorSettings())
    assert torch.allclose(exact.values, linear.log_px(x)) and exact.values.shape == (6,)


def test_selecting_units_keeps_their_rows_and_a_data_set_is_one_unit():
    linear = known_linear_model()
    x = draw_linear_data(linear, 5)
    chosen = PointsTarget(linear, x).select(torch.tensor([1, 3]))
    assert torch.equal(chosen.x, x[[1, 3]]) and chosen.batch_size == 2
    whole = DataSetTarget(GlobalLatentModel(as_program(linear), x, "linear"), x)
    assert whole.select(torch.tensor([0])) is whole


def test_prior_draws_of_points_have_the_priors_moments():
    linear = known_linear_model()
    pyro.set_rng_seed(0)
    z = PointsTarget(linear, draw_linear_data(linear, 4)).start(20000)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02  # 8e4 N(0, 1) draws: s.e. 0.0035



def summed(data):
    """Two latents per row, their sum behind each value; its tensors follow the data's dtype."""
    with pyro.plate("data", data.shape[0]):
        z = pyro.sample("z", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=data)


def located(data):
    """One global location behind every value."""
    location = pyro.sample("location", dist.Normal(data.new_zeros(()), 1.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", dist.Normal(location, 1.0), obs=data[:, 0])


def test_a_target_is_scored_in_float64_where_its_model_follows_its_datas_dtype_and_not_where_it_cannot():
    """A program whose tensors follow its data is scored in float64 (a grid's sum needs it); a model whose float32
    weights refuse float64 inputs (a decoder's) stays as it is."""
    x = torch.randn(5, 1)
    for target in (PointsTarget(ProgramModel(summed, x[:3]), x), DataSetTarget(GlobalLatentModel(located, x, "g"), x)):
        precise = target.in_float64()
        assert precise.dtype == torch.float64 and all(part.dtype == torch.float64
                                                      for part in precise.log_joint(precise.start(2)))
    decoder = torch.nn.Linear(2, 3)

    def decoded(data):
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=data)

    stays = PointsTarget(ProgramModel(decoded, torch.zeros(3, 3)), torch.zeros(5, 3))
    assert stays.in_float64() is stays
