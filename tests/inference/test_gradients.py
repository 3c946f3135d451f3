"""Gradient estimators: sticking the landing and DReG against the reparameterized and the plain IWAE estimators."""

import math
import warnings
from statistics import NormalDist

import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, TraceMeanField_ELBO

from elbogap.errors import UsageError
from elbogap.guides import build_guide
from elbogap.guides.autoguide import AutoGuideFamily
from elbogap.inference import evaluate, make_objective, train
from elbogap.inference.gaps import gap_decomposition
from elbogap.inference.iwae import IWAE
from elbogap.inference.objectives import check_gradient
from elbogap.inference.stl import stl_guide
from elbogap.model import VAE, LinearGaussian
from tests.conftest import draw_linear_data, known_linear_model, optimal_diag_guide


def gradient_draws(loss, model, guide_fn, params, x, draws: int, copies: int = 1) -> torch.Tensor:
    """``draws`` independent estimates of the gradient of ``loss`` in ``params``, one row each, on the batch ``x``.

    With ``copies``, each estimate is the sum of that many independent ones: the batch repeated
    (each row keeps its data point's index), one Pyro call instead of ``copies``.
    """
    x, index, rows = x.repeat(copies, 1), torch.arange(len(x)).repeat(copies), []
    for _ in range(draws):
        loss.loss_and_grads(model.model, guide_fn, x, index, num_data=len(x))
        rows.append(torch.cat([p.grad.flatten() for p in params]))
        for p in params:
            p.grad = None
    return torch.stack(rows)


def assert_same_mean(draws: torch.Tensor, reference: torch.Tensor, familywise: float = 1e-3) -> None:
    """A z-test per entry with Monte-Carlo standard errors from the draws, at a Bonferroni level over the entries.

    Entries that no draw moves (an autoregressive mask's zeros) must agree exactly.
    """
    stderr = (draws.var(0) / len(draws) + reference.var(0) / len(reference)).sqrt()
    difference = draws.mean(0) - reference.mean(0)
    assert torch.equal(difference[stderr == 0], torch.zeros_like(difference[stderr == 0]))
    z = difference[stderr > 0] / stderr[stderr > 0]
    threshold = NormalDist().inv_cdf(1 - familywise / (2 * len(z)))
    assert z.abs().max() < threshold, f"an entry is {float(z.abs().max()):.1f} s.e. away (at most {threshold:.1f})"


def snr(draws: torch.Tensor) -> float:
    """Median over entries of |mean| / sd over the draws: the signal-to-noise ratio of Rainforth et al. 2018."""
    return float((draws.mean(0).abs() / draws.std(0)).median())


def small_vae(name: str, num_data: int = 8):
    torch.manual_seed(0)
    model = VAE(12, 2, hidden_dims=(8,))
    guide = (AutoGuideFamily("AutoNormal", model, num_data) if name == "auto:AutoNormal"
             else build_guide(name, model, num_data, hidden_dims=(8,)))
    x = torch.rand(num_data, 12, generator=torch.Generator().manual_seed(1)).round()
    return model, guide, x


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.expm1(y - 1e-4))  # of the guides' positive(): softplus + 1e-4


def full_guide_at_the_posterior(model: LinearGaussian):
    """A full-covariance guide on a linear encoder set to the exact posterior N(M^-1 W^T (x - b), sigma^2 M^-1)."""
    guide = build_guide("full", model, 1, hidden_dims=()).double()
    precision = model.precision_matrix()
    gain = torch.linalg.solve(precision, model.weight.T)
    scale_tril = torch.linalg.cholesky(model.sigma**2 * torch.linalg.inv(precision))
    with torch.no_grad():
        guide.loc.weight.copy_(gain)
        guide.loc.bias.copy_(-gain @ model.bias)
        guide.diag.weight.zero_()
        guide.diag.bias.copy_(inverse_softplus(scale_tril.diagonal()))
        guide.off_diag.weight.zero_()
        guide.off_diag.bias.copy_(scale_tril[guide.rows, guide.cols])
    return guide


