"""AIS's start at each point's posterior modes: the exact posterior where it is Gaussian, every mode where there are
several, and AIS from it far less biased than from the prior at the same temperatures."""


import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from elbogap.inference.ais import AISSettings, AnnealingPath, ais_log_px
from elbogap.inference.laplace import TAIL_SHARE, TailedGaussian, laplace_start
from elbogap.model.target import PointsTarget
from elbogap.user_model import load_user_model
from tests.conftest import draw_linear_data, wide_linear_model


def test_on_a_gaussian_posterior_the_start_is_the_posterior():
    """Every climb ends on the one mode, so the mixture is one component: the exact posterior."""
    model = wide_linear_model(8, 12)
    x = draw_linear_data(model, 10)
    start, posterior = laplace_start(PointsTarget(model, x)), model.posterior(x)
    assert start.batch_shape == (10,) and start.event_shape == (8,)
    assert start.mixture_distribution.probs.shape[-1] == 1
    component = start.component_distribution
    assert float((component.loc[:, 0] - posterior.loc).abs().max()) < 0.005  # the annealing corrects the rest
    covariance = component.scale_tril[:, 0] @ component.scale_tril[:, 0].transpose(-1, -2)
    assert torch.allclose(covariance, posterior.covariance_matrix, atol=1e-6)
    diverged = torch.full((2, 10, 8), float("nan"), dtype=x.dtype)  # a leapfrog step that overflowed
    assert bool(start.log_prob(diverged).isnan().all())  # scored (and rejected by HMC), not refused with an error


def squares_program(x):
    """x ~ N((z * z) A^T, 0.3^2): the posterior of z is symmetric under each coordinate's sign, four modes."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal((z * z) @ SQUARES.T.to(x), 0.3).to_event(1), obs=x)


SQUARES = torch.tensor([[1.0, 0.3], [0.2, 1.0], [0.5, 0.5]])


def squares_data(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` points drawn from the program, and the latents that made them."""
    z = torch.randn(count, 2, generator=torch.Generator().manual_seed(1))
    return (z * z) @ SQUARES.T + 0.3 * torch.randn(count, 3, generator=torch.Generator().manual_seed(2)), z


def test_where_the_posterior_has_four_modes_the_start_weighs_all_four():
    """Points made by latents far from both axes: four modes of equal mass, one per quadrant; one Gaussian at one mode
    would miss three quarters of it."""
    x, z = squares_data(100)
    x = x[z.abs().min(-1).values > 0.8][:6]
    start = laplace_start(PointsTarget(load_user_model(f"{__file__}:squares_program", x), x))
    weights, modes = start.mixture_distribution.probs, start.component_distribution.loc
    assert weights.shape == (6, 4)
    assert torch.allclose(weights, torch.full_like(weights, 0.25), atol=0.01)
    quadrants = {tuple(q) for q in modes.sign().flatten(0, 1).int().tolist()}
    assert quadrants == {(1, 1), (1, -1), (-1, 1), (-1, -1)} and len(modes.abs().unique(dim=1)) == 6


