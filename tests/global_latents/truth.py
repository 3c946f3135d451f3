"""Exact quantities of small Bayesian models with global latents, for the tests of ``elbogap.global_latents``.

Each model comes as a Pyro program factory (``*_model``), a synthetic data set (``*_data``) and the
closed forms or exact numerics the tests compare against: the log evidence :math:`\\log p(D)`, the
posterior, and the KL of the best fully factorized Gaussian. Every quantity is computed in float64;
the programs themselves run in the dtype of the data they are given and read everything from it, so
they also run on a subset of its rows and under an outer plate that draws the global latents in a
batch (as vectorized particles and parallel chains do).
"""

import functools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from scipy import integrate, optimize

# ---------------------------------------------------------------------------------------------
# Gaussians
# ---------------------------------------------------------------------------------------------


def _float64(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def gaussian_kl(mean_q, cov_q, mean_p, cov_p) -> float:
    r"""The KL divergence between two multivariate Gaussians, :math:`\mathrm{KL}(q \,\|\, p)`.

    .. math::

        \mathrm{KL}(q \,\|\, p) = \tfrac12 \big( \operatorname{tr}(\Sigma_p^{-1} \Sigma_q)
            + (\mu_p - \mu_q)^\top \Sigma_p^{-1} (\mu_p - \mu_q) - k
            + \log\det \Sigma_p - \log\det \Sigma_q \big).

    :param mean_q: mean :math:`\mu_q` of shape ``(k,)``.
    :param cov_q: covariance :math:`\Sigma_q` of shape ``(k, k)``.
    :param mean_p: mean :math:`\mu_p` of shape ``(k,)``.
    :param cov_p: covariance :math:`\Sigma_p` of shape ``(k, k)``.
    """
    mean_q, cov_q, mean_p, cov_p = map(_float64, (mean_q, cov_q, mean_p, cov_p))
    chol_p = torch.linalg.cholesky(cov_p)
    diff = (mean_p - mean_q).unsqueeze(-1)
    trace = torch.cholesky_solve(cov_q, chol_p).diagonal().sum()
    mahalanobis = (diff * torch.cholesky_solve(diff, chol_p)).sum()
    logdet_p = 2 * chol_p.diagonal().log().sum()
    logdet_q = torch.logdet(cov_q)
    return float(0.5 * (trace + mahalanobis - mean_q.numel() + logdet_p - logdet_q))


def _gaussian_log_density(y: torch.Tensor, cov: torch.Tensor) -> float:
    """:math:`\\log \\mathcal{N}(y; 0, \\Sigma)` in float64."""
    return float(dist.MultivariateNormal(torch.zeros_like(y), covariance_matrix=cov).log_prob(y))


def best_factorized_gaussian_kl(precision) -> float:
    r"""The KL from the best fully factorized Gaussian :math:`q` to a Gaussian posterior.

    For a Gaussian posterior :math:`\mathcal{N}(m, \Lambda^{-1})`, the mean-field optimum of
    :math:`\mathrm{KL}(q \,\|\, p)` over :math:`q = \prod_i \mathcal{N}(\mu_i, s_i^2)` has the
    posterior mean :math:`\mu = m` and the variances :math:`s_i^2 = 1 / \Lambda_{ii}` (setting the
    gradient of :math:`\tfrac12 \sum_i \Lambda_{ii} s_i^2 - \sum_i \log s_i` to zero), which leaves

    .. math::

        \min_q \mathrm{KL}(q \,\|\, p) = \tfrac12 \Big( \sum_i \log \Lambda_{ii} - \log\det \Lambda \Big),

    zero exactly when :math:`\Lambda` is diagonal. This is also the best ELBO's gap to the evidence.

    :param precision: the posterior precision :math:`\Lambda`, shape ``(k, k)``.
    """
    precision = _float64(precision)
    return float(0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)))


def best_low_rank_kl(precision, rank: int, starts: int = 16) -> float:
    r"""The KL from the best low-rank-plus-diagonal Gaussian :math:`q = \mathcal{N}(m, WW^T + \operatorname{diag}
    (\delta^2))` (``W`` of ``rank`` columns) to a Gaussian posterior :math:`\mathcal{N}(m, \Lambda^{-1})`: the least
    :math:`\tfrac12(\operatorname{tr}(\Lambda S) - k - \log\det S - \log\det \Lambda)` over :math:`W, \log\delta`,
    by scipy's BFGS (exact gradients) from ``starts`` starts: :math:`\Lambda^{-1}`'s ``rank`` widest directions
    turned by a random rotation, half of them, and random factors. There is no closed form, the optimum may lie
    where some δ → 0 (BFGS on numerical gradients stopped 0.02 nats short of it on a 10-D posterior), and there are
    local optima: on ``benchmarks/global_cases.py``'s 10-D case these starts end at 5.9962 where torch's L-BFGS from
    60 starts found 5.9939.

    :param precision: the posterior precision :math:`\Lambda`, shape ``(k, k)``.
    """
    lam = _float64(precision).numpy()
    dim = len(lam)
    log_det_lam = np.linalg.slogdet(lam)[1]
    values, vectors = np.linalg.eigh(lam)

    def kl(x):  # and its gradient: (Λ - S⁻¹) W for W, (Λ_ii - (S⁻¹)_ii) δ_i² for log δ_i
        w, delta = x[:dim * rank].reshape(dim, rank), np.exp(x[dim * rank:])
        cov = w @ w.T + np.diag(delta ** 2)
        excess = lam - np.linalg.inv(cov)
        value = 0.5 * (np.trace(lam @ cov) - dim - np.linalg.slogdet(cov)[1] - log_det_lam)
        return value, np.concatenate([(excess @ w).ravel(), excess.diagonal() * delta ** 2])

    rng = np.random.default_rng(0)
    best = math.inf
    for start in range(starts):
        if start % 2:
            rotation = np.linalg.qr(rng.normal(size=(rank, rank)))[0]
            w = vectors[:, :rank] / np.sqrt(values[:rank]) @ rotation + rng.normal(0, 0.1, (dim, rank))
        else:
            w = rng.normal(0, 0.5, (dim, rank))
        x = np.concatenate([w.ravel(), rng.normal(-1, 1, dim)])
        best = min(best, float(optimize.minimize(kl, x, jac=True, method="BFGS", options={"gtol": 1e-10}).fun))
    return best