def local_guide_at_the_posterior(model: LinearGaussian, x: torch.Tensor):
    """Per-point normals set to the exact posterior of a model whose posterior is diagonal (orthogonal columns of W)."""
    guide = build_guide("local", model, len(x)).double()
    posterior = model.posterior(x)
    with torch.no_grad():
        guide.loc.copy_(posterior.loc)
        guide.raw_scale.copy_(inverse_softplus(posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()))
    return guide


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("name", "jit"), [("full", False), ("full", True), ("local", False)])
def test_stl_gradient_has_no_variance_at_the_exact_posterior(name, jit):
    """log p(x, z) - log q(z|x) = log p(x) for every z: the STL gradient is zero draw by draw, reparam's is not."""
    if name == "full":
        model = known_linear_model()  # a tilted posterior
        x = draw_linear_data(model, 20)
        guide = full_guide_at_the_posterior(model)
    else:
        weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
        model = LinearGaussian.from_params(weight, torch.zeros(4, dtype=torch.float64), 0.7).double()
        x = draw_linear_data(model, 20)
        guide = local_guide_at_the_posterior(model, x)
    params = list(guide.parameters())
    loss = make_objective("elbo", jit=jit)
    reparam = gradient_draws(loss, model, guide.guide, params, x, 50)
    loss = make_objective("elbo", jit=jit, gradient="stl")
    stl = gradient_draws(loss, model, stl_guide(guide), params, x, 50)
    assert reparam.var(0).sum() > 1.0
    assert stl.var(0).sum() < 1e-6 * reparam.var(0).sum()


@pytest.mark.parametrize("name", ["diag", "full", "iaf", "spline", "mixture", "local", "auto:AutoNormal"])
def test_stl_gradient_is_unbiased(name):
    """Its mean over 1,500 draws is the reparameterized gradient's, for the guide's and the decoder's parameters.

    (AutoNormal's parameters are sized to its data set, so it cannot see a repeated batch: 300 single draws.)
    """
    model, guide, x = small_vae(name)
    params = [*model.parameters(), *guide.parameters()]
    draws, copies = (300, 1) if name == "auto:AutoNormal" else (60, 25)
    reparam = gradient_draws(make_objective("elbo"), model, guide.guide, params, x, draws, copies)
    stl = gradient_draws(make_objective("elbo", gradient="stl"), model, stl_guide(guide), params, x, draws, copies)
    assert_same_mean(stl, reparam)


@pytest.mark.parametrize(("name", "vectorize"), [("diag", True), ("iaf", True), ("diag", False)])
def test_dreg_gradient_is_unbiased(name, vectorize):
    """Its mean over 1,500 draws is Pyro's IWAE (RenyiELBO, alpha=0) gradient's, with K = 10, on a full batch.

    Also with the particles drawn one after another (for a model program that does not broadcast).
    """
    model, guide, x = small_vae(name)
    params = [*model.parameters(), *guide.parameters()]
    plain = gradient_draws(make_objective("iwae", 10), model, guide.guide, params, x, 60, 25)
    loss = make_objective("iwae", 10, vectorize=vectorize, gradient="dreg")
    dreg = gradient_draws(loss, model, stl_guide(guide, "dreg"), params, x, 60, 25)
    assert_same_mean(dreg, plain)


def test_dreg_encoder_snr_does_not_fall_with_the_particles():
    """Plain IWAE's encoder SNR falls like 1/sqrt(K) (Rainforth et al. 2018); DReG's does not (Tucker et al. 2019).

    A linear model and a mean-field guide off its optimum (means shifted, scales 1.5 times too wide), so every
    parameter has a gradient to find; 300 draws per K on one fixed batch of 20 points.
    """
    model = known_linear_model()
    x = draw_linear_data(model, 20)
    guide = optimal_diag_guide(model, scale_factor=1.5)
    with torch.no_grad():
        guide.loc.bias.add_(0.5)
    params = list(guide.parameters())
    plain, dreg = {}, {}
    for particles in (1, 10, 100):
        plain[particles] = snr(gradient_draws(make_objective("iwae", particles), model, guide.guide, params, x, 300))
        dreg[particles] = snr(gradient_draws(make_objective("iwae", particles, gradient="dreg"), model,
                                             stl_guide(guide, "dreg"), params, x, 300))
    assert plain[100] < 0.6 * plain[10] < 0.6 * plain[1]  # 1/sqrt(10) = 0.32 per step
    assert dreg[100] > 0.8 * dreg[10] and dreg[100] > 5 * plain[100]


