"""Are the error bars calibrated? Every reported standard error against the spread over repeats.

    python benchmarks/coverage.py [--repeats R] [--quick] [--only NAME,...] [--markdown FILE]

Each experiment runs elbogap's estimators R times from seeds 0..R-1 on the same points of a model
whose answer is known: PPCA (exact log p(x), posterior and ELBO), a 2-D VAE (log p(x) by quadrature)
and a user's program with a positive latent (1-D quadrature). For every reported
quantity it prints the spread (sd) of the estimate's error over the repeats against the root-mean-square reported
standard error, their ratio, and the share of elbogap's 95% intervals (estimate +- 1.96 s.e., or +- t s.e.
where one point's error has few degrees of freedom: ``Evaluation.interval``) that cover the
truth and that cover the long-run mean (the mean over the repeats). Stochastic bounds (IWAE, AIS,
reverse AIS, the BDMC width) are biased by design, so their error bars are judged against the
long-run mean, and the column against the truth shows the bias too; the other quantities are
judged against the truth. The aims (issue 18): every ratio within 0.8-1.25, coverage 90-98%.
``--quick`` runs the few cheap experiments of the CI check (tests/test_coverage.py) with fewer repeats.
Beside them: one column of importance weights alone (light and heavy tails), and the evidence log p(D) of models
with global latents at elbogap's defaults (conjugate, a positive scale, eight schools, and programs that mask or
temper their likelihood), each against its exact value.
"""

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibration import Calibration, calibrate  # noqa: E402
from elbogap.global_latents.evidence import EvidenceSettings, ais_evidence  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.guides import build_guide  # noqa: E402
from elbogap.guides.program import ProgramGuide  # noqa: E402
from elbogap.inference import evaluate, quadrature_log_px, train  # noqa: E402
from elbogap.inference.ais import AISSettings  # noqa: E402
from elbogap.inference.bdmc import bdmc, sandwich, simulate, summarize_sandwich  # noqa: E402
from elbogap.inference.gaps import KnownLogPx, gap_decomposition  # noqa: E402
from elbogap.inference.weights import group_spread_dof, log_mean_exp, log_mean_exp_stderr  # noqa: E402
from elbogap.model import VAE, LinearGaussian  # noqa: E402
from elbogap.threads import intra_op_threads  # noqa: E402
from elbogap.user_model import ProgramModel  # noqa: E402
from tests.conftest import diag_gap_closed_form, draw_linear_data, known_linear_model, optimal_diag_guide  # noqa: E402
from tests.global_latents import truth as global_truth  # noqa: E402
from tests.inference.test_ais import correlated_linear_model  # noqa: E402
from tests.inference.test_laplace import SQUARES, squares_data, squares_program  # noqa: E402

#: what each estimator's 95% intervals should cover: the truth, or the long-run mean of a stochastic bound
JUDGED_AGAINST = {"ELBO": "truth", "KL gap": "truth", "approximation gap": "truth", "amortization gap": "truth",
                  "IWAE": "mean", "AIS": "mean", "reverse AIS": "mean", "BDMC width": "mean",
                  "weights, one column": "mean"}
RATIO_AIM = (0.8, 1.25)
COVERAGE_AIM = (0.90, 0.98)


@dataclass
class Repeats:
    """One reported quantity over the repeats: its estimates, reported standard errors and truths."""

    estimates: list[float] = field(default_factory=list)
    stderrs: list[float] = field(default_factory=list)
    truths: list[float] | None = field(default_factory=list)
    dof: float | None = None  # of each standard error, for its interval; normal where None

    def add(self, estimate, stderr, truth=None, dof: float | None = None) -> None:
        self.dof = dof
        self.estimates.append(float(estimate))
        self.stderrs.append(float(stderr))
        if truth is None:
            self.truths = None
        elif self.truths is not None:
            self.truths.append(float(truth))


# ---------------------------------------------------------------------------------------------
# Models with known answers
# ---------------------------------------------------------------------------------------------


class Known(NamedTuple):
    """A model, fixed points, a guide, and the truths on those points: log p(x) and the guide's ELBO per point."""

    model: object
    x: torch.Tensor
    guide: object
    log_px: torch.Tensor
    elbo: torch.Tensor