# ---------------------------------------------------------------------------------------------
# 1. Conjugate Bayesian linear regression with known noise
# ---------------------------------------------------------------------------------------------


def regression_model(alpha: float = 1.0, sigma: float = 1.0):
    r"""Bayesian linear regression with known noise, as a Pyro program ``model(data)``.

    .. math::

        w \sim \mathcal{N}(0, \alpha^{-1} I_D), \qquad y \mid X, w \sim \mathcal{N}(X w, \sigma^2 I_N).

    ``data`` is one tensor of shape ``(N, D + 1)`` with columns :math:`[x_1, \dots, x_D, y]`.

    :param float alpha: prior precision of the weights.
    :param float sigma: noise standard deviation.
    """

    def model(data):
        features, targets = data[:, :-1], data[:, -1]
        w = pyro.sample("w", dist.Normal(data.new_zeros(features.shape[-1]), alpha**-0.5).to_event(1))
        with pyro.plate("data", data.shape[0]):
            # (features * w).sum(-1) rather than features @ w: it also broadcasts over a batch of draws of w.
            pyro.sample("y", dist.Normal((features * w).sum(-1), sigma), obs=targets)

    return model


def regression_data(N: int, D: int, seed: int = 0, alpha: float = 1.0, sigma: float = 1.0,
                    correlation: float = 0.0) -> torch.Tensor:
    """A float32 data set ``(N, D + 1)`` of the regression model: normal features of unit variance and pairwise
    ``correlation``, true weights drawn from the prior :math:`\\mathcal{N}(0, \\alpha^{-1} I)`, targets last.
    """
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(N, D, generator=generator, dtype=torch.float64)
    if correlation:
        mixing = correlation + (1 - correlation) * torch.eye(D, dtype=torch.float64)
        features = features @ torch.linalg.cholesky(mixing).T
    w = alpha**-0.5 * torch.randn(D, generator=generator, dtype=torch.float64)
    targets = features @ w + sigma * torch.randn(N, generator=generator, dtype=torch.float64)
    return torch.cat([features, targets.unsqueeze(-1)], dim=-1).float()


def write_study(folder, data: torch.Tensor, name: str, body: str) -> None:
    """A user's program ``folder/{name}.py:model`` (``body``: the lines after ``def model(data):``, imports of pyro
    and pyro.distributions as dist given), and ``data`` as ``folder/rows.csv``: a study a test runs from the command
    line."""
    np.savetxt(folder / "rows.csv", data.numpy(), delimiter=",")
    (folder / f"{name}.py").write_text("import pyro\nimport pyro.distributions as dist\n\n\ndef model(data):\n" + body)


def write_regression_study(folder, data: torch.Tensor) -> None:
    """The regression model with prior precision 1 and noise sd 1 as ``folder/regression.py:model``
    (:func:`write_study`)."""
    write_study(folder, data, "regression",
                "    features, targets = data[:, :-1], data[:, -1]\n"
                "    w = pyro.sample('w', dist.Normal(data.new_zeros(features.shape[-1]), 1.0).to_event(1))\n"
                "    with pyro.plate('data', data.shape[0]):\n"
                "        pyro.sample('y', dist.Normal((features * w).sum(-1), 1.0), obs=targets)\n")


