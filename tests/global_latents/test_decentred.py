"""Centred hierarchies found and written non-centred, and the rewritten program's latents mapped back."""

import pyro
import pyro.distributions as dist
import torch

from elbogap.global_latents import evidence
from elbogap.global_latents.decentred import decentred_latents, hierarchical_sites, original_latents
from elbogap.global_latents.evidence import EvidenceSettings, sandwich
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference.gaussian_fit import GaussianFitSettings
from elbogap.inference.smc import SMCSettings
from tests.global_latents import truth
from tests.global_latents.test_evidence import centred_schools


def lognormal_schools(data):
    """The centred funnel with theta_j ~ LogNormal(mu, tau), observed through log theta_j: the same evidence."""
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(data.new_tensor(5.0)))
    with pyro.plate("schools", data.shape[0]):
        theta = pyro.sample("theta", dist.LogNormal(mu, tau))
        pyro.sample("y", dist.Normal(theta.log(), data[:, 1]), obs=data[:, 0])


def fixed_scales(data):
    """Scales set by the data, not by a latent: nothing to rewrite."""
    mu = pyro.sample("mu", dist.Normal(data.new_tensor(0.0), 5.0))
    with pyro.plate("schools", data.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, data[:, 1]))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=data[:, 0])


def test_the_sites_whose_scale_is_another_latent_are_found():
    data = truth.eight_schools_data()
    assert hierarchical_sites(centred_schools, data) == ["theta"]
    assert hierarchical_sites(lognormal_schools, data) == ["theta"]
    assert hierarchical_sites(truth.eight_schools_model(), data) == []
    assert hierarchical_sites(fixed_scales, data) == []
    state = torch.get_rng_state()
    hierarchical_sites(centred_schools, data)
    assert torch.equal(state, torch.get_rng_state()), "the evidence's random stream is left as it was"


def test_the_non_centred_form_maps_back_to_the_programs_own_latents_and_keeps_its_evidence():
    """theta = mu + tau * eps (exp of it for the LogNormal), and the log joint of the rewritten program at the
    rewritten latents equals the program's at the mapped ones, less the Jacobian of theta(eps) (tau per school)."""
    data = truth.eight_schools_data()
    for program, link in [(centred_schools, lambda v: v), (lognormal_schools, torch.exp)]:
        model = GlobalLatentModel(program, data, program.__name__)
        rewritten = model.non_centred(data)
        assert rewritten.decentred_sites == ["theta"] and rewritten.latent_dim == model.latent_dim
        pyro.set_rng_seed(0)
        z = rewritten.prior_draws(5, data)
        values = rewritten.site_values(z)
        eps = next(value for name, value in values.items() if name.startswith("theta"))
        mapped = model.site_values(original_latents(rewritten, model, data, z))
        assert torch.allclose(decentred_latents(rewritten, model, data, model.pack(mapped, batch_dims=1)), z,
                              atol=1e-5), "the inverse map"
        expected = link(values["mu"][:, None] + values["tau"][:, None] * eps)
        assert torch.allclose(mapped["theta"], expected, rtol=1e-5)
        assert torch.allclose(mapped["tau"], values["tau"]) and torch.allclose(mapped["mu"], values["mu"])
        prior_new, lik_new = rewritten.log_density(z, data)
        prior_old, lik_old = model.log_density(original_latents(rewritten, model, data, z), data)
        assert torch.allclose(lik_new, lik_old, atol=1e-4)
        jacobian = data.shape[0] * values["tau"].log()  # d theta / d eps = tau per school, in the flat coordinates
        assert torch.allclose(prior_new, prior_old + jacobian, atol=1e-3)


def test_bdmc_on_a_centred_funnel_sandwiches_in_the_coordinates_the_evidence_anneals(monkeypatch):
    """The reverse chains start from the simulating latents mapped into the chosen (non-centred) form: the
    sandwich brackets the simulated data set's exact evidence."""
    mapped, real = [], evidence.decentred_latents
    monkeypatch.setattr(evidence, "decentred_latents", lambda *args: mapped.append(args) or real(*args))
    data = truth.eight_schools_data()
    model = GlobalLatentModel(centred_schools, data, "centred")
    pyro.set_rng_seed(1)
    simulated, z = model.simulate(data)
    exact = truth.eight_schools_log_evidence(simulated[:, 0].double(), simulated[:, 1].double())
    settings = EvidenceSettings(chains=64, max_steps=100, pilot_steps=50, smc=SMCSettings(particles=64),
                                fit=GaussianFitSettings(steps=200))  # cheap: the start is what is tested
    bounds = sandwich(model, simulated, z, settings)
    assert len(mapped) == 1, "the non-centred form was chosen, and the simulating latents mapped into it"
    assert bounds["lower"] - 0.15 < exact < bounds["upper"] + 0.15, "reverse chains started in the wrong form: 16 nats"
