"""A modeler's own Pyro programs, as written: tutorial-style classes, own site names, hierarchies, refusals."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from elbogap.cli import main
from elbogap.config import Config
from elbogap.data import load_data
from elbogap.errors import UsageError
from elbogap.factory import build, load_dataset
from elbogap.inference import evaluate, quadrature_log_px
from elbogap.inference.ais import AISSettings, ais_log_px
from elbogap.runs import load_run
from elbogap.user_model import ProgramModel
from tests.estimators.truth import dirichlet_multinomial_evidence

TUTORIAL_VAE = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn


class VAE(nn.Module):
    """As Pyro's VAE tutorial writes it: own site names, no subsampling, pyro.module registrations."""

    def __init__(self, z_dim=2, hidden=16, x_dim=64):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim))
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("batch", x.shape[0]):
            loc = torch.zeros(x.shape[0], self.z_dim)
            latent = pyro.sample("latent", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(latent)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("batch", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))


class NeedsThree:
    def __init__(self, a, b, c):
        pass


NOT_CALLABLE = 3


def fails(x):
    raise RuntimeError("shape mismatch in my decoder")


def global_latent(x):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), scale).to_event(1), obs=x)


def discrete_latent(x):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("x", dist.Normal(c.unsqueeze(-1).float(), 1.0).to_event(1), obs=x)


def covariance_latent(x):
    with pyro.plate("data", len(x)):
        cov = pyro.sample("cov", dist.Wishart(torch.tensor(3.0), torch.eye(2)))
        pyro.sample("x", dist.MultivariateNormal(x.new_zeros(2), cov), obs=x[:, :2])


def global_covariance(x):
    cov = pyro.sample("cov", dist.Wishart(torch.tensor(3.0), torch.eye(2)))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.MultivariateNormal(x.new_zeros(2), cov), obs=x[:, :2])


def misses_a_site(x):
    with pyro.plate("batch", len(x)):
        pyro.sample("other", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))


def forgets_to_event(x):
    with pyro.plate("batch", len(x)):
        pyro.sample("latent", dist.Normal(torch.zeros(len(x), 2), 1.0))
'''

CHAIN = '''
import pyro
import pyro.distributions as dist
import torch

A = torch.tensor([[1.5, 0.2], [-0.5, 0.8]])[:{b}, :{a}]
B = torch.tensor([[1.0, 0.3], [0.4, -1.0], [0.7, 0.9]])[:, :{b}]


def chain(x):
    """z1 ~ N(0, I), z2 | z1 ~ N(A z1, 0.5^2 I), x | z2 ~ N(B z2, 0.4^2 I): two latent sites."""
    with pyro.plate("data", len(x)):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros({a}), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(z1 @ A.T, 0.5).to_event(1))
        pyro.sample("x", dist.Normal(z2 @ B.T, 0.4).to_event(1), obs=x)