def regression_posterior(X, y, alpha: float, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The exact posterior :math:`p(w \mid X, y) = \mathcal{N}(m, \Lambda^{-1})` of the regression model.

    .. math::

        \Lambda = \alpha I + \sigma^{-2} X^\top X, \qquad m = \sigma^{-2} \Lambda^{-1} X^\top y.

    :returns: ``(mean, cov, precision)`` in float64.
    """
    X, y = _float64(X), _float64(y)
    precision = alpha * torch.eye(X.shape[-1], dtype=torch.float64) + X.T @ X / sigma**2
    cov = torch.linalg.inv(precision)
    mean = cov @ X.T @ y / sigma**2
    return mean, cov, precision


def regression_log_evidence(X, y, alpha: float, sigma: float) -> float:
    r"""The log evidence of the regression model, :math:`w` integrated out:

    .. math::

        \log p(y \mid X) = \log \mathcal{N}\big(y;\ 0,\ \sigma^2 I_N + \alpha^{-1} X X^\top\big).
    """
    X, y = _float64(X), _float64(y)
    cov = sigma**2 * torch.eye(X.shape[0], dtype=torch.float64) + X @ X.T / alpha
    return _gaussian_log_density(y, cov)


# ---------------------------------------------------------------------------------------------
# 2. A constrained global scale: evidence by 1-D quadrature
# ---------------------------------------------------------------------------------------------


def scale_model(tau_scale: float = 1.0, mu_scale: float = 1.0):
    r"""A normal sample of unknown location and scale, as a Pyro program ``model(data)``.

    .. math::

        \mu \sim \mathcal{N}(0, s_\mu^2), \qquad \tau \sim \mathrm{HalfNormal}(s_\tau), \qquad
        y_i \mid \mu, \tau \sim \mathcal{N}(\mu, \tau^2), \quad i = 1, \dots, N.

    ``data`` has shape ``(N, 1)``. The latent :math:`\tau` lives on the positive half-line, so a
    guide must work through a transform; the posterior couples :math:`\mu` and :math:`\tau`.

    :param float tau_scale: :math:`s_\tau`, the scale of the half-normal prior of :math:`\tau`.
    :param float mu_scale: :math:`s_\mu`, the prior standard deviation of :math:`\mu`.
    """

    def model(data):
        mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), mu_scale))
        tau = pyro.sample("tau", dist.HalfNormal(data.new_tensor(tau_scale)))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("y", dist.Normal(mu, tau), obs=data[:, 0])

    return model


def write_scale_study(folder, data: torch.Tensor) -> None:
    """:func:`scale_model` at its default scales as ``folder/scale.py:model`` (:func:`write_study`)."""
    write_study(folder, data, "scale",
                "    mu = pyro.sample('mu', dist.Normal(data.new_tensor(0.0), 1.0))\n"
                "    tau = pyro.sample('tau', dist.HalfNormal(data.new_tensor(1.0)))\n"
                "    with pyro.plate('data', data.shape[0]):\n"
                "        pyro.sample('y', dist.Normal(mu, tau), obs=data[:, 0])\n")


def scale_data(N: int, seed: int = 0, mu: float = 0.5, tau: float = 1.5) -> torch.Tensor:
    """A float32 data set ``(N, 1)`` of the scale model at the given true :math:`\\mu, \\tau`."""
    generator = torch.Generator().manual_seed(seed)
    return (mu + tau * torch.randn(N, 1, generator=generator, dtype=torch.float64)).float()


def _scale_log_integrand(y: np.ndarray, tau_scale: float, mu_scale: float):
    """:math:`u \\mapsto \\log p(y, \\tau = e^u) + u` with :math:`\\mu` integrated out in closed form."""
    num_data, total, total_sq = len(y), y.sum(), (y**2).sum()
    log_prior_const = math.log(2.0) - 0.5 * math.log(2 * math.pi * tau_scale**2)

    def log_integrand(u):
        tau_sq = np.exp(2 * u)
        spread = tau_sq + num_data * mu_scale**2
        # y ~ N(0, tau^2 I + s^2 1 1^T): determinant and inverse by the matrix determinant lemma.
        logdet = (num_data - 1) * np.log(tau_sq) + np.log(spread)
        quad_form = (total_sq - mu_scale**2 * total**2 / spread) / tau_sq
        log_lik = -0.5 * (num_data * math.log(2 * math.pi) + logdet + quad_form)
        log_prior = log_prior_const - tau_sq / (2 * tau_scale**2)
        return log_lik + log_prior + u  # + u: the Jacobian of tau = exp(u)

    def mu_moments(u):
        tau_sq = np.exp(2 * u)
        spread = tau_sq + num_data * mu_scale**2
        return mu_scale**2 * total / spread, mu_scale**2 * tau_sq / spread  # E[mu | tau, y], Var[mu | tau, y]

    return log_integrand, mu_moments


def _scale_quadrature(y, tau_scale: float, mu_scale: float, functions: dict) -> tuple[float, dict]:
    """The log normalizer of :math:`p(y, u)` and the posterior expectations of ``functions`` of :math:`u`."""
    y = _float64(y).reshape(-1).numpy()
    log_integrand, mu_moments = _scale_log_integrand(y, tau_scale, mu_scale)
    mode = optimize.minimize_scalar(lambda u: -log_integrand(u), bracket=(-1.0, 1.0)).x
    peak = log_integrand(mode)
    step = 1e-3
    curvature = (2 * peak - log_integrand(mode + step) - log_integrand(mode - step)) / step**2
    width = 1 / math.sqrt(max(curvature, 1e-6))
    lower, upper = mode - 40 * width, mode + 40 * width
    assert max(log_integrand(lower), log_integrand(upper)) < peak - 60, "the integrand is not negligible at the ends"

    def quad(function):
        value, error = integrate.quad(lambda u: function(u) * math.exp(log_integrand(u) - peak), lower, upper,
                                      epsabs=0.0, epsrel=1e-11, limit=500, points=[mode])
        assert error <= 1e-9 * abs(value) + 1e-300
        return value

    normalizer = quad(lambda u: 1.0)
    expectations = {name: quad(lambda u, f=function: f(u, *mu_moments(u))) / normalizer
                    for name, function in functions.items()}
    return peak + math.log(normalizer), expectations


def scale_log_evidence(y, tau_scale: float = 1.0, mu_scale: float = 1.0) -> float:
    r"""The log evidence of the scale model by 1-D quadrature over :math:`\log \tau`.

    :math:`\mu` is integrated out in closed form,
    :math:`p(y \mid \tau) = \mathcal{N}(y;\ 0,\ \tau^2 I + s_\mu^2 \mathbf{1}\mathbf{1}^\top)`, and

    .. math::

        \log p(y) = \log \int_{-\infty}^{\infty} \mathrm{HalfNormal}(e^u; s_\tau)\, p(y \mid \tau = e^u)\, e^u \,du

    by ``scipy.integrate.quad`` over the mode :math:`\pm 40` curvature widths (the integrand there
    is below :math:`e^{-60}` of its peak, checked) at relative tolerance :math:`10^{-11}`, so the
    result is within about :math:`10^{-9}` nats of the exact value (well below 0.01).

    :param y: the observations, shape ``(N, 1)`` or ``(N,)``.
    """
    log_evidence, _ = _scale_quadrature(y, tau_scale, mu_scale, {})
    return log_evidence


def scale_posterior_moments(y, tau_scale: float = 1.0, mu_scale: float = 1.0) -> dict[str, tuple[float, float]]:
    r"""The posterior mean and standard deviation of :math:`\tau` and of :math:`\mu` in the scale model.

    By the same quadrature as :func:`scale_log_evidence`, with
    :math:`\mathbb{E}[\mu \mid \tau, y] = s_\mu^2 \sum_i y_i / (\tau^2 + N s_\mu^2)` and
    :math:`\mathrm{Var}[\mu \mid \tau, y] = s_\mu^2 \tau^2 / (\tau^2 + N s_\mu^2)` inside the integral.

    :returns: ``{"tau": (mean, sd), "mu": (mean, sd)}``, keyed by the sample sites' names.
    """
    _, moments = _scale_quadrature(y, tau_scale, mu_scale, {
        "tau": lambda u, mean, var: math.exp(u),
        "tau_sq": lambda u, mean, var: math.exp(2 * u),
        "mu": lambda u, mean, var: mean,
        "mu_sq": lambda u, mean, var: var + mean**2,
    })
    return {site: (moments[site], math.sqrt(moments[f"{site}_sq"] - moments[site] ** 2)) for site in ("tau", "mu")}


# ---------------------------------------------------------------------------------------------
# 3. A global latent and per-point latents: a Gaussian hierarchy
# ---------------------------------------------------------------------------------------------


def mixed_model(mu_scale: float = 1.0, z_scale: float = 1.0, noise_scale: float = 0.5):
    r"""A global mean with per-point latents, as a Pyro program ``model(data)``.

    .. math::

        \mu \sim \mathcal{N}(0, s_\mu^2), \qquad z_i \mid \mu \sim \mathcal{N}(\mu, s_z^2), \qquad
        y_i \mid z_i \sim \mathcal{N}(z_i, s_y^2), \quad i = 1, \dots, N,

    with ``z`` and ``y`` inside ``pyro.plate("data", N)``; ``data`` has shape ``(N, 1)``.

    :param float mu_scale: :math:`s_\mu`.
    :param float z_scale: :math:`s_z`.
    :param float noise_scale: :math:`s_y`.
    """

    def model(data):
        mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), mu_scale))
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, z_scale))
            pyro.sample("y", dist.Normal(z, noise_scale), obs=data[:, 0])

    return model


def mixed_data(N: int, seed: int = 0, mu_scale: float = 1.0, z_scale: float = 1.0,
               noise_scale: float = 0.5) -> torch.Tensor:
    """A float32 data set ``(N, 1)`` drawn from the mixed model (every latent from its prior)."""
    generator = torch.Generator().manual_seed(seed)
    mu = mu_scale * torch.randn((), generator=generator, dtype=torch.float64)
    z = mu + z_scale * torch.randn(N, generator=generator, dtype=torch.float64)
    y = z + noise_scale * torch.randn(N, generator=generator, dtype=torch.float64)
    return y.unsqueeze(-1).float()


def mixed_log_evidence(y, mu_scale: float = 1.0, z_scale: float = 1.0, noise_scale: float = 0.5) -> float:
    r"""The log evidence of the mixed model, every latent integrated out:

    .. math::

        \log p(y) = \log \mathcal{N}\big(y;\ 0,\ (s_z^2 + s_y^2) I_N + s_\mu^2 \mathbf{1}\mathbf{1}^\top\big).

    :param y: the observations, shape ``(N, 1)`` or ``(N,)``.
    """
    y = _float64(y).reshape(-1)
    num_data = y.shape[0]
    cov = (z_scale**2 + noise_scale**2) * torch.eye(num_data, dtype=torch.float64)
    cov = cov + mu_scale**2 * torch.ones(num_data, num_data, dtype=torch.float64)
    return _gaussian_log_density(y, cov)


def mixed_posterior(y, mu_scale: float = 1.0, z_scale: float = 1.0,
                    noise_scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The exact joint posterior of :math:`\theta = (\mu, z_1, \dots, z_N)` in the mixed model.

    The log joint is quadratic in :math:`\theta`; its precision and linear term are

    .. math::

        \Lambda = \begin{pmatrix} s_\mu^{-2} + N s_z^{-2} & -s_z^{-2} \mathbf{1}^\top \\
                                  -s_z^{-2} \mathbf{1} & (s_z^{-2} + s_y^{-2}) I_N \end{pmatrix}, \qquad
        h = \begin{pmatrix} 0 \\ s_y^{-2} y \end{pmatrix},

    so :math:`p(\theta \mid y) = \mathcal{N}(\Lambda^{-1} h, \Lambda^{-1})`.

    :returns: ``(mean, cov)`` in float64, of shapes ``(N + 1,)`` and ``(N + 1, N + 1)``, ``mu`` first.
    """
    y = _float64(y).reshape(-1)
    num_data = y.shape[0]
    precision = torch.zeros(num_data + 1, num_data + 1, dtype=torch.float64)
    precision[0, 0] = mu_scale**-2 + num_data * z_scale**-2
    precision[0, 1:] = precision[1:, 0] = -(z_scale**-2)
    precision[1:, 1:] = (z_scale**-2 + noise_scale**-2) * torch.eye(num_data, dtype=torch.float64)
    linear = torch.cat([y.new_zeros(1), y / noise_scale**2])
    cov = torch.linalg.inv(precision)
    return cov @ linear, cov


# ---------------------------------------------------------------------------------------------
# 4. Eight schools: a funnel, its evidence by 1-D quadrature over the spread
# ---------------------------------------------------------------------------------------------

SCHOOL_EFFECTS = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SCHOOL_ERRORS = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def eight_schools_data() -> torch.Tensor:
    """Rubin's SAT coaching data as ``(8, 2)`` float32, columns ``[y, sigma]`` (as ``examples/eight_schools.py``)."""
    return torch.tensor([SCHOOL_EFFECTS, SCHOOL_ERRORS]).T.contiguous()


def eight_schools_model(mu_scale: float = 5.0, tau_scale: float = 5.0):
    r"""The non-centred eight schools: :math:`\mu \sim \mathcal{N}(0, s_\mu^2)`, :math:`\tau \sim
    \mathrm{HalfCauchy}(s_\tau)`, :math:`\theta_j = \mu + \tau \tilde\theta_j`, :math:`y_j \sim
    \mathcal{N}(\theta_j, \sigma_j^2)`."""

    def model(data):
        y, sigma = data[:, 0], data[:, 1]
        mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), mu_scale))
        tau = pyro.sample("tau", dist.HalfCauchy(data.new_tensor(tau_scale)))
        with pyro.plate("schools", data.shape[0]):
            theta_raw = pyro.sample("theta_raw", dist.Normal(data.new_tensor(0.0), 1.0))
            pyro.sample("y", dist.Normal(mu + tau * theta_raw, sigma), obs=y)

    return model


