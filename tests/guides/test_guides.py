import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import biject_to, constraints

from elbogap.guides import GUIDES, build_guide
from elbogap.guides.guide import JOINT_SITE
from elbogap.guides.sylvester import ConditionalSylvester, householder_product
from elbogap.inference import train
from elbogap.inference.evaluation import draw
from elbogap.model import VAE
from elbogap.user_model import ProgramModel
from tests.conftest import known_linear_model

AMORTIZED = [name for name in GUIDES if name not in ("local", "exact")]


def make(name, latent_dim=3):
    model = known_linear_model(torch.float32) if name == "exact" else VAE(6, latent_dim, hidden_dims=(16,))
    return model, build_guide(name, model, num_data=10, hidden_dims=(16,))


@pytest.mark.parametrize("name", list(GUIDES))
def test_guide_is_a_pyro_program_over_the_data_plate(name):
    model, guide = make(name, latent_dim=2)
    x = torch.rand(10, model.data_dim)
    trace = poutine.trace(guide.guide).get_trace(x[:4], torch.arange(4), 10)
    site = trace.nodes["z"]
    assert site["value"].shape == (4, 2)
    assert site["fn"].batch_shape == (4,) and site["fn"].event_shape == (2,)
    assert [frame.name for frame in site["cond_indep_stack"]] == ["data"]
    assert site["scale"] == pytest.approx(10 / 4)


@pytest.mark.parametrize("name", list(GUIDES))
def test_vectorized_draws_are_scored_per_point(name):
    model, guide = make(name, latent_dim=2)
    q = guide.distribution(torch.rand(10, model.data_dim), torch.arange(10))
    z = draw(q, 7)
    assert z.shape == (7, 10, 2)
    assert torch.isfinite(q.log_prob(z)).all() and q.log_prob(z).shape == (7, 10)


def test_mixture_draws_come_from_each_points_own_components():
    """Guards the expand-then-sample workaround: every point's draws sit at its own component."""
    model, guide = make("mixture", latent_dim=2)
    guide.scales.bias.data.fill_(-20.0)  # near-zero scales
    guide.scales.weight.data.zero_()
    x = torch.rand(300, model.data_dim)
    q = guide.distribution(x)
    z = draw(q, 400)
    nearest = (z.unsqueeze(-2) - q.locs).norm(dim=-1).min(-1).values
    assert nearest.max() < 1e-3


@pytest.mark.parametrize("name", ["diag", "full", "lowrank", "mixture", "iaf", "spline"])
def test_density_integrates_to_one(name):
    """E_r[q(z) / r(z)] = 1 under a wide Gaussian r, within 5 Monte-Carlo standard errors.

    Planar and Sylvester flows are left out: without an inverse they score only their own draws.
    """
    model, guide = make(name, latent_dim=2)
    with torch.no_grad():
        q = guide.distribution(torch.rand(1, model.data_dim))
        proposal = dist.Normal(draw(q, 2000).mean(0), 2.5).to_event(1)
        z = proposal.sample((100_000,))
        ratio = (q.log_prob(z) - proposal.log_prob(z)).exp()
    assert ratio.mean().item() == pytest.approx(1.0, abs=5 * ratio.std().item() / len(ratio) ** 0.5)


def test_householder_product_is_orthogonal():
    q = householder_product(torch.randn(5, 3, 4))
    torch.testing.assert_close(q @ q.transpose(-1, -2), torch.eye(4).expand(5, 4, 4), atol=1e-5, rtol=0)


def test_sylvester_log_det_matches_the_autograd_jacobian():
    torch.manual_seed(3)
    flow = ConditionalSylvester(3, context_dim=4)
    with torch.no_grad():
        flow.hypernet.weight.normal_(std=0.5)
    transform = flow.condition(torch.randn(4))
    x = torch.randn(3)
    y = transform(x)
    jacobian = torch.autograd.functional.jacobian(transform._call, x)
    expected = torch.linalg.slogdet(jacobian).logabsdet
    torch.testing.assert_close(transform.log_abs_det_jacobian(x, y), expected, atol=1e-5, rtol=1e-5)