def chain_guide(x):
    """A linear-Gaussian guide for both sites (z2 given z1), fitted by SVI."""
    w1 = pyro.param("w1", torch.zeros(3, {a}))
    s1 = pyro.param("s1", torch.ones({a}), constraint=dist.constraints.positive)
    w2 = pyro.param("w2", torch.zeros(3, {b}))
    c2 = pyro.param("c2", torch.zeros({a}, {b}))
    s2 = pyro.param("s2", torch.ones({b}), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        z1 = pyro.sample("z1", dist.Normal(x @ w1, s1).to_event(1))
        pyro.sample("z2", dist.Normal(x @ w2 + z1 @ c2, s2).to_event(1))
'''


def chain_evidence(x, a, b):
    """Closed form: x ~ N(0, B (A A^T + 0.25 I) B^T + 0.16 I)."""
    A = torch.tensor([[1.5, 0.2], [-0.5, 0.8]])[:b, :a]
    B = torch.tensor([[1.0, 0.3], [0.4, -1.0], [0.7, 0.9]])[:, :b]
    cov = B @ (A @ A.T + 0.25 * torch.eye(b)) @ B.T + 0.16 * torch.eye(3)
    return torch.distributions.MultivariateNormal(torch.zeros(3), cov).log_prob(x)


@pytest.fixture
def programs(tmp_path):
    (tmp_path / "my_vae.py").write_text(TUTORIAL_VAE)
    return tmp_path


def chain_file(tmp_path, a, b):
    path = tmp_path / f"chain{a}{b}.py"
    path.write_text(CHAIN.format(a=a, b=b))
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(200, a, generator=generator)
    A = torch.tensor([[1.5, 0.2], [-0.5, 0.8]])[:b, :a]
    B = torch.tensor([[1.0, 0.3], [0.4, -1.0], [0.7, 0.9]])[:, :b]
    z2 = z1 @ A.T + 0.5 * torch.randn(200, b, generator=generator)
    x = z2 @ B.T + 0.4 * torch.randn(200, 3, generator=generator)
    import numpy as np

    np.save(tmp_path / f"chain{a}{b}.npy", x.numpy())
    return path, tmp_path / f"chain{a}{b}.npy"


QUICK = ["--steps", "60", "--eval-samples", "16", "--iw-samples", "64", "--seeds", "0", "--quiet", "--no-figures",
         "--quadrature-points", "24", "--ais-steps", "30", "--ais-chains", "4", "--leapfrog-steps", "2",
         "--gap-points", "8", "--curve-points", "16", "--jobs", "1"]


def test_a_tutorial_vae_class_is_compared_as_model_and_guide_beside_builtin_guides(programs):
    out = programs / "out"
    spec = f"{programs}/my_vae.py:VAE"
    assert main(["compare", "--model", spec, "--guides", f"{spec},diag", "--out", str(out), *QUICK,
                 "--train-size", "200", "--test-size", "40"]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [run["guide"] for run in runs] == ["my_vae.VAE", "diag"]
    assert runs[0]["guide_spec"] == spec and (out / "runs" / "my_vae.VAE-seed0" / "checkpoint.pt").is_file()
    for run in runs:  # 2 latent dimensions read off the trace, so log p(x) by quadrature for both
        test = run["test"]
        assert test["log_px_method"] == "quadrature" and math.isfinite(test["elbo"])
        assert test["kl_gap"] > -3 * test["kl_gap_stderr"]
    assert "gap_split" in runs[0]["test"] and "approx_gap" in runs[1]["test"]
    assert "approx_gap" not in runs[0]["test"]


def test_a_two_latent_hierarchy_has_exact_quadrature_and_its_guide_program_obeys_the_identity(tmp_path):
    """z1, z2 one dimension each: 2 latent dimensions in all, so quadrature gives log p(x) exactly."""
    path, data = chain_file(tmp_path, 1, 1)
    config = Config(data=str(data), model=f"{path}:chain", guides=[f"{path}:chain_guide"],
                    seeds=[0])
    dataset = load_data(str(data))
    model, guide = build(config, dataset, f"{path}:chain_guide")
    assert model.latent_sites == {"z1": torch.Size([1]), "z2": torch.Size([1])} and model.latent_dim == 2
    x = dataset.test
    evaluation = evaluate(model, guide, x, elbo_samples=2000, iw_samples=10)
    exact = chain_evidence(x, 1, 1)
    torch.testing.assert_close(evaluation.per_point["log_px"].float(), exact, atol=2e-3, rtol=0)
    # any guide's ELBO is below log p(x): here an untrained one, so the gap is large and certain
    gap = evaluation.per_point["kl_gap"]
    assert float(gap.mean()) > 4 * evaluation.metrics["kl_gap_stderr"]


def test_ais_on_a_four_dimensional_hierarchy_recovers_its_evidence(tmp_path):
    path, data = chain_file(tmp_path, 2, 2)
    out = tmp_path / "out"
    assert main(["compare", "--data", str(data), "--model", f"{path}:chain", "--guides", f"{path}:chain_guide",
                 "--out", str(out), "--steps", "300", "--lr", "0.02", "--eval-samples",
                 "64", "--iw-samples", "500", "--seeds", "0", "--quiet", "--no-figures", "--log-px", "ais",
                 "--ais-steps", "100", "--ais-chains", "16", "--leapfrog-steps", "4", "--gap-points", "8"]) == 0
    test = json.loads((out / "results.json").read_text())["runs"][0]["test"]
    exact = float(chain_evidence(load_data(str(data)).test, 2, 2).mean())
    assert test["log_px_method"] == "ais"
    assert abs(test["log_px"] - exact) < 0.05 + 4 * test["log_px_stderr"]
    assert test["elbo"] < exact and abs(test["log_px_iwae"] - exact) < 0.5  # the fitted guide is close


@pytest.mark.parametrize(("entry", "role", "message"), [
    ("NeedsThree", "model", "can be built neither as NeedsThree"),
    ("NOT_CALLABLE", "model", "is not callable"),
    ("fails", "model", "data points: RuntimeError: shape mismatch"),  # tried on 3 rows, then on all
    ("fails", "model", "in my decoder (my_vae.py:"),  # where, in the user's file: before any site
    ("fails", "model", " in fails, before its first site)"),
    ("global_latent", "model", "has global latents (scale): use Pyro's autoguides"),  # judged on all of D
    ("discrete_latent", "model", "discrete latent site 'c'"),
    ("covariance_latent", "model", "latent site 'cov' on PositiveDefinite(), which torch maps one to one onto no"),
    ("global_covariance", "model", "latent site 'cov' on PositiveDefinite(), which torch maps one to one onto no"),
    ("misses_a_site", "guide", "does not sample the model's latent site(s) latent"),
    ("forgets_to_event", "guide", "failed on a batch of 3 data points: ValueError: Shape mismatch inside plate"),
    ("forgets_to_event", "guide", " in forgets_to_event, at site 'latent')"),
])
def test_programs_that_cannot_be_measured_are_refused_in_one_line(programs, entry, role, message, capsys):
    spec = f"{programs}/my_vae.py:{entry}"
    model = spec if role == "model" else f"{programs}/my_vae.py:VAE"
    guides = "diag" if role == "model" else spec
    assert main(["compare", "--model", model, "--guides", guides, "--out", str(programs / "o"), *QUICK]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def best_mean_field_kl(precision: torch.Tensor) -> torch.Tensor:
    r"""The least KL from a diagonal Gaussian to a Gaussian of precision :math:`\Lambda`: its variances are
    :math:`1/\Lambda_{ii}`, and the KL is :math:`\tfrac12 (\sum_i \log \Lambda_{ii} - \log |\Lambda|)`."""
    return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))


def test_builtin_families_draw_several_latent_sites_as_one_joint_vector(tmp_path):
    """The chain z1 -> z2 -> x, one dimension each, has a Gaussian posterior of one precision for every point: full's
    approximation gap is 0 and diag's the best mean-field KL, in closed form (they were refused before)."""
    path, data = chain_file(tmp_path, 1, 1)
    out = tmp_path / "out"
    assert main(["compare", "--data", str(data), "--model", f"{path}:chain", "--guides", "diag,full", "--seeds", "0",
                 "--steps", "600", "--gap-points", "40", "--snr-draws", "0", "--eval-samples", "64", "--quiet",
                 "--no-figures", "--jobs", "1", "--out", str(out)]) == 0
    diag, full = (run["test"] for run in json.loads((out / "results.json").read_text())["runs"])
    exact = float(chain_evidence(load_data(str(data)).test, 1, 1).mean())
    a, b = 1.5, torch.tensor([1.0, 0.4, 0.7])  # the chain's A and B for one dimension each
    precision = torch.tensor([[1 + a * a / 0.25, -a / 0.25], [-a / 0.25, 1 / 0.25 + float(b @ b) / 0.16]])
    for test in (diag, full):
        assert test["log_px_method"] == "quadrature" and abs(test["log_px"] - exact) < 1e-3
    best = float(best_mean_field_kl(precision.double()))  # 0.145
    assert abs(diag["approx_gap"] - best) < 4 * diag["approx_gap_stderr"] + 0.01, (diag["approx_gap"], best)
    assert abs(full["approx_gap"]) < 4 * full["approx_gap_stderr"] + 0.01, full["approx_gap"]


def test_positive_latent_sites_drawn_as_one_joint_vector_map_each_into_its_support(tmp_path):
    """Two scalar Gamma rates per point, each a site of its own, under --gradient stl: diag's approximation gap is the
    best log-normal KL to each rate's Gamma posterior, summed."""
    results, x = counts_study(tmp_path, ["a = pyro.sample('a', dist.Gamma(x.new_tensor(2.0), 1.0))",
                                         "b = pyro.sample('b', dist.Gamma(x.new_tensor(2.0), 1.0))",
                                         "rates = torch.stack([a, b], -1)"], ["diag", "--gradient", "stl"])
    test = results["runs"][0]["test"]
    assert abs(test["log_px"] - float(gamma_poisson_evidence(x).mean())) < 4 * test["log_px_stderr"] + 1e-3
    shape = 2.0 + x.reshape(len(x), 2, GAMMA_POISSON_COUNTS).sum(-1)
    best = float(best_lognormal_kl(shape).sum(-1).mean())
    assert abs(test["approx_gap"] - best) < 4 * test["approx_gap_stderr"] + 0.01, (test["approx_gap"], best)


def test_each_loaded_run_keeps_its_own_program_parameters(tmp_path):
    """Two runs of a program whose parameters live only in Pyro's param store (pyro.param)."""
    path, data = chain_file(tmp_path, 1, 1)
    out = tmp_path / "out"
    assert main(["compare", "--data", str(data), "--model", f"{path}:chain", "--guides", f"{path}:chain_guide",
                 "--seeds", "0,1", "--out", str(out), "--steps", "30", "--lr", "0.05",
                 "--eval-samples", "8", "--iw-samples", "8", "--gap-points", "0", "--quiet", "--figures"]) == 0
    assert (out / "posteriors.png").is_file()
    states = []
    for seed in (0, 1):
        *_, checkpoint = load_run(out / "runs" / f"chain11.chain_guide-seed{seed}")
        saved = checkpoint["trainer"]["guide"]["s1"]  # a positive-constrained parameter, trained away from 1
        assert not torch.allclose(saved, torch.ones_like(saved))
        torch.testing.assert_close(pyro.param("s1").detach(), saved)
        states.append(pyro.get_param_store().get_state())
    first, second = (state["params"]["w1"].detach().clone() for state in states)
    assert not torch.equal(first, second)
    with pyro.get_param_store().scope(states[0]):
        torch.testing.assert_close(pyro.param("w1").detach(), first)


def test_ais_from_q_is_refused_for_a_guide_program(tmp_path):
    path, data = chain_file(tmp_path, 1, 1)
    dataset = load_data(str(data))
    model, guide = build(Config(data=str(data), model=f"{path}:chain"), dataset, f"{path}:chain_guide")
    with pytest.raises(UsageError, match="--ais-init q needs a guide whose density can be evaluated at any z"):
        evaluate(model, guide, dataset.test[:4], log_px_method="ais", ais=AISSettings(steps=4, chains=2, init="q"))


def test_autonormal_by_name_is_a_per_datapoint_family(tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "--guides", "auto:AutoNormal,local", "--out", str(out), *QUICK, "--train-size", "120",
                 "--test-size", "30", "--hidden-dims", "16"]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [run["guide"] for run in runs] == ["auto-AutoNormal", "local"]
    auto, local = runs[0]["test"], runs[1]["test"]
    assert auto["log_px_method"] == "quadrature" and auto["amort_gap"] == 0  # fitted per point: no amortization
    assert auto["approx_gap"] == pytest.approx(auto["gap_kl"])
    # both are mean-field normals fitted per point: their test gaps agree within the fits' noise
    assert abs(auto["kl_gap"] - local["kl_gap"]) < 0.1 + 4 * math.hypot(auto["kl_gap_stderr"], local["kl_gap_stderr"])
    # on the 8 gap points too: its log q there counted 30/8 times (the plate's subsample scale), and a tester's
    # ELBO of q on 4 of 240 points read +109 nats, far above log p(x)
    for split in ("test", "train"):
        auto, local = runs[0][split], runs[1][split]
        assert auto["gap_elbo"] < auto["gap_log_px"] + 4 * auto["approx_gap_stderr"]
        assert abs(auto["approx_gap"] - local["approx_gap"]) < 0.1 + 4 * math.hypot(auto["approx_gap_stderr"],
                                                                                   local["approx_gap_stderr"])


@pytest.mark.parametrize(("guide", "message"), [
    ("auto:AutoMultivariateNormal", "couples the data points"),
    ("auto:NoSuchGuide", "is no Pyro autoguide"),
])
def test_autoguides_that_are_no_family_of_q_z_given_x_are_refused(tmp_path, guide, message, capsys):
    assert main(["compare", "--guides", guide, "--out", str(tmp_path / "o"), *QUICK]) == 2
    assert message in capsys.readouterr().err


def test_autonormal_needs_a_subsampled_data_plate(programs, capsys):
    assert main(["compare", "--model", f"{programs}/my_vae.py:VAE", "--guides", "auto:AutoNormal",
                 "--out", str(programs / "o"), *QUICK]) == 2
    assert "the model's data plate does not subsample" in capsys.readouterr().err


GAMMA_POISSON_COUNTS = 5  # counts per rate


def gamma_poisson(x):
    """Two positive rates per point, each behind 5 Poisson counts: the evidence is a product of negative binomials."""
    import pyro.distributions as dist

    with pyro.plate("data", x.shape[0]):
        rate = pyro.sample("rate", dist.Gamma(torch.full((x.shape[0], 2), 2.0, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("counts", dist.Poisson(rate.repeat_interleave(GAMMA_POISSON_COUNTS, -1)).to_event(1), obs=x)


def gamma_poisson_evidence(x, shape=2.0, rate=1.0):
    """log p(x) = sum over rates of log [b^a / G(a) * G(a + S) / (b + m)^(a + S) / prod x!]."""
    groups = x.reshape(len(x), 2, GAMMA_POISSON_COUNTS)
    total = groups.sum(-1)
    per_rate = (shape * math.log(rate) - math.lgamma(shape) + torch.lgamma(shape + total)
                - (shape + total) * math.log(rate + GAMMA_POISSON_COUNTS) - torch.lgamma(groups + 1).sum(-1))
    return per_rate.sum(-1)


def test_positive_latents_are_integrated_on_the_log_scale_with_their_jacobian():
    """Quadrature (2-D) and AIS over log-rates recover the closed-form evidence of a Gamma-Poisson model."""
    from elbogap.inference import quadrature_log_px
    from elbogap.inference.ais import ais_log_px
    from elbogap.user_model import ProgramModel

    generator = torch.Generator().manual_seed(0)
    rates = torch.distributions.Gamma(2.0, 1.0).sample((20, 2))
    x = torch.poisson(rates.repeat_interleave(GAMMA_POISSON_COUNTS, -1), generator=generator).double()
    model = ProgramModel(gamma_poisson, x[:3])
    assert list(model.latent_transforms) == ["rate"] and model.latent_dim == 2
    exact = gamma_poisson_evidence(x)
    quadrature, _ = quadrature_log_px(model, x, 48)
    torch.testing.assert_close(quadrature, exact, rtol=0, atol=1e-3)
    result = ais_log_px(model, x, AISSettings(steps=200, chains=16, leapfrog_steps=5))
    error = float((result.log_px - exact).mean())
    assert abs(error) < 0.03 + 4 * float(result.stderr.pow(2).sum().sqrt() / len(x))


def best_lognormal_kl(shape: torch.Tensor) -> torch.Tensor:
    r"""The least :math:`\mathrm{KL}(\mathrm{LogNormal}(m, s) \| \mathrm{Gamma}(A, B))` over :math:`m, s`: at
    :math:`s^2 = 1/A`, :math:`m = \log(A/B) - 1/(2A)`, it is :math:`\log\Gamma(A) + A - (A - \tfrac12)\log A -
    \tfrac12 \log 2\pi` whatever :math:`B` (Stirling's remainder)."""
    return torch.lgamma(shape) + shape - (shape - 0.5) * shape.log() - 0.5 * math.log(2 * math.pi)


def counts_study(tmp_path, lines: list[str], guides: list[str]) -> tuple[dict, torch.Tensor]:
    """A program whose ``lines`` draw the two Gamma(2, 1) ``rates`` of a point, each behind 5 Poisson counts, fitted
    to 150 rows by ``compare --guides GUIDES...`` (300 steps, every test point a gap point): results and test rows."""
    body = "".join(f"        {line}\n" for line in lines)
    (tmp_path / "counts.py").write_text(
        "import pyro, torch\nimport pyro.distributions as dist\n\n\ndef model(x):\n"
        f"    with pyro.plate('data', x.shape[0]):\n{body}"
        f"        counts = rates.repeat_interleave({GAMMA_POISSON_COUNTS}, -1)\n"
        "        pyro.sample('x', dist.Poisson(counts).to_event(1), obs=x)\n")
    rates = torch.distributions.Gamma(2.0, 1.0).sample((150, 2))
    np.save(tmp_path / "counts.npy", torch.poisson(rates.repeat_interleave(GAMMA_POISSON_COUNTS, -1)).numpy())
    out = tmp_path / "out"
    assert main(["compare", "--data", str(tmp_path / "counts.npy"), "--model", f"{tmp_path}/counts.py:model",
                 "--guides", *guides, "--seeds", "0", "--steps", "300", "--gap-points", "30", "--snr-draws", "0",
                 "--eval-samples", "64", "--quiet", "--no-figures", "--jobs", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    return results, load_dataset(Config(**results["config"])).test.double()


def test_builtin_families_fit_a_positive_latent_mapped_into_its_support(tmp_path):
    """Each family is fitted on the real line and its draws mapped into the site's support (exp for a Gamma rate), as
    Pyro's autoguides are (they were refused before): log p(x) is the closed form, diag's approximation gap is the
    KL of the best log-normal to each rate's Gamma posterior, and the mixture trains on its sum over components."""
    rate = "rates = pyro.sample('rate', dist.Gamma(x.new_full((2,), 2.0), 1.0).to_event(1))"
    results, x = counts_study(tmp_path, [rate], ["diag,mixture"])
    assert len(x) == 30  # every test point is a gap point
    exact = float(gamma_poisson_evidence(x).mean())
    shape = 2.0 + x.reshape(len(x), 2, GAMMA_POISSON_COUNTS).sum(-1)
    best = float(best_lognormal_kl(shape).sum(-1).mean())  # the two rates' posteriors are independent
    diag, mixture = (run["test"] for run in results["runs"])
    for test in (diag, mixture):
        assert test["log_px_method"] == "quadrature"
        assert abs(test["log_px"] - exact) < 4 * test["log_px_stderr"] + 1e-3, (test["log_px"], exact)
        assert test["kl_gap"] > -4 * test["kl_gap_stderr"]
    assert abs(diag["approx_gap"] - best) < 4 * diag["approx_gap_stderr"] + 0.01, (diag["approx_gap"], best)
    assert mixture["approx_gap"] < diag["approx_gap"] + 4 * math.hypot(diag["approx_gap_stderr"],
                                                                       mixture["approx_gap_stderr"])


SCALAR_LATENT = '''
import pyro
import pyro.distributions as dist
import torch


def model(x):
    """A scalar latent per point, broadcast by indexing: it runs on a batch, not under an outer plate of draws."""
    w = pyro.param("w", torch.ones(x.shape[1]))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z[:, None] * w, 1.0).to_event(1), obs=x)
