import math

import pytest
import torch

from elbogap.inference import choose_method, evaluate, quadrature_log_px
from elbogap.model import VAE
from tests.conftest import draw_linear_data, optimal_diag_guide


def test_quadrature_matches_the_exact_linear_evidence(linear_model, linear_data):
    estimate, error = quadrature_log_px(linear_model, linear_data[:50])
    exact = linear_model.log_px(linear_data[:50])
    torch.testing.assert_close(estimate, exact, atol=1e-6, rtol=0)
    assert (error < 1e-4).all()


def test_quadrature_finds_a_narrow_posterior_far_from_the_origin(linear_model):
    """A sharp likelihood (sigma = 0.01) centres the posterior in a tiny box; the second grid resolves it."""
    sharp = type(linear_model).from_params(linear_model.weight, linear_model.bias, 0.01).to(torch.float64)
    x = torch.tensor([[2.0, 1.5, -0.2, 2.1, -0.1]], dtype=torch.float64) * 2.5
    estimate, _ = quadrature_log_px(sharp, x, num_points=64)
    torch.testing.assert_close(estimate, sharp.log_px(x), atol=1e-4, rtol=0)


def iwae_per_point(model, guide, x, num_samples):
    torch.manual_seed(num_samples)
    return evaluate(model, guide, x, iw_samples=num_samples, elbo_samples=1,
                    log_px_method="iwae").per_point


def test_importance_weighted_estimate_rises_with_k_and_stays_below_exact(linear_model):
    """A mean-field guide twice too wide (gap about 1 nat) as the proposal, on 2000 points."""
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)
    data = draw_linear_data(linear_model, 2000)
    exact = linear_model.log_px(data)
    previous = None
    for k in (1, 4, 16, 64):
        estimate = iwae_per_point(linear_model, guide, data, k)["log_px"]
        shortfall = exact - estimate
        # Below the exact value: the mean shortfall is positive beyond 3 standard errors over points.
        assert shortfall.mean() > -3 * shortfall.std() / math.sqrt(len(shortfall))
        if previous is not None:
            rise = estimate - previous
            assert rise.mean() > 3 * rise.std() / math.sqrt(len(rise))
        previous = estimate
    final = iwae_per_point(linear_model, guide, data[:200], 20000)
    gap_left = (exact[:200] - final["log_px"]).mean()
    assert 0 <= gap_left + 3 * final["log_px_stderr"].pow(2).mean().sqrt()


def test_importance_standard_error_matches_the_spread_over_repeats(linear_model, linear_data):
    """The stderr of one estimate predicts the spread of repeated estimates (a guide wider than the posterior, so the
    weights have finite variance and IWAE an error bar)."""
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)
    x = linear_data[:1]
    runs = [iwae_per_point(linear_model, guide, x, 500 + i) for i in range(60)]
    spread = torch.stack([r["log_px"] for r in runs]).std()
    predicted = torch.stack([r["log_px_stderr"] for r in runs]).mean()
    assert 0.6 < float(spread / predicted) < 1.6  # 60 repeats: the spread itself is known to ~10%


@pytest.mark.parametrize(("latent_dim", "expected"), [(2, "quadrature"), (3, "iwae")])
def test_method_is_the_most_exact_the_model_allows(latent_dim, expected, linear_model):
    assert choose_method(linear_model) == "exact"
    assert choose_method(VAE(4, latent_dim)) == expected