def test_ais_from_the_modes_finds_every_modes_mass():
    """20 points, AIS at its defaults' chains and 100 temperatures, against a 401^2 grid. From one mode the split
    mean read 0.55 nats low per point (up to log 4 where HMC never crossed); from the mixture it is within its error."""
    x, _ = squares_data(20)
    model = load_user_model(f"{__file__}:squares_program", x)
    grid = torch.linspace(-6, 6, 401, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    log_joint = (dist.Normal(0.0, 1.0).log_prob(z).sum(-1)[:, None]
                 + dist.Normal(((z * z) @ SQUARES.T.double())[:, None], 0.3).log_prob(x.double()).sum(-1))
    exact = torch.logsumexp(log_joint, 0) + 2 * torch.log(grid[1] - grid[0])
    torch.manual_seed(0)
    ais = ais_log_px(model, x, AISSettings(steps=100, init="laplace"))
    error, stderr = float((ais.log_px - exact).mean()), float(ais.stderr.pow(2).sum().sqrt()) / len(x)
    assert abs(error) < 3 * stderr + 0.005 and stderr < 0.15  # well inside the 0.55 nats one mode read low


def test_ais_from_the_mode_is_unbiased_where_ais_from_the_prior_is_not_at_the_same_temperatures():
    """8 latents, 20 points, 50 temperatures: from the prior AIS reads about 0.9 nats low per point (0.38 s.e.);
    from the mode the weights are near constant and the estimate is the exact log p(x)."""
    model = wide_linear_model(8, 12)
    x = draw_linear_data(model, 20)
    exact = model.log_px(x)
    torch.manual_seed(0)
    prior = ais_log_px(model, x, AISSettings(steps=50, chains=16, init="prior"))
    torch.manual_seed(0)
    mode = ais_log_px(model, x, AISSettings(steps=50, chains=16, init="laplace"))
    assert float((prior.log_px - exact).mean()) < -0.3
    assert abs(float((mode.log_px - exact).mean())) < 1e-3 and float(mode.stderr.max()) < 1e-2


def cauchy_program(x):
    """z ~ Cauchy(0, 1), five readings x ~ N(z, 0.5^2): a row far out has its posterior mode there, however far."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.StudentT(x.new_tensor(1.0), 0.0, 1.0))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), 0.5).to_event(1), obs=x)


def test_the_climb_reaches_a_mode_far_out_in_a_heavy_tailed_prior():
    """A tester's rows 60, 300 and 1,826 units out in a Cauchy prior: Adam's 400 steps of about 0.05 each ended at most
    39 units out, and AIS from there read -57,264 nats where the truth is -18.10. Newton steps after Adam's reach each
    mode, and AIS from the start agrees with a grid's integral within its error."""
    x = (torch.tensor([0.3, -60.0, 300.0, 1826.0])[:, None]
         + 0.5 * torch.randn(4, 5, generator=torch.Generator().manual_seed(0)))
    start = laplace_start(PointsTarget(load_user_model(f"{__file__}:cauchy_program", x), x))
    modes = start.component_distribution.loc[:, 0, 0]
    assert torch.allclose(modes, x.mean(-1), atol=0.05)  # the likelihood dominates: the mode sits at the rows' mean
    grid = torch.linspace(-100, 2000, 2_100_001, dtype=torch.float64)
    # the five readings' likelihood is their mean's, N(mean; z, 0.5^2 / 5), times a factor free of z: summed over
    # the readings at the mean (and less the mean's own density there), one log-density per grid point and row
    readings = x.double()
    mean, sd = readings.mean(-1), 0.5 / math.sqrt(readings.shape[-1])
    rest = dist.Normal(mean[:, None], 0.5).log_prob(readings).sum(-1) - dist.Normal(mean, sd).log_prob(mean)
    log_joint = dist.Cauchy(0.0, 1.0).log_prob(grid)[:, None] + dist.Normal(grid[:, None], sd).log_prob(mean) + rest
    exact = torch.logsumexp(log_joint, 0) + torch.log(grid[1] - grid[0])
    torch.manual_seed(0)
    ais = ais_log_px(load_user_model(f"{__file__}:cauchy_program", x), x, AISSettings(steps=100, chains=8,
                                                                                       init="laplace"))
    assert ((ais.log_px - exact).abs() < 4 * ais.stderr + 0.01).all()


def saturating_program(x):
    """z ~ StudentT(3) in 3-D, x ~ N(tanh(z W^T), 0.15^2): where tanh saturates the likelihood is flat, and the
    posterior keeps the prior's polynomial tails."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.StudentT(3.0, x.new_zeros(x.shape[0], 3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(torch.tanh(z @ SATURATING.T.to(x)), 0.15).to_event(1), obs=x)


SATURATING = 1.5 * torch.randn(5, 3, generator=torch.Generator().manual_seed(2))


def test_a_chain_deep_in_the_posteriors_tails_gains_little_weight():
    """An outside tester's StudentT program read log p(x) = 1.1e8 ± 1.0e8 per point (truth -2.04): one chain went
    deep into the tails, where a Gaussian start's log density falls as z^2 and the posterior's as log z, and came
    back with a log-weight of 1.1e10. What the path adds to a chain's log-weight at z, log p(x, z) - log r(z), now
    grows as log z (the start's Student-t share), where from the Gaussians alone it grows as z^2."""
    x = torch.tanh(torch.randn(4, 3, generator=torch.Generator().manual_seed(3)) @ SATURATING.T)
    target = PointsTarget(load_user_model(f"{__file__}:saturating_program", x), x)
    start = laplace_start(target)
    component = start.component_distribution
    gaussian = dist.MixtureSameFamily(start.mixture_distribution, dist.MultivariateNormal(
        component.loc, scale_tril=component.scale_tril, validate_args=False))
    gains = {}
    for name, r in (("start", start), ("gaussian", gaussian)):
        for distance in (300.0, 3000.0):
            values, _ = AnnealingPath(target, r).parts((component.loc[:, 0] + distance)[None])
            log_start, log_prior, log_lik = values
            gains[name, distance] = float((log_prior + log_lik - log_start).max())
    assert gains["start", 3000.0] - gains["start", 300.0] < 30  # log 10 per power of the distance, a few times
    assert gains["gaussian", 3000.0] > 50 * gains["gaussian", 300.0] > 1e6


def test_the_starts_tails_are_a_student_t_share_of_its_mass():
    start = TailedGaussian(torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3))
    draws = start.expand((200_000, 2)).sample()
    assert draws.shape == (200_000, 2, 3) and abs(float(draws.var()) - 1.0) < 0.05  # the Gaussian's bulk
    far = torch.tensor([[40.0, 0.0, 0.0]])
    assert float(start.log_prob(far)[0]) == pytest.approx(float(
        dist.MultivariateStudentT(3.0, torch.zeros(3), torch.eye(3)).log_prob(far)[0]) + math.log(TAIL_SHARE), abs=1e-4)