'''


def test_builtin_guides_fit_a_scalar_latent_of_a_program_that_does_not_broadcast(tmp_path):
    """The guide samples the site's own shape; q* draws its particles one after another; the Gaussian posterior
    of this 1-D linear model lies in the diagonal family, so the KL gap and the approximation gap vanish against
    log p(x) by quadrature on a line, which scores the program one grid point after another."""
    import numpy as np

    from elbogap.user_model import load_user_model

    (tmp_path / "scalar.py").write_text(SCALAR_LATENT)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1)) * np.array([[1.5, -1.0, 0.5]]) + rng.normal(size=(300, 3))
    np.save(tmp_path / "data.npy", x.astype("float32"))
    assert not load_user_model(f"{tmp_path}/scalar.py:model", torch.zeros(4, 3)).broadcasts_draws
    out = tmp_path / "out"
    assert main(["compare", "--data", str(tmp_path / "data.npy"), "--model", f"{tmp_path}/scalar.py:model",
                 "--guides", "diag", "--seeds", "0", "--steps", "400", "--lr", "0.02", "--hidden-dims", "8",
                 "--eval-samples", "64", "--iw-samples", "64", "--gap-points", "6", "--quiet", "--no-figures",
                 "--jobs", "1", "--out", str(out)]) == 0
    test = json.loads((out / "results.json").read_text())["runs"][0]["test"]
    assert test["log_px_method"] == "quadrature" and test["log_px_points"] == test["num_points"]
    assert abs(test["kl_gap"]) < 0.03 + 4 * test["kl_gap_stderr"]
    assert abs(test["approx_gap"]) < 0.03 + 4 * test["approx_gap_stderr"]


DIRICHLET = torch.tensor([2.0, 1.0, 0.7, 1.5])
MULTINOMIAL_COUNT = 20


def dirichlet_multinomial(x):
    """Each row's proportions on a simplex, behind its counts (as many categories as ``x`` has columns)."""
    with pyro.plate("data", x.shape[0]):
        weights = pyro.sample("weights", dist.Dirichlet(DIRICHLET[:x.shape[1]].to(x)))
        pyro.sample("x", dist.Multinomial(MULTINOMIAL_COUNT, weights), obs=x)


#: proportions that sit near the simplex's edges: their stick-breaking numbers have long tails
SPARSE_DIRICHLET = torch.tensor([0.2, 0.3, 0.5])


def sparse_dirichlet_multinomial(x):
    """As :func:`dirichlet_multinomial`, under :data:`SPARSE_DIRICHLET`."""
    with pyro.plate("data", x.shape[0]):
        weights = pyro.sample("weights", dist.Dirichlet(SPARSE_DIRICHLET.to(x)))
        pyro.sample("x", dist.Multinomial(MULTINOMIAL_COUNT, weights), obs=x)


@pytest.mark.parametrize("categories", [3, 4])
def test_a_simplex_latent_is_integrated_through_stick_breaking_with_its_jacobian(categories):
    """A Dirichlet latent of K proportions is K - 1 numbers on the real line (Pyro's stick-breaking map): quadrature
    (K = 3, a 2-D integral) and AIS (K = 4) recover the Dirichlet-multinomial evidence (it was refused before)."""
    torch.manual_seed(categories)
    weights = torch.distributions.Dirichlet(DIRICHLET[:categories]).sample((20,))
    x = torch.stack([torch.multinomial(w, MULTINOMIAL_COUNT, replacement=True).bincount(minlength=categories)
                     for w in weights]).double()
    model = ProgramModel(dirichlet_multinomial, x[:3])
    assert model.latent_sites == {"weights": (categories,)} and model.latent_dim == categories - 1
    exact = dirichlet_multinomial_evidence(x, DIRICHLET[:categories], MULTINOMIAL_COUNT)
    if categories == 3:
        quadrature, error = quadrature_log_px(model, x, 48)
        assert bool(((quadrature - exact).abs() <= error + 1e-6).all()) and float(error.max()) < 0.01
        return
    result = ais_log_px(model, x, AISSettings(steps=200, chains=16, leapfrog_steps=5))
    error = float((result.log_px - exact).mean())  # below its s.e. at 200 steps, and falling with more (not shown)
    assert abs(error) < 4 * float(result.stderr.pow(2).sum().sqrt() / len(x)) + 0.01, error


def test_sparse_proportions_in_float32_data_are_integrated_in_float64_within_the_stated_error():
    """A tester's Dirichlet(0.2, 0.3, 0.5) rows: in float32 the stick-breaking numbers' long tails saturated, the
    grid never settled on three quarters of the rows, and they read 10-40 nats low with no error bar. Scored in
    float64 (the program follows its data's dtype), every row settles within its stated error of the closed form."""
    torch.manual_seed(1)
    weights = torch.distributions.Dirichlet(SPARSE_DIRICHLET).sample((40,))
    x = torch.stack([torch.multinomial(w, MULTINOMIAL_COUNT, replacement=True).bincount(minlength=3)
                     for w in weights]).float()
    quadrature, error = quadrature_log_px(ProgramModel(sparse_dirichlet_multinomial, x[:3]), x, 24)
    exact = dirichlet_multinomial_evidence(x.double(), SPARSE_DIRICHLET, MULTINOMIAL_COUNT)
    assert not bool(error.isnan().any()) and bool(((quadrature - exact).abs() <= error + 1e-6).all())


def test_a_program_file_imports_the_modules_beside_it(tmp_path):
    """As when Python runs the file: ``from helpers import ...`` finds helpers.py in the same folder."""
    from elbogap.user_model import load_user_model

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helpers.py").write_text("WIDTH = 2\n")
    (folder / "mine.py").write_text(
        "import pyro, torch\nimport pyro.distributions as dist\nfrom helpers import WIDTH\n\n\ndef model(x):\n"
        "    with pyro.plate('data', x.shape[0]):\n"
        "        z = pyro.sample('z', dist.Normal(torch.zeros(x.shape[0], WIDTH), 1.0).to_event(1))\n"
        "        pyro.sample('x', dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)\n")
    assert load_user_model(f"{folder}/mine.py:model", torch.zeros(4, 1)).latent_dim == 2


def test_a_guide_that_forgets_to_event_is_refused_even_where_its_shapes_happen_to_fit():
    """Three points and a 3-D latent: the plate accepts the guide's (3, 3) batch, the event shape gives it away."""
    import pyro.distributions as dist

    from elbogap.guides.program import ProgramGuide
    from elbogap.user_model import ProgramModel

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 3), 1.0))

    x = torch.zeros(3, 1)
    with pytest.raises(UsageError, match=r"samples 'z' with event shape \(\) per point, but the model's 'z' has "
                                         r"\(3,\); declare its per-point dimensions with .to_event\(1\)"):
        ProgramGuide(guide, ProgramModel(model, x), x, "mine.py:guide")


GAMMA_VAE = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn


class GammaVAE(nn.Module):
    """Two positive intensities per image behind a Bernoulli decoder on their logs."""

    def __init__(self, data_dim, latent_dim):
        super().__init__()
        self.dec = nn.Linear(2, data_dim)
        self.enc = nn.Linear(data_dim, 4)

    def model(self, x):
        pyro.module("gamma_vae", self)
        with pyro.plate("data", x.shape[0]):
            rate = pyro.sample("rate", dist.Gamma(torch.full((x.shape[0], 2), 2.0), 2.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(rate.log())).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("gamma_vae", self)
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("rate", dist.LogNormal(h[:, :2], nn.functional.softplus(h[:, 2:]) + 1e-3).to_event(1))
'''