@pytest.mark.parametrize("name", ["exact", "quadrature", "iwae", "ais"])
def test_every_registered_method_estimates_the_linear_evidence_per_point(name, linear_model, linear_data):
    """Each method runs from the registry alone: per-point values and errors, and how many samples it used."""
    from elbogap.inference.ais import AISSettings
    from elbogap.inference.log_px import LogPxEstimate, LogPxSettings, methods

    x = linear_data[:6]
    guide = optimal_diag_guide(linear_model, scale_factor=2.0)  # weights of finite variance: IWAE has an error bar
    from_q = evaluate(linear_model, guide, x, elbo_samples=1, iw_samples=500, log_px_method="iwae").per_point
    settings = LogPxSettings(quadrature_points=32, ais=AISSettings(steps=50, chains=8, leapfrog_steps=2),
                             q_samples=500)
    estimate = methods()[name].estimate(linear_model, guide, x, torch.arange(6), settings, from_q)
    assert isinstance(estimate, LogPxEstimate) and estimate.values.shape == estimate.stderr.shape == (6,)
    if name == "quadrature":  # two stages of the zoomed grid, and a third grid where the error is tightened
        assert estimate.info["samples"] in (2 * 32**2, 2 * 32**2 + 31**2)
    else:
        assert estimate.info["samples"] == {"exact": 0, "iwae": 500, "ais": 8}[name]
    assert (estimate.values - linear_model.log_px(x)).abs().max() < 0.05 + 4 * estimate.stderr.max()


