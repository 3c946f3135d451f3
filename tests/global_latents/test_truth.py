"""The ground truth of tests/global_latents/truth.py against independent computations.

Each closed form is checked against a computation that would catch a wrong formula: brute-force
Monte Carlo over the prior (tolerance from its standard error), quadrature over the original
latents, Gaussian conditioning of the joint covariance, the identity
:math:`\\log p(D) = \\log p(D, \\theta) - \\log p(\\theta \\mid D)` at any :math:`\\theta`, and a
numerical optimum of the ELBO. Each Pyro program's log joint is checked against scipy.stats.
"""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import integrate, optimize, stats
from scipy.special import logsumexp

from tests.global_latents import truth


def log_joint(model, data, **latents) -> float:
    """:math:`\\log p(D, \\theta)` of a Pyro program at the given latent values, by its trace."""
    conditioned = poutine.condition(model, data={name: torch.as_tensor(value, dtype=data.dtype)
                                                 for name, value in latents.items()})
    return float(poutine.trace(conditioned).get_trace(data).log_prob_sum())


def assert_within_monte_carlo(log_weights: np.ndarray, expected: float, num_stderr: float = 5.0):
    """``log mean exp(log_weights)`` is within ``num_stderr`` standard errors (delta method) of ``expected``."""
    estimate = logsumexp(log_weights) - math.log(len(log_weights))
    weights = np.exp(log_weights - log_weights.max())
    stderr = weights.std() / (math.sqrt(len(weights)) * weights.mean())
    assert stderr < 0.05, "too few draws for a meaningful check"
    assert abs(estimate - expected) < num_stderr * stderr, (estimate, expected, stderr)


def test_gaussian_kl_matches_torch():
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)
    covs = factors @ factors.mT + 0.5 * torch.eye(3, dtype=torch.float64)
    means = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    q = torch.distributions.MultivariateNormal(means[0], covs[0])
    p = torch.distributions.MultivariateNormal(means[1], covs[1])
    expected = float(torch.distributions.kl_divergence(q, p))
    assert truth.gaussian_kl(means[0], covs[0], means[1], covs[1]) == pytest.approx(expected, rel=1e-10)
    assert truth.gaussian_kl(means[0], covs[0], means[0], covs[0]) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------- linear regression

ALPHA, SIGMA = 2.0, 0.7


@pytest.fixture
def regression():
    data = truth.regression_data(6, 2, seed=3, alpha=ALPHA, sigma=SIGMA).double()
    return data, data[:, :-1], data[:, -1]


def test_regression_data_layout():
    data = truth.regression_data(50, 3, seed=0)
    assert data.shape == (50, 4) and data.dtype == torch.float32
    torch.testing.assert_close(truth.regression_data(50, 3, seed=0), data)


def test_regression_log_evidence_matches_monte_carlo_over_the_prior(regression):
    data, X, y = regression
    w = torch.randn(400_000, 2, dtype=torch.float64) / math.sqrt(ALPHA)
    log_lik = torch.distributions.Normal(w @ X.T, SIGMA).log_prob(y).sum(-1)
    assert_within_monte_carlo(log_lik.numpy(), truth.regression_log_evidence(X, y, ALPHA, SIGMA))