def test_figures_of_a_model_with_positive_latents_draw_from_its_support(tmp_path):
    """Images condition the model on draws mapped back into the support; the posterior panel says which scale."""
    (tmp_path / "gamma_vae.py").write_text(GAMMA_VAE)
    out = tmp_path / "out"
    spec = f"{tmp_path}/gamma_vae.py:GammaVAE"
    assert main(["compare", "--model", spec, "--guides", spec, "--seeds", "0", "--steps", "20", "--eval-samples", "8",
                 "--iw-samples", "8", "--gap-points", "0", "--curve-points", "8", "--quiet", "--jobs", "1",
                 "--figures", "--out", str(out)]) == 0
    assert (out / "images.png").is_file() and (out / "posteriors.png").is_file()
    assert json.loads((out / "results.json").read_text())["runs"][0]["test"]["log_px_method"] == "quadrature"


def test_default_guides_leave_out_a_family_the_model_refuses_and_say_so(tmp_path, capsys):
    """A one-dimensional latent at the default guides: the IAF (autoregressive) and the planar flow (Pyro's divides by
    |w|^2, which one dimension sends to infinity) are left out in one line each, on stderr and in results.md, and
    the others run (before, the whole study was refused); named by the user, a family is refused as bad input."""
    (tmp_path / "scalar.py").write_text(SCALAR_LATENT)
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(60, 3)).astype("float32"))
    common = ["--data", str(tmp_path / "data.npy"), "--model", f"{tmp_path}/scalar.py:model", "--seeds", "0",
              "--steps", "10", "--log-px", "iwae", "--iw-samples", "16", "--eval-samples", "8", "--gap-points", "0",
              "--snr-draws", "0", "--curve-points", "8", "--no-figures", "--jobs", "1"]
    assert main(["compare", *common, "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [run["guide"] for run in results["runs"]] == ["diag", "full"]
    assert set(results["guides_left_out"]) == {"iaf", "planar"}
    assert "autoregressive" in results["guides_left_out"]["iaf"] and "|w|^2" in results["guides_left_out"]["planar"]
    assert "iaf is left out of the default guides" in capsys.readouterr().err
    assert "## Guides left out" in (tmp_path / "out" / "results.md").read_text()
    assert main(["compare", *common, "--guides", "diag,iaf", "--quiet", "--out", str(tmp_path / "named")]) == 2
    assert "needs latent dim >= 2" in capsys.readouterr().err and not (tmp_path / "named").exists()


def test_a_deterministic_site_is_a_record_not_an_observation_for_both_kinds_of_model():
    """``pyro.deterministic`` records a value as an observed Delta whose event takes the value's every dimension: inside
    the data plate (3 rows) Pyro's own SVI and Predictive run such a model, and elbogap refused it, telling the user to
    fix a ``.to_event`` they never wrote (a tester's Poisson model). It is neither a latent nor an observation."""
    from elbogap.global_latents.model import GlobalLatentModel

    def per_point(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_tensor(0.0), 1.0))
            rate = pyro.deterministic("rate", z.exp())
            pyro.sample("counts", dist.Poisson(rate), obs=x[..., 0])

    def global_location(x):
        location = pyro.sample("location", dist.Normal(x.new_tensor(0.0), 1.0))
        pyro.deterministic("doubled", 2 * location)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(location, 1.0), obs=x[:, 0])

    counts = torch.tensor([[0.0], [2.0], [1.0], [4.0]])
    model = ProgramModel(per_point, counts[:3])
    assert model.latent_sites == {"z": torch.Size([])} and model.observed_sites == ["counts"]
    quadrature, error = quadrature_log_px(model, counts, 24)
    assert bool(error.isfinite().all())
    located = GlobalLatentModel(global_location, counts, "location")
    assert list(located.latent_sites) == ["location"] and located.observed_sites == ["y"]