def test_dreg_scales_each_points_bound_by_the_minibatch_after_the_logarithm():
    """On a minibatch of B of N points the loss is N/B times the batch's bound: unbiased for the data set's."""
    model, guide, x = small_vae("diag")
    loss, program, index = make_objective("iwae", 10, gradient="dreg"), stl_guide(guide, "dreg"), torch.arange(8)
    torch.manual_seed(3)
    whole = loss.loss(model.model, program, x, index, num_data=8)
    torch.manual_seed(3)
    assert loss.loss(model.model, program, x, index, num_data=80) == pytest.approx(10 * whole, rel=1e-6)
    torch.manual_seed(3)  # a model program scaled whole, as elbogap scales a user's program that takes only x

    def scaled_model(x, index, num_data):
        return poutine.scale(model.model, scale=num_data / len(x))(x, index)

    assert loss.loss(scaled_model, program, x, index, num_data=80) == pytest.approx(10 * whole, rel=1e-6)
    torch.manual_seed(3)
    assert whole == pytest.approx(RenyiELBO(alpha=0, num_particles=10, vectorize_particles=True, max_plate_nesting=1)
                                  .loss(model.model, guide.guide, x, index, num_data=8), rel=1e-6)


def test_plain_iwae_scales_the_minibatch_after_the_logarithm_where_renyi_does_not():
    """--objective iwae with the plain gradient: N/B times the batch's bound (Pyro's RenyiELBO scales the weights)."""
    model, guide, x = small_vae("diag")
    loss, index = make_objective("iwae", 10), torch.arange(8)
    torch.manual_seed(3)
    whole = loss.loss(model.model, guide.guide, x, index, num_data=8)
    torch.manual_seed(3)
    assert loss.loss(model.model, guide.guide, x, index, num_data=80) == pytest.approx(10 * whole, rel=1e-6)
    renyi = RenyiELBO(alpha=0, num_particles=10, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(3)
    assert renyi.loss(model.model, guide.guide, x, index, num_data=8) == pytest.approx(whole, rel=1e-6)
    torch.manual_seed(3)
    assert renyi.loss(model.model, guide.guide, x, index, num_data=80) != pytest.approx(10 * whole, rel=1e-3)


def test_plain_iwae_hands_a_model_with_a_global_latent_to_renyi_whole():
    """A global latent has no per-point bound: the plain iwae objective is Pyro's RenyiELBO there, DReG refuses it."""
    import pyro
    import pyro.distributions as dist

    y = torch.randn(6)

    def model():
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 6):
            pyro.sample("y", dist.Normal(w, 1.0), obs=y)

    def guide():
        loc = pyro.param("w_loc", torch.tensor(0.3))
        pyro.sample("w", dist.Normal(loc, 0.5))

    pyro.clear_param_store()
    loss = make_objective("iwae", 4)
    renyi = RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    loss.loss(model, guide)  # the first call finds the global latent
    torch.manual_seed(0)
    ours = loss.loss(model, guide)
    torch.manual_seed(0)
    assert ours == pytest.approx(renyi.loss(model, guide), rel=1e-6)
    assert math.isfinite(loss.loss_and_grads(model, guide))
    pyro.clear_param_store()


def test_dreg_with_one_particle_is_the_stl_elbo():
    model, guide, x = small_vae("iaf")
    params = [*model.parameters(), *guide.parameters()]
    torch.manual_seed(4)
    dreg = gradient_draws(IWAE(num_particles=1), model, stl_guide(guide, "dreg"), params, x, 3)
    torch.manual_seed(4)
    stl = gradient_draws(make_objective("elbo", gradient="stl"), model, stl_guide(guide), params, x, 3)
    torch.testing.assert_close(dreg, stl)


