"""Where the search for q* starts, and which members of a family it can reach."""

import pytest
import torch

from elbogap.guides import GUIDES, build_guide
from elbogap.guides.pointwise import PointwiseGuide, PointwiseParameters
from elbogap.inference.kl import analytic_kl
from tests.conftest import draw_linear_data, known_linear_model, wide_linear_model

#: families whose q* frees their own parameters per point, so it ranges over the whole family
EXACT = ("diag", "full", "lowrank", "local", "exact")


@pytest.mark.parametrize("name", ["diag", "full", "lowrank"])
def test_q_star_of_a_gaussian_frees_the_familys_own_parameters_from_the_heads_outputs(name):
    model = wide_linear_model()
    guide = build_guide(name, model, 10, hidden_dims=(4,), rank=2).double()
    x = draw_linear_data(model, 10)
    index = torch.arange(10)
    star = guide.optimum_start(x, index)
    assert isinstance(star, PointwiseParameters) and star.exact_optimum and not star.amortized
    h = guide.encoder(x)
    expected = guide.unconstrained(h)
    assert [key for key, _ in star.named_parameters()] == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(getattr(star, key), value, rtol=0, atol=0)
    q, p = star.distribution(x[3:7], index[3:7]), guide.distribution(x[3:7])
    torch.testing.assert_close(q.mean, p.mean)
    torch.testing.assert_close(q.variance, p.variance)


def test_q_star_of_the_full_gaussian_reaches_the_exact_posterior_beyond_the_features_width():
    """Latent 8 and 4 features: the posterior is a member the free features cannot reach, and the free
    Cholesky factor can: set to it, q* is p(z|x) (KL zero to rounding)."""
    model = wide_linear_model()
    guide = build_guide("full", model, 10, hidden_dims=(4,)).double()
    x = draw_linear_data(model, 10)
    star = guide.optimum_start(x, torch.arange(10))
    posterior = model.posterior(x)
    scale_tril = posterior.scale_tril
    with torch.no_grad():
        star.loc.copy_(posterior.loc)
        star.raw_diag.copy_(torch.log(torch.expm1(scale_tril.diagonal(dim1=-2, dim2=-1) - 1e-4)))
        star.off_diag.copy_(scale_tril[..., guide.rows, guide.cols])
    with torch.no_grad():
        assert float(analytic_kl(star.distribution(x), posterior).abs().max()) < 1e-9


@pytest.mark.parametrize("name", list(GUIDES))
def test_each_family_says_whether_its_approximation_gap_is_exact(name):
    model = known_linear_model()
    guide = build_guide(name, model, 10, hidden_dims=(4,))
    assert guide.exact_optimum == (name in EXACT)
    start = guide.optimum_start(torch.zeros(3, model.data_dim, dtype=torch.float32), torch.arange(3))
    assert start.exact_optimum == guide.exact_optimum
    assert isinstance(start, PointwiseGuide) == (not guide.exact_optimum)