def normal_mixture_prior(x):
    """z from a mixture of two Normals (on the real line), x ~ N(z, 0.5^2) per row."""
    with pyro.plate("data", x.shape[0]):
        prior = dist.MixtureSameFamily(dist.Categorical(x.new_tensor([0.3, 0.7])),
                                       dist.Normal(x.new_tensor([-2.0, 1.5]), x.new_tensor([0.5, 1.0])))
        z = pyro.sample("z", prior.expand([x.shape[0]]))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), 0.5).to_event(1), obs=x)


def gamma_mixture_prior(x):
    """a rate from a mixture of two Gammas (positive), x ~ Poisson(rate) per row."""
    with pyro.plate("data", x.shape[0]):
        prior = dist.MixtureSameFamily(dist.Categorical(x.new_tensor([0.4, 0.6])),
                                       dist.Gamma(x.new_tensor([2.0, 9.0]), x.new_tensor([1.0, 1.5])))
        rate = pyro.sample("rate", prior.expand([x.shape[0]]))
        pyro.sample("x", dist.Poisson(rate.unsqueeze(-1)).to_event(1), obs=x)


def test_a_mixture_prior_is_a_latent_on_its_components_support():
    """A tester's MixtureSameFamily of two Normals was refused as a support torch "maps onto no real vector"; a
    mixture's support is its components'. Quadrature against the closed forms: a mixture of Normals convolved with
    the likelihood, and a mixture of negative binomials (the Gammas mapped to the real line by exp, with their
    Jacobian)."""
    x = torch.tensor([[-2.5], [0.1], [1.4], [3.0]], dtype=torch.float64)
    exact = torch.logsumexp(torch.stack([math.log(0.3) + dist.Normal(-2.0, math.hypot(0.5, 0.5)).log_prob(x[:, 0]),
                                         math.log(0.7) + dist.Normal(1.5, math.hypot(1.0, 0.5)).log_prob(x[:, 0])]), 0)
    model = ProgramModel(normal_mixture_prior, x[:3])
    assert model.latent_transforms == {} and model.latent_dim == 1
    torch.testing.assert_close(quadrature_log_px(model, x, 48)[0], exact, rtol=0, atol=1e-4)
    counts = torch.tensor([[0.0], [2.0], [6.0], [15.0]], dtype=torch.float64)
    exact = torch.logsumexp(torch.stack([math.log(weight) + dist.NegativeBinomial(
        total_count=torch.tensor(shape), probs=torch.tensor(1 / (1 + rate))).log_prob(counts[:, 0]).double()
        for weight, shape, rate in ((0.4, 2.0, 1.0), (0.6, 9.0, 1.5))]), 0)
    model = ProgramModel(gamma_mixture_prior, counts[:3])
    assert list(model.latent_transforms) == ["rate"]
    torch.testing.assert_close(quadrature_log_px(model, counts, 48)[0], exact, rtol=0, atol=1e-4)


