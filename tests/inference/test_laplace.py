"""AIS's start at each point's posterior mode: the exact posterior where it is Gaussian, and AIS from it far less
biased than from the prior at the same temperatures."""

import torch

from elbogap.inference.ais import AISSettings, ais_log_px
from elbogap.inference.laplace import laplace_start
from elbogap.model.target import PointsTarget
from tests.conftest import draw_linear_data, wide_linear_model


def test_on_a_gaussian_posterior_the_start_is_the_posterior():
    model = wide_linear_model(8, 12)
    x = draw_linear_data(model, 10)
    start, posterior = laplace_start(PointsTarget(model, x)), model.posterior(x)
    assert start.batch_shape == (10,) and start.event_shape == (8,)
    assert float((start.loc - posterior.loc).abs().max()) < 0.02  # the mode by Adam; the annealing corrects the rest
    assert torch.allclose(start.covariance_matrix, posterior.covariance_matrix, atol=1e-6)
    diverged = torch.full((2, 10, 8), float("nan"), dtype=start.loc.dtype)  # a leapfrog step that overflowed
    assert bool(start.log_prob(diverged).isnan().all())  # scored (and rejected by HMC), not refused with an error


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