def eight_schools_log_evidence(y, sigma, mu_scale: float = 5.0, tau_scale: float = 5.0) -> float:
    r"""The evidence of :func:`eight_schools_model` by quadrature over :math:`u = \log \tau`.

    With :math:`\mu` and the :math:`\tilde\theta_j` integrated out,
    :math:`y \mid \tau \sim \mathcal{N}(0, \mathrm{diag}(\sigma_j^2 + \tau^2) + s_\mu^2 \mathbf{1}\mathbf{1}^\top)`,
    and :math:`\log p(y) = \log \int \mathrm{HalfCauchy}(e^u; s_\tau)\, p(y \mid e^u)\, e^u\, du` by
    ``scipy.integrate.quad`` over :math:`u \in [-60, 20]` (the integrand decays as :math:`e^u` to the left, a
    half-Cauchy's tail to the right).
    """
    y, sigma = _float64(y).reshape(-1), _float64(sigma).reshape(-1)

    def log_integrand(u: float) -> float:
        tau = math.exp(u)
        cov = torch.diag(sigma**2 + tau**2) + mu_scale**2 * torch.ones(len(y), len(y), dtype=torch.float64)
        log_prior = math.log(2 / (math.pi * tau_scale)) - math.log1p((tau / tau_scale) ** 2)
        return _gaussian_log_density(y, cov) + log_prior + u

    peak = max(log_integrand(u) for u in np.linspace(-5, 8, 27))
    value, _ = integrate.quad(lambda u: math.exp(log_integrand(u) - peak), -60.0, 20.0, points=[-5.0, 0.0, 2.0, 4.0],
                              limit=500, epsabs=0.0, epsrel=1e-11)
    return peak + math.log(value)