def test_exact_guide_needs_a_model_with_a_posterior():
    with pytest.raises(ValueError, match="closed-form posterior"):
        build_guide("exact", VAE(6, 2), num_data=10)


def test_unknown_guide_lists_the_valid_names():
    with pytest.raises(ValueError, match="diag, exact, full, iaf, local, lowrank"):
        build_guide("gaussian", VAE(6, 2), num_data=10)


def rate_and_shift(x):
    """A positive scalar site and a real 2-D one per point."""
    with pyro.plate("data", x.shape[0]):
        rate = pyro.sample("rate", dist.Gamma(x.new_tensor(2.0), 1.0))
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(shift + rate[:, None], 0.5).to_event(1), obs=x)


@pytest.mark.parametrize("name", ["diag", "full", "iaf"])
def test_several_sites_are_one_joint_draw_whose_density_carries_each_sites_jacobian(name):
    """The guide program's log q of its draw equals the family's density of the flat real vector (what evaluation
    scores) less log |d rate / d log rate| = log rate: the two ways elbogap reads q agree."""
    x = torch.randn(5, 2)
    model = ProgramModel(rate_and_shift, x)
    guide = build_guide(name, model, len(x), hidden_dims=(8,))
    trace = poutine.trace(guide.guide).get_trace(x)
    trace.compute_log_prob()
    rate, shift = trace.nodes["rate"]["value"], trace.nodes["shift"]["value"]
    assert rate.shape == (5,) and shift.shape == (5, 2) and bool((rate > 0).all())
    flat = torch.cat([rate.log()[:, None], shift], -1)
    expected = guide.distribution(x).log_prob(flat) - rate.log()
    scored = sum(trace.nodes[site]["log_prob"] for site in (JOINT_SITE, "rate", "shift"))
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-4)


def proportions_and_shift(x):
    """A simplex of 3 proportions and a real 2-D shift per point."""
    with pyro.plate("data", x.shape[0]):
        weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(3)))
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(shift + weights[:, :2], 0.5).to_event(1), obs=x)


@pytest.mark.parametrize("program", [proportions_and_shift, None])
@pytest.mark.parametrize("name", ["diag", "iaf"])
def test_a_simplex_site_is_drawn_as_its_stick_breaking_numbers_and_scored_with_their_jacobian(name, program):
    """q is a density over the K - 1 stick-breaking numbers of a simplex (and beside them, another site's values);
    the guide program's log q of its draw is that density less log |det| of the stick-breaking map, alone or joined."""
    x = torch.randn(5, 2)
    if program is None:  # the simplex site alone
        def program(x):
            with pyro.plate("data", x.shape[0]):
                weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(3)))
                pyro.sample("x", dist.Normal(weights[:, :2], 0.5).to_event(1), obs=x)
    model = ProgramModel(program, x)
    guide = build_guide(name, model, len(x), hidden_dims=(8,))
    trace = poutine.trace(guide.guide).get_trace(x)
    trace.compute_log_prob()
    weights = trace.nodes["weights"]["value"]
    assert weights.shape == (5, 3) and torch.allclose(weights.sum(-1), torch.ones(5))
    stick = biject_to(constraints.simplex)
    numbers = stick.inv(weights)
    flat = torch.cat([numbers, trace.nodes["shift"]["value"]], -1) if "shift" in trace.nodes else numbers
    assert model.latent_dim == flat.shape[-1]
    expected = guide.distribution(x).log_prob(flat) - stick.log_abs_det_jacobian(numbers, weights)
    scored = sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample")
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-4)


def test_the_full_family_of_one_latent_trains_with_the_compiled_loss():
    """One latent has no entries below its diagonal. The VAE's full family on one latent failed at its first compiled
    step (the backward of a head with no outputs cannot reshape its empty gradient); it now trains as diag does."""
    torch.manual_seed(0)
    model = VAE(16, 1, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((64, 16), 0.3))
    guide = build_guide("full", model, len(x), hidden_dims=(8,))
    result = train(model, guide, x, steps=20, batch_size=32, jit=True)
    assert len(result.losses) == 20 and all(math.isfinite(loss) for loss in result.losses)
    assert guide.distribution(x[:4]).event_shape == (1,)