def test_regression_posterior_matches_gaussian_conditioning(regression):
    """Condition the joint Gaussian of (w, y) on y:
    mean Sigma_wy Sigma_yy^-1 y, covariance Sigma_ww - Sigma_wy Sigma_yy^-1 Sigma_yw."""
    data, X, y = regression
    cov_ww = torch.eye(2, dtype=torch.float64) / ALPHA
    cov_wy = X.T / ALPHA
    cov_yy = X @ X.T / ALPHA + SIGMA**2 * torch.eye(len(y), dtype=torch.float64)
    gain = torch.linalg.solve(cov_yy, cov_wy.T).T
    mean, cov, precision = truth.regression_posterior(X, y, ALPHA, SIGMA)
    torch.testing.assert_close(mean, gain @ y, atol=1e-10, rtol=0)
    torch.testing.assert_close(cov, cov_ww - gain @ cov_wy.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(precision @ cov, torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)


def test_regression_evidence_and_posterior_satisfy_the_candidate_identity(regression):
    """log p(y) = log p(y, w) - log p(w | y) at any w, the log joint taken from the Pyro program."""
    data, X, y = regression
    model = truth.regression_model(ALPHA, SIGMA)
    mean, cov, _ = truth.regression_posterior(X, y, ALPHA, SIGMA)
    for w in (mean, torch.tensor([0.3, -1.2], dtype=torch.float64)):
        log_posterior = stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(w.numpy())
        assert log_joint(model, data, w=w) - log_posterior == pytest.approx(
            truth.regression_log_evidence(X, y, ALPHA, SIGMA), abs=1e-9)


def test_regression_program_log_joint_matches_scipy(regression):
    data, X, y = regression
    w = np.array([0.4, -0.9])
    expected = stats.norm(0, ALPHA**-0.5).logpdf(w).sum() + stats.norm(X.numpy() @ w, SIGMA).logpdf(y.numpy()).sum()
    assert log_joint(truth.regression_model(ALPHA, SIGMA), data, w=w) == pytest.approx(expected, abs=1e-9)
    trace = poutine.trace(truth.regression_model(ALPHA, SIGMA)).get_trace(data[:4].float())
    assert trace.nodes["w"]["value"].shape == (2,) and trace.nodes["y"]["value"].shape == (4,)


def test_best_factorized_kl_is_the_kl_of_the_mean_field_optimum(regression):
    data, X, y = regression
    mean, cov, precision = truth.regression_posterior(X, y, ALPHA, SIGMA)
    optimum_cov = torch.diag(1 / precision.diagonal())
    expected = truth.gaussian_kl(mean, optimum_cov, mean, cov)
    assert truth.best_factorized_gaussian_kl(precision) == pytest.approx(expected, rel=1e-10)
    assert truth.best_factorized_gaussian_kl(torch.diag(torch.tensor([1.0, 4.0]))) == pytest.approx(0.0, abs=1e-12)


def test_best_factorized_kl_matches_a_numerically_maximized_elbo():
    """Maximize the ELBO over diagonal Gaussians q = N(m, diag(s^2)) on a 2-D regression with
    strongly correlated features; the gap log p(y) - max ELBO is the best factorized KL.

    For the quadratic log joint the ELBO is exact: E_q log N(y; X w, sigma^2) = log N(y; X m, sigma^2)
    - tr(X^T X diag(s^2)) / (2 sigma^2), E_q log N(w; 0, I/alpha) = log N(m; 0, I/alpha) - alpha sum(s^2) / 2,
    and the entropy is sum(log s) + D/2 log(2 pi e).
    """
    generator = np.random.default_rng(0)
    X = generator.normal(size=(8, 2)) @ np.array([[1.0, 0.9], [0.0, 0.4]])
    y = X @ np.array([1.0, -0.5]) + SIGMA * generator.normal(size=8)

    def negative_elbo(params):
        m, s = params[:2], np.exp(params[2:])
        expected_log_lik = stats.norm(X @ m, SIGMA).logpdf(y).sum() - (X**2 @ s**2).sum() / (2 * SIGMA**2)
        expected_log_prior = stats.norm(0, ALPHA**-0.5).logpdf(m).sum() - ALPHA * (s**2).sum() / 2
        entropy = np.log(s).sum() + math.log(2 * math.pi * math.e)
        return -(expected_log_lik + expected_log_prior + entropy)

    best = optimize.minimize(negative_elbo, np.zeros(4), method="BFGS", options={"gtol": 1e-10})
    gap = truth.regression_log_evidence(X, y, ALPHA, SIGMA) + best.fun
    mean, _, precision = truth.regression_posterior(X, y, ALPHA, SIGMA)
    assert gap > 0.1  # the features are correlated, so mean field loses something
    assert gap == pytest.approx(truth.best_factorized_gaussian_kl(precision), abs=1e-7)
    np.testing.assert_allclose(best.x[:2], mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.exp(2 * best.x[2:]), 1 / precision.diagonal().numpy(), rtol=1e-5)


# ------------------------------------------------------------------------- constrained scale

TAU_SCALE, MU_SCALE = 2.0, 1.5


def scale_grid(y: np.ndarray, mu_bounds=(-10.0, 10.0), u_bounds=(-6.0, 3.5), num_points=(1601, 1201)):
    """log p(y), E[tau], sd[tau], E[mu], sd[mu] by the trapezoid rule on a grid over (mu, u = log tau).

    Nothing is integrated in closed form here: the integrand is the scale model's log joint itself
    (sufficient statistics keep the grid cheap). The trapezoid rule converges geometrically for a
    smooth integrand that vanishes at the edges of the box.
    """
    mu = np.linspace(*mu_bounds, num_points[0])[:, None]
    u = np.linspace(*u_bounds, num_points[1])[None, :]
    tau = np.exp(u)
    squares = (y**2).sum() - 2 * mu * y.sum() + len(y) * mu**2
    log_density = (stats.norm(0, MU_SCALE).logpdf(mu) + stats.halfnorm(scale=TAU_SCALE).logpdf(tau) + u
                   - len(y) * (0.5 * math.log(2 * math.pi) + u) - squares / (2 * tau**2))
    peak = log_density.max()
    density = np.exp(log_density - peak)
    mass = integrate.trapezoid(integrate.trapezoid(density, u[0], axis=1), mu[:, 0])

    def expect(values):
        return integrate.trapezoid(integrate.trapezoid(values * density, u[0], axis=1), mu[:, 0]) / mass

    tau_mean, mu_mean = expect(tau), expect(mu)
    return (peak + math.log(mass), tau_mean, math.sqrt(expect(tau**2) - tau_mean**2),
            mu_mean, math.sqrt(expect(mu**2) - mu_mean**2))


@pytest.mark.parametrize("num_data", [3, 40])
def test_scale_evidence_and_moments_match_a_two_dimensional_grid(num_data):
    y = truth.scale_data(num_data, seed=num_data).double()
    log_evidence, tau_mean, tau_sd, mu_mean, mu_sd = scale_grid(y[:, 0].numpy())
    assert truth.scale_log_evidence(y, TAU_SCALE, MU_SCALE) == pytest.approx(log_evidence, abs=1e-6)
    moments = truth.scale_posterior_moments(y, TAU_SCALE, MU_SCALE)
    assert moments["tau"] == pytest.approx((tau_mean, tau_sd), abs=1e-6)
    assert moments["mu"] == pytest.approx((mu_mean, mu_sd), abs=1e-6)


def test_scale_log_evidence_matches_monte_carlo_over_the_prior():
    y = truth.scale_data(4, seed=1).double()[:, 0]
    mu = MU_SCALE * torch.randn(400_000, 1, dtype=torch.float64)
    tau = (TAU_SCALE * torch.randn(400_000, 1, dtype=torch.float64)).abs()
    log_lik = torch.distributions.Normal(mu, tau).log_prob(y).sum(-1)
    assert_within_monte_carlo(log_lik.numpy(), truth.scale_log_evidence(y, TAU_SCALE, MU_SCALE))


def test_scale_program_log_joint_matches_scipy():
    data = truth.scale_data(10, seed=2).double()
    mu, tau = 0.3, 1.7
    expected = (stats.norm(0, MU_SCALE).logpdf(mu) + stats.halfnorm(scale=TAU_SCALE).logpdf(tau)
                + stats.norm(mu, tau).logpdf(data[:, 0].numpy()).sum())
    assert log_joint(truth.scale_model(TAU_SCALE, MU_SCALE), data, mu=mu, tau=tau) == pytest.approx(expected, abs=1e-9)
    trace = poutine.trace(truth.scale_model(TAU_SCALE, MU_SCALE)).get_trace(data[:3].float())
    assert trace.nodes["tau"]["value"] > 0 and trace.nodes["y"]["value"].shape == (3,)


# ------------------------------------------------------------------------- global + per-point latents

SCALES = {"mu_scale": 1.5, "z_scale": 0.8, "noise_scale": 0.6}


def test_mixed_log_evidence_matches_quadrature_over_mu():
    """Integrate each z_i out by hand (y_i | mu ~ N(mu, s_z^2 + s_y^2)) and mu by quadrature."""
    y = truth.mixed_data(12, seed=4, **SCALES).double()[:, 0].numpy()
    marginal_sd = math.hypot(SCALES["z_scale"], SCALES["noise_scale"])

    def log_integrand(mu):
        return stats.norm(0, SCALES["mu_scale"]).logpdf(mu) + stats.norm(mu, marginal_sd).logpdf(y).sum()

    peak = log_integrand(y.mean())
    mass, _ = integrate.quad(lambda mu: math.exp(log_integrand(mu) - peak), -20, 20, points=[y.mean()], epsrel=1e-12)
    assert truth.mixed_log_evidence(y, **SCALES) == pytest.approx(peak + math.log(mass), abs=1e-8)


def test_mixed_log_evidence_matches_monte_carlo_over_the_prior():
    y = truth.mixed_data(3, seed=5, **SCALES).double()[:, 0]
    mu = SCALES["mu_scale"] * torch.randn(400_000, 1, dtype=torch.float64)
    z = mu + SCALES["z_scale"] * torch.randn(400_000, 3, dtype=torch.float64)
    log_lik = torch.distributions.Normal(z, SCALES["noise_scale"]).log_prob(y).sum(-1)
    assert_within_monte_carlo(log_lik.numpy(), truth.mixed_log_evidence(y, **SCALES))


def test_mixed_posterior_matches_gaussian_conditioning():
    """theta = (mu, z) and y are jointly Gaussian, with Cov(mu, z_i) = s_mu^2,
    Cov(z_i, z_j) = s_mu^2 + s_z^2 [i = j] and Cov(theta, y) = Cov(theta, z)."""
    num_data = 5
    y = truth.mixed_data(num_data, seed=6, **SCALES).double()[:, 0]
    s_mu, s_z, s_y = SCALES["mu_scale"] ** 2, SCALES["z_scale"] ** 2, SCALES["noise_scale"] ** 2
    cov_theta = torch.full((num_data + 1, num_data + 1), s_mu, dtype=torch.float64)
    cov_theta[1:, 1:] += s_z * torch.eye(num_data, dtype=torch.float64)
    cov_theta_y = cov_theta[:, 1:]
    cov_y = cov_theta[1:, 1:] + s_y * torch.eye(num_data, dtype=torch.float64)
    gain = cov_theta_y @ torch.linalg.inv(cov_y)
    mean, cov = truth.mixed_posterior(y, **SCALES)
    torch.testing.assert_close(mean, gain @ y, atol=1e-10, rtol=0)
    torch.testing.assert_close(cov, cov_theta - gain @ cov_theta_y.T, atol=1e-10, rtol=0)


def test_mixed_evidence_and_posterior_satisfy_the_candidate_identity():
    data = truth.mixed_data(7, seed=7, **SCALES).double()
    mean, cov = truth.mixed_posterior(data, **SCALES)
    model = truth.mixed_model(**SCALES)
    for theta in (mean, mean + 0.3 * torch.linspace(-1, 1, 8, dtype=torch.float64)):
        log_posterior = stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(theta.numpy())
        assert log_joint(model, data, mu=theta[0], z=theta[1:]) - log_posterior == pytest.approx(
            truth.mixed_log_evidence(data, **SCALES), abs=1e-9)


def test_mixed_program_log_joint_matches_scipy():
    data = truth.mixed_data(6, seed=8, **SCALES).double()
    mu, z = 0.2, np.linspace(-1, 1, 6)
    expected = (stats.norm(0, SCALES["mu_scale"]).logpdf(mu) + stats.norm(mu, SCALES["z_scale"]).logpdf(z).sum()
                + stats.norm(z, SCALES["noise_scale"]).logpdf(data[:, 0].numpy()).sum())
    assert log_joint(truth.mixed_model(**SCALES), data, mu=mu, z=z) == pytest.approx(expected, abs=1e-9)
    trace = poutine.trace(truth.mixed_model(**SCALES)).get_trace(data[:2].float())
    assert trace.nodes["z"]["value"].shape == (2,) and trace.nodes["mu"]["value"].shape == ()
    assert [frame.name for frame in trace.nodes["z"]["cond_indep_stack"]] == ["data"]


def test_data_makers_are_float32_columns_and_seeded():
    for make in (truth.scale_data, truth.mixed_data):
        data = make(9, seed=1)
        assert data.shape == (9, 1) and data.dtype == torch.float32
        torch.testing.assert_close(make(9, seed=1), data)
        assert not torch.equal(make(9, seed=2), data)
    assert pyro.get_param_store().keys() == set()  # the programs hold no parameters


@pytest.mark.parametrize("program, data", [
    (truth.regression_model(ALPHA, SIGMA), truth.regression_data(5, 3)),
    (truth.scale_model(TAU_SCALE, MU_SCALE), truth.scale_data(5)),
    (truth.mixed_model(**SCALES), truth.mixed_data(5)),
], ids=["regression", "scale", "mixed"])
def test_programs_broadcast_over_a_batch_of_global_draws(program, data):
    """Inside an outer plate (as vectorized particles put it) every site gets a leading batch of 4."""
    with pyro.plate("draws", 4, dim=-2):
        trace = poutine.trace(program).get_trace(data)
    trace.compute_log_prob()
    assert trace.nodes["y"]["log_prob"].shape == (4, 5)