# ---------------------------------------------------------------------------------------------
# 5. Regressions whose weights are Gaussian given one or two scales: evidence by quadrature over the scales
# ---------------------------------------------------------------------------------------------


def linear_gaussian_log_evidence(y, design, prior_var, noise_var) -> torch.Tensor:
    r""":math:`\log \mathcal{N}(y;\ 0,\ \sigma^2 I_n + A\, \mathrm{diag}(v)\, A^\top)`, batched over the leading
    dimensions of ``design`` :math:`A` ``(..., n, p)``, ``prior_var`` :math:`v` ``(..., p)`` and ``noise_var``
    :math:`\sigma^2` ``(...)``, by the matrix determinant lemma and Woodbury's identity (a ``p x p`` Cholesky
    factor, not an ``n x n`` one)."""
    y, design = _float64(y), _float64(design)
    prior_var, noise_var = _float64(prior_var), _float64(noise_var)
    n = design.shape[-2]
    gram, projected = design.transpose(-1, -2) @ design, (design.transpose(-1, -2) @ y[..., None])[..., 0]
    inner = torch.diag_embed(1 / prior_var) + gram / noise_var[..., None, None]
    factor = torch.linalg.cholesky(inner)
    logdet = n * noise_var.log() + 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1) + prior_var.log().sum(-1)
    scaled = projected / noise_var[..., None]
    quadratic = (y * y).sum(-1) / noise_var - (scaled * torch.cholesky_solve(scaled[..., None], factor)[..., 0]).sum(-1)
    return -0.5 * (n * math.log(2 * math.pi) + logdet + quadratic)