def test_meanfield_keeps_its_closed_form_kl_under_stl():
    """Where Pyro knows KL(q || p(z)) in closed form, its exact gradient stands: stl changes nothing there."""
    model, guide, x = small_vae("diag")
    params = [*model.parameters(), *guide.parameters()]
    torch.manual_seed(5)
    reparam = gradient_draws(TraceMeanField_ELBO(max_plate_nesting=1), model, guide.guide, params, x, 3)
    torch.manual_seed(5)
    stl = gradient_draws(make_objective("meanfield", gradient="stl"), model, stl_guide(guide), params, x, 3)
    torch.testing.assert_close(stl, reparam)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("name", "objective", "gradient", "particles"), [
    ("full", "elbo", "reparam", 1), ("full", "elbo", "stl", 1), ("iaf", "elbo", "stl", 1), ("full", "iwae", "dreg", 8),
])
def test_the_gap_identity_and_its_split_hold_under_every_estimator(name, objective, gradient, particles):
    """Trained with each estimator: log p(x) = ELBO + KL(q || p(z|x)), and KL gap = approximation + amortization."""
    torch.manual_seed(0)
    model = LinearGaussian(5, 2).double()
    data = draw_linear_data(known_linear_model(), 300)
    guide = build_guide(name, model, len(data), hidden_dims=(16,)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        losses = train(model, guide, data, steps=100, batch_size=100, lr=1e-2, objective=objective,
                       num_particles=particles, gradient=gradient).losses
    assert sum(losses[-10:]) < sum(losses[:10])
    points = data[:30]
    metrics = evaluate(model, guide, points, elbo_samples=500).metrics
    assert metrics["log_px_method"] == "exact"
    assert metrics["kl_gap"] == pytest.approx(metrics["log_px"] - metrics["elbo"], abs=1e-9)
    if name == "full":  # KL to the exact posterior in closed form
        assert metrics["kl_gap"] == pytest.approx(metrics["kl_exact"], abs=4 * metrics["kl_gap_stderr"])
    gaps = gap_decomposition(model, guide, points, refit_options={"max_steps": 300}, elbo_samples=200)
    assert gaps["approx_gap"] + gaps["amort_gap"] == pytest.approx(gaps["gap_kl"], abs=1e-9)
    assert gaps["amort_gap"] > -4 * gaps["amort_gap_stderr"]


@pytest.mark.parametrize(("objective", "gradient", "message"), [
    ("iwae", "stl", "use --gradient dreg with iwae"),
    ("elbo", "dreg", "use --objective iwae with dreg"),
    ("meanfield", "dreg", "use --objective iwae with dreg"),
    ("elbo", "natural", "unknown --gradient 'natural'"),
])
def test_pairings_that_do_not_estimate_the_objectives_gradient_are_refused(objective, gradient, message):
    with pytest.raises(UsageError, match=message):
        check_gradient(objective, gradient)


@pytest.mark.parametrize("name", ["planar", "sylvester"])
def test_flows_without_an_inverse_are_refused(name):
    model, guide, _ = small_vae(name)
    with pytest.raises(UsageError, match=f"the {name} flow has no inverse"):
        stl_guide(guide)


def test_dreg_refuses_a_sampler_whose_gradient_is_exact_for_some_functions_only():
    """Its identity E[w_k d log q / d phi] = E[d w_k / dz dz / d phi] needs an exact pathwise gradient; stl does not."""
    model, guide, _ = small_vae("mixture")
    stl_guide(guide, "stl")
    with pytest.raises(UsageError, match="the mixture sampler's gradient for its weights is not"):
        stl_guide(guide, "dreg")


def test_the_exact_posterior_has_nothing_to_hold_fixed():
    model = known_linear_model()
    guide = build_guide("exact", model, 10)
    assert stl_guide(guide) == guide.guide