def test_a_programs_mask_and_scale_count_in_log_px_as_in_svi():
    """Per-point models: a program that masks its observation on some rows (log p(x) = 0 there: nothing observed) and
    one that tempers its likelihood by 1/2, scored by quadrature against their closed forms. Before, both were
    scored as the plain program (the mask and the scale ignored) while SVI honoured them."""
    import pyro
    import pyro.distributions as dist
    from pyro import poutine

    import elbogap
    from tests.conftest import known_linear_model

    linear = known_linear_model()
    weight, bias, sigma = linear.weight, linear.bias, float(linear.sigma)
    x = draw_linear_data(linear, 12, seed=4)

    def likelihood(z, x):
        return dist.Normal(z @ weight.T + bias, sigma).to_event(1)

    def masked(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            with poutine.mask(mask=x[:, 0] > 0.5):
                pyro.sample("x", likelihood(z, x), obs=x)

    def tempered(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            with poutine.scale(scale=0.5):
                pyro.sample("x", likelihood(z, x), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    plain = linear.log_px(x)
    exact_masked = torch.where(x[:, 0] > 0.5, plain, torch.zeros_like(plain))
    wide = dist.MultivariateNormal(bias, weight @ weight.T + 2 * sigma**2 * torch.eye(5, dtype=x.dtype))
    exact_tempered = wide.log_prob(x) + 2.5 * math.log(4 * math.pi * sigma**2) - 1.25 * math.log(2 * math.pi * sigma**2)
    for program, exact in ((masked, exact_masked), (tempered, exact_tempered)):
        evaluation = elbogap.evaluate(program, guide, x, log_px="quadrature", quadrature_points=64)
        assert torch.allclose(evaluation.per_point["log_px"].double(), exact, atol=1e-3)


def test_auto_fills_in_by_ais_the_points_that_quadrature_left_without_an_error_bar():
    """A program that computes in float32 (its proportions cast with .float()): quadrature's grid on Dirichlet(0.2,
    0.3, 0.5) proportions does not settle where their stick-breaking numbers saturate, and says so (no error bar).
    Under --log-px auto, AIS now gives those points' log p(x), within their errors of the Dirichlet-multinomial
    closed form; the other points keep the quadrature's, and the split's error adds its bounds to AIS's random
    errors. Before, those points kept their NaN errors, and the split mean their values, 10-40 nats low."""
    import elbogap
    from elbogap.inference.ais import AISSettings
    from tests.estimators.truth import PROPORTIONS_ALPHA as alpha
    from tests.estimators.truth import dirichlet_multinomial_evidence, proportions_rows
    from tests.estimators.truth import flat_proportions_guide as guide
    from tests.estimators.truth import float32_proportions as proportions

    x = proportions_rows(16)
    evaluation = elbogap.evaluate(proportions, guide, x, elbo_samples=16, quadrature_points=24,
                                  ais=AISSettings(steps=200, chains=16))
    metrics, per_point = evaluation.metrics, evaluation.per_point
    filled = ~per_point["log_px_systematic"]
    assert metrics["log_px_method"] == "quadrature" and metrics["log_px_filled_by"] == "ais"
    assert metrics["log_px_filled_points"] == int(filled.sum()) > 0 and "left" in metrics["log_px_note"]
    assert not bool(per_point["log_px_stderr"].isnan().any())
    error = (per_point["log_px"].double() - dirichlet_multinomial_evidence(x.double(), alpha, 20)).abs()
    assert bool((error[filled] < 4 * per_point["log_px_stderr"][filled] + 0.05).all()), error[filled]
    assert bool((error[~filled] <= per_point["log_px_stderr"][~filled] + 1e-4).all())
    combined = per_point["log_px_jackknife_stderr"].double()  # a quadrature's: its bounds; AIS's: the jackknife's
    expected = (float(combined[~filled].sum()) + float(combined[filled].pow(2).sum().sqrt())) / len(x)
    assert metrics["log_px_stderr"] == pytest.approx(expected)  # bounds add, random errors in quadrature
    from elbogap.guides import ProgramGuide
    from elbogap.user_model import ProgramModel

    model = ProgramModel(proportions, x[:3])  # the cheap curve during training fills in nothing (5 s an evaluation)
    cheap = evaluate(model, ProgramGuide(guide, model, x[:3], "guide"), x, elbo_samples=16, quadrature_points=24,
                     refine_quadrature=False)
    assert "log_px_filled_by" not in cheap.metrics and bool(cheap.per_point["log_px_stderr"].isnan().any())
    low, high = evaluation.interval("log_px")  # each point's own quantile: AIS's t on its few groups, else normal
    ratio = (high - low) / (2 * per_point["log_px_stderr"].double())
    assert torch.allclose(ratio[~filled], torch.tensor(1.96, dtype=torch.float64), atol=0.01)
    assert torch.allclose(ratio[filled], torch.tensor(2.47, dtype=torch.float64), atol=0.05)


def test_a_filled_point_far_below_qs_iwae_takes_iwaes_value_with_no_error_bar():
    """A tester's Cauchy prior with one row 1,826 units out: quadrature's box never reached it (no error bar), and
    AIS's start did not either: it read about -11,800 nats against a truth of -19.5, and the split's KL gaps read
    -183 and -261 with small errors. Where the fill lies far below q's IWAE (both lower bounds in expectation), the
    point takes IWAE's value, with no error bar, and the note says so; the split then has no ± either."""
    import pyro
    import pyro.distributions as dist

    import elbogap
    from elbogap.inference.ais import AISSettings

    def cauchy(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(x.new_tensor(1.0), 0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 0.5).to_event(1), obs=x)

    def guide(x):  # the posterior's own shape about each row's mean, as a trained guide would find it
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.mean(-1), 0.5 / math.sqrt(x.shape[1])))

    torch.manual_seed(0)
    x = torch.tensor([0.3, -1.2, 2.0, 0.7, 1826.0])[:, None] + 0.5 * torch.randn(5, 5)
    grid = torch.linspace(-50, 2000, 2_000_001, dtype=torch.float64)
    prior = torch.distributions.StudentT(1.0, 0.0, 1.0).log_prob(grid)
    exact = torch.stack([torch.logsumexp(prior + torch.distributions.Normal(grid[:, None], 0.5).log_prob(
        row.double()).sum(-1), 0) + math.log(grid[1] - grid[0]) for row in x])
    evaluation = elbogap.evaluate(cauchy, guide, x, elbo_samples=64, quadrature_points=24,
                                  ais=AISSettings(steps=100, chains=8))
    per_point, metrics = evaluation.per_point, evaluation.metrics
    assert per_point["log_px_stderr"][:4].isfinite().all() and per_point["log_px_stderr"][4].isnan()
    assert abs(float(per_point["log_px"][4] - exact[4])) < 0.05  # IWAE's, from a q near the posterior
    assert "it fell below q's IWAE" in metrics["log_px_note"] and math.isnan(metrics["log_px_stderr"])
