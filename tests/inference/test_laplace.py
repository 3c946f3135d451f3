"""AIS's start at each point's posterior modes: the exact posterior where it is Gaussian, every mode where there are
several, and AIS from it far less biased than from the prior at the same temperatures."""

import pyro
import pyro.distributions as dist
import torch

from elbogap.inference.ais import AISSettings, ais_log_px
from elbogap.inference.laplace import laplace_start
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
    assert torch.allclose(component.covariance_matrix[:, 0], posterior.covariance_matrix, atol=1e-6)
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
    mean read 0.26 nats low per point (log 4 where HMC never crossed); from the mixture it is within its error."""
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
    assert abs(error) < 3 * stderr + 0.005 and stderr < 0.05


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