def _half_normal_log_density(scale: torch.Tensor, prior_scale: float) -> torch.Tensor:
    return math.log(2) - 0.5 * math.log(2 * math.pi * prior_scale**2) - scale**2 / (2 * prior_scale**2)


def one_scale_log_evidence(y, design, prior_var, noise_prior: float = 1.0) -> float:
    r"""Evidence of :math:`y = A w + \epsilon`, :math:`w \sim \mathcal{N}(0, \mathrm{diag}\, v)`,
    :math:`\epsilon \sim \mathcal{N}(0, \sigma^2 I)`, :math:`\sigma \sim \mathrm{HalfNormal}(s)`: ``quad`` over
    :math:`u = \log \sigma` of :func:`linear_gaussian_log_evidence` times the prior and Jacobian."""
    y, design, prior_var = _float64(y), _float64(design), _float64(prior_var)

    def log_integrand(u: float) -> float:
        sigma = torch.tensor(math.exp(u), dtype=torch.float64)
        return float(linear_gaussian_log_evidence(y, design, prior_var, sigma**2)
                     + _half_normal_log_density(sigma, noise_prior)) + u

    grid = np.linspace(-8, 4, 241)
    values = [log_integrand(u) for u in grid]
    peak, mode = max(values), float(grid[int(np.argmax(values))])
    value, _ = integrate.quad(lambda u: math.exp(log_integrand(u) - peak), mode - 3, mode + 3, points=[mode],
                              limit=500, epsabs=0.0, epsrel=1e-11)
    assert max(log_integrand(mode - 3), log_integrand(mode + 3)) < peak - 40, "widen the range"
    return peak + math.log(value)


def two_scales_log_evidence(y, design_of, prior_var_of, scale_prior: float = 1.0, noise_prior: float = 1.0,
                            noise_points: int = 401) -> float:
    r"""Evidence of a regression whose design ``design_of(s)`` and prior variances ``prior_var_of(s)`` depend on a
    scale :math:`s \sim \mathrm{HalfNormal}` beside the noise :math:`\sigma \sim \mathrm{HalfNormal}`: an outer
    ``quad`` over :math:`s` (on its own scale, so a posterior that reaches 0 is integrated there) of a trapezoid
    over :math:`\log \sigma` about its peak (a data set of hundreds of rows pins it to a few percent).
    ``design_of`` and ``prior_var_of`` take a batch of scales ``(G,)``."""
    y = _float64(y)

    def log_joint(scale: float, log_noise: torch.Tensor) -> torch.Tensor:
        scales = torch.full_like(log_noise, scale)
        noise = log_noise.exp()
        return (linear_gaussian_log_evidence(y, design_of(scales), prior_var_of(scales), noise**2)
                + _half_normal_log_density(scales, scale_prior) + _half_normal_log_density(noise, noise_prior)
                + log_noise)

    coarse = torch.linspace(-6, 3, 91, dtype=torch.float64)
    best = max(((float(log_joint(s, coarse).max()), s, float(coarse[log_joint(s, coarse).argmax()]))
                for s in np.linspace(1e-3, 5, 60)), key=lambda item: item[0])
    peak, _, noise_mode = best
    axis = torch.linspace(noise_mode - 0.6, noise_mode + 0.6, noise_points, dtype=torch.float64)

    def inner(scale: float) -> float:
        values = log_joint(scale, axis)
        if float(values.max()) > peak - 30:
            assert float(values[0]) < peak - 40 and float(values[-1]) < peak - 40, "widen the noise axis"
        return float(torch.trapezoid((values - peak).exp(), axis))

    upper = 5.0 * scale_prior
    value, _ = integrate.quad(inner, 0.0, upper, limit=200, epsabs=0.0, epsrel=1e-9)
    return peak + math.log(value)