def gaussian_kl_to_posterior(model: LinearGaussian, guide, x: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathrm{KL}(q(z \\mid x_n) \\,\\|\\, p(z \\mid x_n))` per point, in closed form, for a diagonal
    Gaussian guide."""
    with torch.no_grad():
        q = guide.distribution(x)
        q = dist.MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
        return kl_divergence(q, model.posterior(x))


def known_ppca(model: LinearGaussian, x: torch.Tensor, guide) -> Known:
    """PPCA's truths in closed form: log p(x), and the ELBO log p(x) - KL(q || p(z|x)) of a diagonal Gaussian guide."""
    log_px = model.log_px(x).detach()
    return Known(model, x, guide, log_px, log_px - gaussian_kl_to_posterior(model, guide, x))


@cache
def ppca() -> Known:
    """PPCA with a tilted posterior (5-D x, 2-D z, tests/conftest.py), 50 of its points, and a
    diagonal-Gaussian encoder (one hidden layer of 16) trained briefly on 300 others."""
    pyro.set_rng_seed(0)  # the encoder's initial weights and SVI's draws
    model = known_linear_model()
    guide = build_guide("diag", model, 300, hidden_dims=(16,)).double()
    train(model, guide, draw_linear_data(model, 300, seed=1), steps=150, batch_size=100, lr=1e-2,
          freeze_model=True, seed=0)
    return known_ppca(model, draw_linear_data(model, 50, seed=5), guide)


@cache
def ppca_8d() -> Known:
    """PPCA with an 8-D latent and a strongly correlated posterior (tests/inference/test_ais.py), 20 of its
    points, and an untrained linear encoder (AIS from the prior does not use it)."""
    model = correlated_linear_model()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        x, _ = simulate(model, torch.zeros(1, model.data_dim, dtype=torch.float64), 20)
        guide = build_guide("diag", model, len(x), hidden_dims=()).double()
    return known_ppca(model, x, guide)


def as_program(model: LinearGaussian, example_x: torch.Tensor) -> ProgramModel:
    """The same PPCA as a user's Pyro program without parameters: elbogap sees neither its densities nor its
    posterior."""
    weight, bias, sigma = model.weight.detach(), model.bias.detach(), float(model.sigma)

    def ppca_program(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(model.latent_dim, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T + bias, sigma).to_event(1), obs=x)

    return ProgramModel(ppca_program, example_x[:3], "ppca_program")


@cache
def ppca_opaque() -> Known:
    """:func:`ppca_8d` as a program: AIS runs through Pyro traces instead of the model's density methods."""
    known = ppca_8d()
    program = as_program(known.model, known.x)
    return known._replace(model=program, guide=build_guide("diag", program, len(known.x), hidden_dims=()).double())


@cache
def ppca_1d_shifted() -> Known:
    r"""PPCA with a 1-D latent and a guide that is its exact posterior moved by 3 posterior sds.

    With :math:`q = \mathcal{N}(m + 3s, s^2)` against :math:`p(z \mid x) = \mathcal{N}(m, s^2)`, the
    importance log-weights are exactly :math:`\log w \sim \mathcal{N}(\log p(x) - 4.5, 3^2)`.
    """
    weight = torch.tensor([[1.0], [0.5], [-0.3], [0.9], [0.2]], dtype=torch.float64)
    model = LinearGaussian.from_params(weight, torch.zeros(5, dtype=torch.float64), 0.7).to(torch.float64)
    guide = optimal_diag_guide(model)
    posterior_sd = model.sigma / model.precision_matrix().diagonal().sqrt()
    with torch.no_grad():
        guide.loc.bias += 3 * posterior_sd
    return known_ppca(model, draw_linear_data(model, 20, seed=2), guide)


@cache
def ppca_narrow_guide() -> Known:
    """:func:`ppca`'s model and first 20 points, with the best diagonal Gaussian shrunk to 0.3 of its scales:
    importance weights of infinite variance (k-hat > 0.7)."""
    model, x = ppca()[:2]
    return known_ppca(model, x[:20], optimal_diag_guide(model, 0.3))


@cache
def wide_ppca(scale_factor: float) -> Known:
    """PPCA in float32 with 1000-D observations, ELBOs near -2000 per point, and truths from a float64 copy.

    The guide is the best diagonal Gaussian with its scales times ``scale_factor``: its draws'
    log-likelihoods spread by about 1 nat at 1, and 0.1 nat at 0.32.
    """
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(1000, 2, generator=generator, dtype=torch.float64)
    exact = LinearGaussian.from_params(weight, torch.zeros(1000, dtype=torch.float64), 1.8).to(torch.float64)
    known = known_ppca(exact, draw_linear_data(exact, 20, seed=3), optimal_diag_guide(exact, scale_factor))
    return known._replace(model=LinearGaussian.from_params(weight.float(), torch.zeros(1000), 1.8),
                          x=known.x.float(), guide=known.guide.float())


@cache
def vae_2d() -> Known:
    """A random 2-D-latent VAE (12-D Gaussian observations, noise 0.3), 20 of its points, a diagonal
    encoder trained on 500 more, and the truths: log p(x) by quadrature on a 128^2 grid and the
    encoder's ELBO from 2^17 draws."""
    pyro.set_rng_seed(7)  # the decoder's and encoder's weights, the simulated points and SVI's draws
    model = VAE(12, 2, hidden_dims=(16,), likelihood="gaussian").double()
    with torch.no_grad():
        model.log_scale.fill_(math.log(0.3))
    model.requires_grad_(False)
    x, _ = simulate(model, torch.zeros(1, 12, dtype=torch.float64), 520)
    guide = build_guide("diag", model, 500, hidden_dims=(16,)).double()
    train(model, guide, x[20:], steps=500, batch_size=100, lr=1e-2, freeze_model=True, seed=0)
    points = x[:20]
    log_px, _ = quadrature_log_px(model, points, 128)
    with torch.no_grad():
        q = guide.distribution(points)
        z = q.sample((2**17,))
        elbo = (model.prior().log_prob(z) + model.likelihood(z).log_prob(points) - q.log_prob(z)).mean(0)
    return Known(model, points, guide, log_px, elbo)


#: the direction the positive latent scales, in the program below
POSITIVE_DIRECTION = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)


def positive_program(x):
    """``s ~ HalfNormal(1)``, ``x ~ N(s a, 0.5^2 I)``: a positive latent, integrated on the log scale."""
    with pyro.plate("data", len(x)):
        s = pyro.sample("s", dist.HalfNormal(torch.ones(len(x), 1, dtype=x.dtype)).to_event(1))
        pyro.sample("x", dist.Normal(s * POSITIVE_DIRECTION.to(x), 0.5).to_event(1), obs=x)


def positive_guide_loc(x: torch.Tensor) -> torch.Tensor:
    """The log of x's projection on the direction (floored at 0.05): where the guide centres log s."""
    direction = POSITIVE_DIRECTION.to(x)
    return (x @ direction / direction.pow(2).sum()).clamp_min(0.05).log()


def positive_guide_program(x):
    """``s ~ LogNormal(positive_guide_loc(x), 0.4)``: a guide program whose draws lie in the latent's support."""
    with pyro.plate("data", len(x)):
        pyro.sample("s", dist.LogNormal(positive_guide_loc(x)[:, None], 0.4).to_event(1))


def squares_guide_program(x):
    """``z ~ N(0, 1.5^2 I)``: a fixed guide program that covers every quadrant."""
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.5).to_event(1))


@cache
def four_modes() -> Known:
    """The program of ``tests/inference/test_laplace.py``, x ~ N((z * z) A^T, 0.3^2) with 2-D z, whose posterior has
    up to four modes per point; 20 of its points, a fixed guide, and log p(x) and the ELBO on a 601^2 grid."""
    x, _ = squares_data(20)
    x = x.double()
    model = ProgramModel(squares_program, x[:3], "squares_program")
    guide = ProgramGuide(squares_guide_program, model, x[:3], "squares_guide_program")
    grid = torch.linspace(-6, 6, 601, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    log_joint = (dist.Normal(0.0, 1.0).log_prob(z).sum(-1)[:, None]
                 + dist.Normal(((z * z) @ SQUARES.T.double())[:, None], 0.3).log_prob(x).sum(-1))  # (grid, points)
    log_q = dist.Normal(0.0, 1.5).log_prob(z).sum(-1)[:, None]
    area = float(grid[1] - grid[0]) ** 2
    log_px = torch.logsumexp(log_joint, 0) + math.log(area)
    elbo = (log_q.exp() * (log_joint - log_q)).sum(0) * area
    return Known(model, x, guide, log_px, elbo)


@cache
def positive_latent() -> Known:
    """The positive-latent program, 20 of its points, its guide program, and log p(x) and the ELBO by 1-D quadrature."""
    generator = torch.Generator().manual_seed(8)
    s = torch.randn(20, 1, generator=generator, dtype=torch.float64).abs()
    x = s * POSITIVE_DIRECTION + 0.5 * torch.randn(20, 3, generator=generator, dtype=torch.float64)
    model = ProgramModel(positive_program, x[:3], "positive_program")
    guide = ProgramGuide(positive_guide_program, model, x[:3], "positive_guide_program")
    grid = torch.linspace(0, 10, 200_001, dtype=torch.float64)[1:, None]  # (grid, 1): s > 0
    spacing = float(grid[1] - grid[0])
    log_joint = (dist.HalfNormal(torch.tensor(1.0, dtype=torch.float64)).log_prob(grid)
                 + dist.Normal(grid[..., None] * POSITIVE_DIRECTION, 0.5).log_prob(x).sum(-1))  # (grid, points)
    log_q = dist.LogNormal(positive_guide_loc(x), 0.4).log_prob(grid)
    log_px = torch.logsumexp(log_joint, 0) + math.log(spacing)
    elbo = (log_q.exp() * (log_joint - log_q)).sum(0) * spacing
    return Known(model, x, guide, log_px, elbo)


# ---------------------------------------------------------------------------------------------
# Experiments: each returns its rows, keyed by (estimator, where), over ``repeats`` seeds
# ---------------------------------------------------------------------------------------------

Rows = dict[tuple[str, str], Repeats]


def evaluated(known: Known, repeats: int, quantities: dict[str, tuple[str, torch.Tensor]], **options) -> Rows:
    """``evaluate`` from each seed; per quantity (estimator -> metric key and its truth per point),
    the split mean over the points and, where a per-point standard error is reported, point 0."""
    rows: Rows = {}
    for seed in range(repeats):
        pyro.set_rng_seed(seed)
        evaluation = evaluate(known.model, known.guide, known.x, **options)
        for estimator, (key, truth) in quantities.items():
            rows.setdefault((estimator, f"mean of {len(known.x)} points"), Repeats()).add(
                evaluation.metrics[key], evaluation.metrics[f"{key}_stderr"], truth.double().mean())
            if f"{key}_stderr" in evaluation.per_point:  # the KL gap's is reported for the split only
                rows.setdefault((estimator, "point 0"), Repeats()).add(
                    evaluation.per_point[key][0], evaluation.per_point[f"{key}_stderr"][0], truth[0],
                    evaluation.dof.get(key))
    return rows


def elbo_and_kl_gap(known_model: Callable[[], Known], **options) -> Callable[[int], Rows]:
    def run(repeats: int) -> Rows:
        known = known_model()
        quantities = {"ELBO": ("elbo", known.elbo), "KL gap": ("kl_gap", known.log_px - known.elbo)}
        return evaluated(known, repeats, quantities, **options)

    return run


def elbo(known_model: Callable[[], Known], **options) -> Callable[[int], Rows]:
    def run(repeats: int) -> Rows:
        known = known_model()
        return evaluated(known, repeats, {"ELBO": ("elbo", known.elbo)}, iw_samples=1, log_px_method="iwae",
                         **options)

    return run


def iwae(known_model: Callable[[], Known], draws: int) -> Callable[[int], Rows]:
    def run(repeats: int) -> Rows:
        known = known_model()
        return evaluated(known, repeats, {"IWAE": ("log_px_iwae", known.log_px)}, elbo_samples=1, iw_samples=draws,
                         log_px_method="iwae")

    return run


def ais(known_model: Callable[[], Known], settings: AISSettings) -> Callable[[int], Rows]:
    """AIS through ``evaluate(..., log_px_method="ais")``; one draw of the guide fills the ELBO's columns."""

    def run(repeats: int) -> Rows:
        known = known_model()
        return evaluated(known, repeats, {"AIS": ("log_px_ais", known.log_px)}, elbo_samples=1, iw_samples=1,
                         log_px_method="ais", ais=settings)

    return run


def one_point_bdmc(known_model: Callable[[], Known], settings: AISSettings) -> Callable[[int], Rows]:
    """Forward and reverse AIS (:func:`bdmc`) on point 0, every reverse chain of every repeat from its own exact
    posterior draw of z (what :func:`sandwich` does where the posterior is a closed form).

    The repeats run side by side as rows of one call (point 0 repeated): every row tunes its own
    step sizes and runs its own chains, so each is an independent run on the same point.
    """

    def run(repeats: int) -> Rows:
        known = known_model()
        point = known.x[:1]
        pyro.set_rng_seed(0)
        z = known.model.posterior(point).sample((settings.chains, repeats))[:, :, 0]  # (chains, repeats, latent)
        result = bdmc(known.model, point.expand(repeats, -1).clone(), z, settings)
        forward, reverse = Repeats(), Repeats()
        for r in range(repeats):
            forward.add(result.lower[r], result.lower_stderr[r], known.log_px[0], result.dof)
            reverse.add(result.upper[r], result.upper_stderr[r], known.log_px[0], result.dof)
        return {("AIS", "point 0 (BDMC's forward run)"): forward,
                ("reverse AIS", "point 0, a fresh z per chain"): reverse}

    return run


def sandwiches(known_model: Callable[[], Known], num_points: int, settings: AISSettings) -> Callable[[int], Rows]:
    """The sandwich as ``elbogap evaluate --bdmc`` runs it, from each seed.

    The width's standard error is the spread across simulated points (the error of the expected width on
    data like the model's), so its rows run :func:`sandwich` itself, which simulates fresh points each
    time. The bounds' standard errors are Monte Carlo errors with the points held fixed, so their rows run
    :func:`bdmc` on one set of simulated points, every reverse chain of every repeat from its own exact
    posterior draw, and read them through :func:`summarize_sandwich` as the sandwich does: with fresh
    points the spread would also hold how AIS's bias changes from point to point, which no Monte Carlo
    error claims.
    """

    def run(repeats: int) -> Rows:
        known = known_model()
        where = f"mean of {num_points} simulated points"
        width, lower, upper = Repeats(), Repeats(), Repeats()
        pyro.set_rng_seed(0)
        fixed_x, _ = simulate(known.model, known.x, num_points)
        fixed_truth = known.model.log_px(fixed_x).double().mean()
        for seed in range(repeats):
            pyro.set_rng_seed(seed)
            summary, _ = sandwich(known.model, known.x, num_points, settings)
            width.add(summary["width"], summary["width_stderr"])
            z = known.model.posterior(fixed_x).sample((settings.chains,))
            result = bdmc(known.model, fixed_x, z, settings)
            bounds = summarize_sandwich(result.lower, result.lower_jackknife, result.upper, result.upper_jackknife)
            lower.add(bounds["lower"], bounds["lower_stderr"], fixed_truth)
            upper.add(bounds["upper"], bounds["upper_stderr"], fixed_truth)
        return {("BDMC width", where): width, ("AIS", f"{where}, held fixed"): lower,
                ("reverse AIS", f"{where}, held fixed"): upper}

    return run


def ppca_gaps(repeats: int) -> Rows:
    """``gap_decomposition`` with the exact log p(x); truths: the best diagonal Gaussian's KL in closed form
    (the approximation gap) and the encoder's mean KL to the posterior less that (the amortization gap)."""
    known = ppca()
    log_px = KnownLogPx(known.log_px, torch.zeros_like(known.log_px), "exact")
    approx = diag_gap_closed_form(known.model)
    amort = float((known.log_px - known.elbo).mean()) - approx
    where = f"mean of {len(known.x)} points"
    approx_gap, amort_gap = Repeats(), Repeats()
    for seed in range(repeats):
        pyro.set_rng_seed(seed)
        gaps = gap_decomposition(known.model, known.guide, known.x, log_px=log_px, elbo_samples=64)
        approx_gap.add(gaps["approx_gap"], gaps["approx_gap_stderr"], approx)
        amort_gap.add(gaps["amort_gap"], gaps["amort_gap_stderr"], amort)
    return {("approximation gap", where): approx_gap, ("amortization gap", where): amort_gap}


def one_column(draw: Callable[[int, torch.Generator], torch.Tensor], weights: int,
               truth: float) -> Callable[[int], Rows]:
    """The log-mean of ``weights`` importance weights, one column at a time (one data set's evidence, one point): the
    error of :func:`~elbogap.inference.weights.log_mean_exp_stderr` on its own column, with its degrees of freedom."""

    def run(repeats: int) -> Rows:
        rows = Repeats()
        for seed in range(repeats):
            log_w = draw(weights, torch.Generator().manual_seed(seed))[:, None]
            rows.add(log_mean_exp(log_w)[0], log_mean_exp_stderr(log_w)[0], truth, group_spread_dof(weights))
        return {("weights, one column", f"{weights} weights"): rows}

    return run


def lognormal(sigma: float):
    return lambda count, generator: sigma * torch.randn(count, generator=generator, dtype=torch.float64)


def pareto(shape: float):
    """log w of Pareto weights, w = u^(-shape): a tail of that shape (infinite variance above 0.5), E w =
    1/(1-shape)."""
    return lambda count, generator: -shape * torch.rand(count, generator=generator, dtype=torch.float64).log()


def global_evidence(program, data: torch.Tensor, exact: float) -> Callable[[int], Rows]:
    """log p(D) of a model with global latents at elbogap's default settings (AIS from the fitted reference), from
    each seed."""

    def run(repeats: int) -> Rows:
        rows = Repeats()
        model = GlobalLatentModel(program, data, "model")
        for seed in range(repeats):
            pyro.set_rng_seed(seed)
            evidence = ais_evidence(model, data, EvidenceSettings())
            rows.add(evidence.log_evidence, evidence.stderr, exact, evidence.dof)
        return {("AIS", "log p(D), from a fitted reference"): rows}

    return run


def conjugate_evidence() -> tuple:
    data = global_truth.regression_data(8, 2, seed=3)
    both = data.double()
    return (global_truth.regression_model(1.0, 1.0), data,
            global_truth.regression_log_evidence(both[:, :-1], both[:, -1], 1.0, 1.0))


def masked_and_tempered_evidence() -> tuple[tuple, tuple]:
    """The masked and the tempered programs (``tests/global_latents/truth.py``) on float32 data, with their exact
    evidences."""
    data, ((masked, exact_masked), (tempered, exact_tempered)) = global_truth.masked_and_tempered()
    return (masked, data.float(), exact_masked), (tempered, data.float(), exact_tempered)


MASKED_EVIDENCE, TEMPERED_EVIDENCE = masked_and_tempered_evidence()


@dataclass(frozen=True)
class Experiment:
    """One setting of one model, run ``repeats`` times (``quick_repeats`` under ``--quick``; None: not quick).

    ``may_decline``: where the honest answer is no standard error (one AIS chain, importance weights
    of infinite variance), reporting none (NaN) meets the aims.
    """

    name: str
    model: str
    settings: str
    run: Callable[[int], Rows]
    repeats: int
    quick_repeats: int | None = None
    may_decline: bool = False


PPCA = "PPCA 5-D x, 2-D z"
PPCA_8D = "PPCA 12-D x, 8-D z"
PPCA_WIDE = "PPCA 1000-D x, float32"
VAE_2D = "VAE 12-D x, 2-D z"
POSITIVE = "program: s ~ HalfNormal, 3-D x"
FOUR_MODES = "program: x ~ N(A (z * z), 0.3^2), 2-D z (four modes)"
SCHOOLS = global_truth.eight_schools_data()
EXPERIMENTS = [
    Experiment("one-column-light-64", "log w ~ N(0, 0.5^2)", "one column of 64 weights",
               one_column(lognormal(0.5), 64, 0.125), 800, 200),
    Experiment("one-column-light-256", "log w ~ N(0, 0.5^2)", "one column of 256 weights",
               one_column(lognormal(0.5), 256, 0.125), 800, may_decline=True),
    Experiment("one-column-lognormal-1", "log w ~ N(0, 1)", "one column of 256 weights",
               one_column(lognormal(1.0), 256, 0.5), 800, may_decline=True),
    Experiment("one-column-pareto", "Pareto weights, shape 0.7 (infinite variance)", "one column of 256 weights",
               one_column(pareto(0.7), 256, -math.log(0.3)), 800, may_decline=True),
    Experiment("evidence-conjugate", "conjugate regression, 8 rows, 2 weights", "elbogap's default log p(D)",
               global_evidence(*conjugate_evidence()), 100),
    Experiment("evidence-scale", "mu ~ N, tau ~ HalfNormal, 4 rows", "elbogap's default log p(D)",
               global_evidence(global_truth.scale_model(), global_truth.scale_data(4, seed=1),
                               global_truth.scale_log_evidence(global_truth.scale_data(4, seed=1)[:, 0].double())), 60),
    Experiment("evidence-schools", "eight schools, HalfCauchy spread", "elbogap's default log p(D)",
               global_evidence(global_truth.eight_schools_model(), SCHOOLS,
                               global_truth.eight_schools_log_evidence(SCHOOLS[:, 0], SCHOOLS[:, 1])), 100),
    Experiment("evidence-masked", "regression, 40 rows, half masked (poutine.mask)", "elbogap's default log p(D)",
               global_evidence(*MASKED_EVIDENCE), 60),
    Experiment("evidence-tempered", "regression, 40 rows, likelihood ^ 1/2 (poutine.scale)",
               "elbogap's default log p(D)", global_evidence(*TEMPERED_EVIDENCE), 60),
    Experiment("ppca-elbo", PPCA, "diag encoder, 64 draws",
               elbo_and_kl_gap(ppca, elbo_samples=64, log_px_method="exact"), 100, 20),
    Experiment("vae-2d", VAE_2D, "diag encoder, 256 draws, quadrature 32^2",
               elbo_and_kl_gap(vae_2d, elbo_samples=256, log_px_method="quadrature", quadrature_points=32), 100),
    Experiment("elbo-float32", PPCA_WIDE, "best diag q: ELBO ~ -2000 +- 1 per draw, 256 draws",
               elbo(lambda: wide_ppca(1.0), elbo_samples=256), 200),
    Experiment("elbo-float32-narrow", PPCA_WIDE, "q at 0.32x its scales: ELBO ~ -2000 +- 0.1 per draw, 256 draws",
               elbo(lambda: wide_ppca(0.32), elbo_samples=256), 200, 20),
    Experiment("positive-elbo", POSITIVE, "LogNormal guide program, 256 draws", elbo(positive_latent, elbo_samples=256),
               200),
    Experiment("ppca-iwae", PPCA, "diag encoder, K = 1000", iwae(ppca, 1000), 400, may_decline=True),
    Experiment("vae-2d-iwae", VAE_2D, "diag encoder, K = 1000", iwae(vae_2d, 1000), 400, may_decline=True),
    Experiment("positive-iwae", POSITIVE, "LogNormal guide program, K = 1000", iwae(positive_latent, 1000), 400,
               may_decline=True),
    Experiment("iwae-shifted", "PPCA 5-D x, 1-D z", "q = posterior moved 3 sd: log w ~ N(., 3^2), K = 1000",
               iwae(ppca_1d_shifted, 1000),
               400, 200, may_decline=True),
    Experiment("iwae-narrow", PPCA, "best diag q at 0.3x its scales (k-hat > 0.7), K = 1000",
               iwae(ppca_narrow_guide, 1000), 400, may_decline=True),
    Experiment("ppca-gaps", PPCA, "diag encoder, q* refit, 64 draws, exact log p(x)", ppca_gaps, 100),
    Experiment("ais-opaque-8x50", f"{PPCA_8D}, as a program", "8 chains x 50 temperatures x 10 leapfrog",
               ais(ppca_opaque, AISSettings(steps=50, chains=8)), 400),
    Experiment("ais-8x50-lf2", PPCA_8D, "8 chains x 50 temperatures x 2 leapfrog",
               ais(ppca_8d, AISSettings(steps=50, chains=8, leapfrog_steps=2)), 200, 40),
    Experiment("ais-8x200", PPCA_8D, "8 chains x 200 temperatures x 10 leapfrog",
               ais(ppca_8d, AISSettings(steps=200, chains=8)), 150),
    Experiment("ais-one-chain", PPCA_8D, "1 chain x 50 temperatures x 2 leapfrog",
               ais(ppca_8d, AISSettings(steps=50, chains=1, leapfrog_steps=2)), 12, 4, may_decline=True),
    Experiment("ais-vae-2d", VAE_2D, "16 chains x 50 temperatures x 5 leapfrog",
               ais(vae_2d, AISSettings(steps=50, chains=16, leapfrog_steps=5)), 400),
    Experiment("ais-positive", POSITIVE, "16 chains x 50 temperatures x 5 leapfrog",
               ais(positive_latent, AISSettings(steps=50, chains=16, leapfrog_steps=5)), 400),
    Experiment("ais-vae-2d-laplace", VAE_2D, "from Gaussians at each point's posterior modes, 16 chains x 50 "
               "temperatures x 5 leapfrog",
               ais(vae_2d, AISSettings(steps=50, chains=16, leapfrog_steps=5, init="laplace")), 100),
    Experiment("ais-positive-laplace", POSITIVE, "from Gaussians at each point's posterior modes, 16 chains x 50 "
               "temperatures x 5 leapfrog",
               ais(positive_latent, AISSettings(steps=50, chains=16, leapfrog_steps=5, init="laplace")), 100),
    Experiment("ais-four-modes-laplace", FOUR_MODES, "from Gaussians at each point's posterior modes, 16 chains x 50 "
               "temperatures x 5 leapfrog",
               ais(four_modes, AISSettings(steps=50, chains=16, leapfrog_steps=5, init="laplace")), 200),
    Experiment("bdmc-one-point", PPCA, "32 chains x 20 temperatures x 10 leapfrog",
               one_point_bdmc(ppca, AISSettings(steps=20, chains=32)), 800, 200),
    Experiment("bdmc-one-point-8d", PPCA_8D, "32 chains x 20 temperatures x 10 leapfrog",
               one_point_bdmc(ppca_8d, AISSettings(steps=20, chains=32)), 400),
    Experiment("sandwich-20", PPCA_8D, "20 points, 8 chains x 50 temperatures x 10 leapfrog",
               sandwiches(ppca_8d, 20, AISSettings(steps=50, chains=8)), 200),
    Experiment("sandwich-20-lf2", PPCA_8D, "20 points, 8 chains x 50 temperatures x 2 leapfrog",
               sandwiches(ppca_8d, 20, AISSettings(steps=50, chains=8, leapfrog_steps=2)), 100, 40),
    Experiment("sandwich-100", PPCA, "100 points, 16 chains x 100 temperatures x 5 leapfrog",
               sandwiches(ppca, 100, AISSettings(steps=100, chains=16, leapfrog_steps=5)), 200),
]


# ---------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One reported quantity of one experiment, and how its standard error compares with its spread."""

    experiment: Experiment
    estimator: str
    where: str
    calibration: Calibration
    seconds: tuple[float, float]  # wall and CPU time of its experiment

    @property
    def judged_against(self) -> str:
        return JUDGED_AGAINST[self.estimator]

    @property
    def coverage(self) -> float:
        """The coverage the aims judge: of the truth, or of the long-run mean for a stochastic bound."""
        calibration = self.calibration
        return calibration.covers_truth if self.judged_against == "truth" else calibration.covers_mean

    def within(self, ratio: tuple[float, float], coverage: tuple[float, float]) -> bool:
        """Whether the ratio and the coverage lie within the bounds; an estimator that may decline (see
        :class:`Experiment`) meets them by declining, and otherwise by the repeats where it did not."""
        calibration = self.calibration
        if calibration.declined and not self.experiment.may_decline:
            return False
        if calibration.declined == calibration.repeats:
            return True
        return ratio[0] <= calibration.ratio <= ratio[1] and coverage[0] <= self.coverage <= coverage[1]


def measure(experiment: Experiment, repeats: int) -> list[Row]:
    """Run ``experiment`` from ``repeats`` seeds on one torch thread; one :class:`Row` per reported quantity."""
    started, cpu = time.perf_counter(), time.process_time()
    with intra_op_threads(1):  # small tensors: a second thread costs more than it gives on this 2-core machine
        rows = experiment.run(repeats)
    seconds = (time.perf_counter() - started, time.process_time() - cpu)
    return [Row(experiment, estimator, where, calibrate(r.estimates, r.stderrs, r.truths, r.dof), seconds)
            for (estimator, where), r in rows.items()]


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if math.isnan(value) or math.isinf(value):
        return "no s.e." if math.isnan(value) else "inf"
    small = value != 0 and abs(value) < 10 ** (1 - digits)  # two significant digits, not 0.000, for tiny spreads
    return f"{value:.2g}" if small else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "" if value is None else "-" if math.isnan(value) else f"{value:.0%}"


HEADER = ("estimator", "model", "settings", "where", "R", "bias vs truth", "sd", "rms s.e.", "sd / s.e.",
          "covers truth", "covers long-run mean", "s.e. = 0", "within aims")


def table(rows: list[Row]) -> str:
    """A markdown table of the rows."""
    lines = ["| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]
    for row in rows:
        calibration = row.calibration
        judged = {"truth": _share(calibration.covers_truth), "mean": _share(calibration.covers_mean)}
        judged[row.judged_against] = f"**{judged[row.judged_against]}**"  # the one the aims judge
        cells = (row.estimator, row.experiment.model, row.experiment.settings, row.where, str(calibration.repeats),
                 _number(calibration.bias), _number(calibration.spread), _number(calibration.stderr),
                 _number(calibration.ratio, 2), judged["truth"], judged["mean"],
                 str(calibration.zero) if calibration.zero else "",
                 "yes" if row.within(RATIO_AIM, COVERAGE_AIM) else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args) -> list[Row]:
    chosen = [e for e in EXPERIMENTS if (not args.only or e.name in args.only.split(","))
              and (not args.quick or e.quick_repeats is not None)]
    unknown = set(args.only.split(",")) - {e.name for e in EXPERIMENTS} if args.only else set()
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(e.name for e in EXPERIMENTS)}")
    rows = []
    for experiment in chosen:
        repeats = args.repeats or (experiment.quick_repeats if args.quick else experiment.repeats)
        measured = measure(experiment, repeats)
        rows.extend(measured)
        wall, cpu = measured[0].seconds
        print(f"{experiment.name}: {repeats} repeats in {wall:.1f} s ({cpu:.1f} s CPU)", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--repeats", type=int, default=None,
                        help="repeats of every experiment (default: each experiment's own, 12 to 800)")
    parser.add_argument("-q", "--quick", action="store_true", help="only the CI's experiments, with fewer repeats")
    parser.add_argument("--only", default="", help="comma-separated experiment names")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