class UnbroadcastPrior(dist.TorchDistribution):
    """A user's own prior whose log_prob has the shape of its argument, not of its batch (a tester's)."""

    support = torch.distributions.constraints.real
    arg_constraints = {}

    def __init__(self, batch_shape=()):
        super().__init__(batch_shape=torch.Size(batch_shape))

    def sample(self, sample_shape=()):
        return torch.randn(torch.Size(sample_shape) + self.batch_shape)

    def log_prob(self, value):
        return dist.Normal(0.0, 1.0).log_prob(value)

    def expand(self, batch_shape, _instance=None):
        return UnbroadcastPrior(batch_shape)


def unbroadcast_prior(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", UnbroadcastPrior([x.shape[0]]))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), 0.5).to_event(1), obs=x)


def test_a_prior_whose_log_prob_does_not_broadcast_over_its_batch_is_scored_for_every_row():
    """Its log_prob on a grid shared by every row came back (grid, 1) beside a likelihood of (grid, rows), and the
    quadrature of a training curve died with a traceback (exit 1); the prior's one value per grid point holds for
    every row. Against the closed form: x ~ N(0, 1 + 0.5^2)."""
    x = torch.tensor([[-1.0], [0.3], [2.2]], dtype=torch.float64)
    model = ProgramModel(unbroadcast_prior, x)
    exact = dist.Normal(0.0, math.hypot(1.0, 0.5)).log_prob(x[:, 0])
    torch.testing.assert_close(quadrature_log_px(model, x, 48)[0], exact, rtol=0, atol=1e-4)