def radon_like_data(groups: int = 85, rows: int = 919, seed: int = 0) -> torch.Tensor:
    """A float32 ``(rows, 3)`` data set shaped like Gelman's radon data: columns ``[group, x, y]``, a binary
    covariate (the floor) and group intercepts around 1.5 (sd 0.35), slope -0.7, noise 0.75."""
    generator = np.random.default_rng(seed)
    group = generator.integers(0, groups, size=rows)
    x = generator.integers(0, 2, size=rows).astype(float)
    intercepts = 1.5 + 0.35 * generator.normal(size=groups)
    y = intercepts[group] - 0.7 * x + 0.75 * generator.normal(size=rows)
    return torch.tensor(np.c_[group, x, y], dtype=torch.float32)


def pooled_model(weight_scale: float = 10.0):
    """One line for every row: intercept and slope :math:`\\mathcal{N}(0, 10^2)`, noise
    :math:`\\mathrm{HalfNormal}(1)`."""

    def model(data):
        x, y = data[:, 1], data[:, 2]
        a = pyro.sample("a", dist.Normal(data.new_tensor(0.0), weight_scale))
        b = pyro.sample("b", dist.Normal(data.new_tensor(0.0), weight_scale))
        sigma = pyro.sample("sigma", dist.HalfNormal(data.new_tensor(1.0)))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("y", dist.Normal(a[..., None] + b[..., None] * x, sigma[..., None]), obs=y)

    return model


def pooled_log_evidence(data, weight_scale: float = 10.0) -> float:
    data = _float64(data)
    design = torch.stack([torch.ones_like(data[:, 1]), data[:, 1]], -1)
    return one_scale_log_evidence(data[:, 2], design, torch.full((2,), weight_scale**2, dtype=torch.float64))


def varying_intercept_model(groups: int = 85, weight_scale: float = 10.0, centred: bool = False):
    """Non-centred group intercepts :math:`a_j = \\mu + \\sigma_a \\tilde a_j`, a common slope, half-normal scales;
    ``centred``: :math:`a_j \\sim \\mathcal{N}(\\mu, \\sigma_a)` sampled as they are (the same evidence)."""

    def model(data):
        group, x, y = data[:, 0].long(), data[:, 1], data[:, 2]
        mu = pyro.sample("mu_a", dist.Normal(data.new_tensor(0.0), weight_scale))
        spread = pyro.sample("sigma_a", dist.HalfNormal(data.new_tensor(1.0)))
        b = pyro.sample("b", dist.Normal(data.new_tensor(0.0), weight_scale))
        sigma = pyro.sample("sigma", dist.HalfNormal(data.new_tensor(1.0)))
        with pyro.plate("groups", groups):
            if centred:
                intercepts = pyro.sample("a", dist.Normal(mu[..., None], spread[..., None]))
            else:
                raw = pyro.sample("a_raw", dist.Normal(data.new_tensor(0.0), 1.0))
                intercepts = mu[..., None] + spread[..., None] * raw
        with pyro.plate("data", data.shape[0]):
            pyro.sample("y", dist.Normal(intercepts[..., group] + b[..., None] * x, sigma[..., None]), obs=y)

    return model


def varying_intercept_log_evidence(data, groups: int = 85, weight_scale: float = 10.0) -> float:
    """Given :math:`\\sigma_a` and :math:`\\sigma` the model is linear in :math:`(\\mu, b, \\tilde a)`."""
    data = _float64(data)
    onehot = torch.nn.functional.one_hot(data[:, 0].long(), groups).double()
    base = torch.stack([torch.ones_like(data[:, 1]), data[:, 1]], -1)
    prior = torch.cat([torch.full((2,), weight_scale**2, dtype=torch.float64), torch.ones(groups, dtype=torch.float64)])

    def design_of(spread):
        return torch.cat([base.expand(len(spread), *base.shape), spread[:, None, None] * onehot], -1)

    return two_scales_log_evidence(data[:, 2], design_of, lambda spread: prior.expand(len(spread), -1))


def random_effects_log_evidence(data) -> float:
    """``examples/random_effects.py``: given :math:`\\tau` and :math:`\\sigma`, linear in the intercept, slope and
    subject effects :math:`z_i \\sim \\mathcal{N}(0, \\tau^2)` (centred: :math:`\\tau` sets their prior variance)."""
    data = _float64(data)
    measurements, subjects = data.shape[1] // 2, data.shape[0]
    x, y = data[:, :measurements].reshape(-1), data[:, measurements:].reshape(-1)
    onehot = torch.nn.functional.one_hot(torch.arange(subjects).repeat_interleave(measurements), subjects).double()
    design = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), x[:, None], onehot], -1)

    def prior_var_of(tau):
        fixed = torch.tensor([25.0, 1.0], dtype=torch.float64).expand(len(tau), 2)
        return torch.cat([fixed, (tau[:, None] ** 2).expand(len(tau), subjects)], -1)

    return two_scales_log_evidence(y, lambda tau: design.expand(len(tau), *design.shape), prior_var_of)


# ---------------------------------------------------------------------------------------------
# A program that masks half its rows, and one that tempers its likelihood by 1/2 (40 rows, 2 weights)
# ---------------------------------------------------------------------------------------------

MASKED_ROWS = torch.arange(40) < 20


def masked_regression(data):
    features, targets = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]), poutine.mask(mask=MASKED_ROWS):
        pyro.sample("y", dist.Normal((features * w).sum(-1), 1.0), obs=targets)


def tempered_regression(data):
    features, targets = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_zeros(2), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]), poutine.scale(scale=0.5):
        pyro.sample("y", dist.Normal((features * w).sum(-1), 1.0), obs=targets)


def masked_and_tempered() -> tuple[torch.Tensor, list]:
    """Their data and ``[(program, exact log p(D))]``: the masked program's evidence is the kept rows'; the tempered
    one's, exp(log N(y | Xw, 1) / 2) = N(y | Xw, 2) (4 pi)^(n/2) (2 pi)^(-n/4), by closed form."""
    data = regression_data(40, 2, seed=3).double()
    kept = data[MASKED_ROWS]
    exact_masked = regression_log_evidence(kept[:, :-1], kept[:, -1], 1.0, 1.0)
    exact_tempered = (regression_log_evidence(data[:, :-1], data[:, -1], 1.0, math.sqrt(2.0))
                      + 20 * math.log(4 * math.pi) - 10 * math.log(2 * math.pi))
    return data, [(masked_regression, exact_masked), (tempered_regression, exact_tempered)]


# ---------------------------------------------------------------------------------------------
# Mirror modes: a mixture whose components swap labels
# ---------------------------------------------------------------------------------------------


#: the component means each mixture's rows are drawn around, by the number of components
CENTRES = {2: (-2.0, 2.0), 3: (-3.0, 0.0, 3.0)}


def mirror_means(components: int) -> str:
    """A user's file: ``components`` components of equal weight and unit sd whose means, N(0, 5²) each, swap labels,
    on the data's first column: ``components!`` mirror modes, each an equal share of the posterior."""
    return f"""
import pyro
import pyro.distributions as dist


def model(data):
    mu = pyro.sample("mu", dist.Normal(data.new_zeros({components}), 5.0).to_event(1))
    mix = dist.MixtureSameFamily(dist.Categorical(probs=data.new_ones({components}) / {components}),
                                 dist.Normal(mu.unsqueeze(-2), 1.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", mix, obs=data[:, 0])
"""


def mirror_means_data(rows: int, components: int = 2, seed: int = 0) -> torch.Tensor:
    """``(rows, 1)``: an equal share of the rows from N(c, 1) for each of :data:`CENTRES`' centres c."""
    rng = np.random.default_rng(seed)
    shares = [rows // components + (i < rows % components) for i in range(components)]
    values = np.concatenate([rng.normal(c, 1.0, n) for c, n in zip(CENTRES[components], shares, strict=True)])
    return torch.tensor(values, dtype=torch.float32)[:, None]


def mirror_means_log_evidence(data, components: int = 2) -> float:
    """log p(D) of :func:`mirror_means` by the midpoint rule over every mean: a 1601² grid on ±8 for two (their
    prior's sd is 5, the posterior within ±4), a 241³ grid on ±6 for three (the posterior within ±4.5), summed a
    block of the first mean's values at a time."""
    x = np.asarray(data, dtype=np.float64)[:, 0]
    points, half = {2: (1601, 8.0), 3: (241, 6.0)}[components]
    grid = np.linspace(-half, half, points)
    rest = [axis[None] for axis in np.meshgrid(*[grid] * (components - 1), indexing="ij")]
    block = max(1, 3_000_000 // rest[0].size)  # slices of the first mean summed at once: about 3M grid points
    slices = []
    for start in range(0, points, block):
        first = grid[start:start + block].reshape(-1, *[1] * (components - 1))
        means = np.broadcast_arrays(first, *rest)
        log_joint = -sum(m**2 for m in means) / 50 - components / 2 * math.log(50 * math.pi)
        for value in x:
            terms = [-0.5 * (value - m) ** 2 for m in means]
            log_joint = log_joint + functools.reduce(np.logaddexp, terms)
        log_joint -= len(x) * (math.log(components) + 0.5 * math.log(2 * math.pi))
        flat = log_joint.reshape(len(first), -1)
        peak = flat.max(1, keepdims=True)
        slices.extend((peak[:, 0] + np.log(np.exp(flat - peak).sum(1))).tolist())
    slices = np.array(slices)
    peak = slices.max()
    return float(peak + math.log(np.exp(slices - peak).sum()) + components * math.log(grid[1] - grid[0]))


#: a user's file: the regression of regression_model(1, 1) on a data set's last column, as a user writes it
REGRESSION = '''
import pyro
import pyro.distributions as dist


def model(data):
    x, y = data[:, :-1], data[:, -1]
    w = pyro.sample("w", dist.Normal(data.new_zeros(x.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)
'''

#: a user's file whose likelihood raises once the program has run 200 times: past the checks a program passes when
#: it is loaded, in the middle of training
BREAKS_IN_TRAINING = '''
import pyro
import pyro.distributions as dist

CALLS = [0]


def model(data):
    CALLS[0] += 1
    w = pyro.sample("w", dist.Normal(data.new_zeros(data.shape[1] - 1), 1.0).to_event(1))
    if CALLS[0] > 200:  # past the checks a program passes when it is loaded: in the first fit's training
        raise RuntimeError("the likelihood broke")
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal((data[:, :-1] * w).sum(-1), 1.0), obs=data[:, -1])
'''
