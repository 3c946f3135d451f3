r"""A guide of a model with global latents judged on the whole data set: ELBO of D, q as an importance proposal.

From :math:`S` draws :math:`(\theta_s, z_s) \sim q` with log-weights
:math:`\log w_s = \log p(\theta_s, z_s, D) - \log q(\theta_s, z_s)`:

- :math:`\mathrm{ELBO}(D) = \frac1S \sum_s \log w_s`, its standard error :math:`\mathrm{sd}(\log w)/\sqrt S`;
- its two terms, :math:`\mathbb{E}_q \log p(D \mid \theta, z)` and :math:`\mathrm{KL}(q \,\|\, p(\theta, z))`;
- the importance estimate :math:`\log \frac1S \sum_s w_s` of :math:`\log p(D)` (a lower bound in
  expectation, tight where q is close to the posterior), Kish's ESS and the PSIS :math:`\hat k`
  of the weights [1] (as ``pyro.infer.importance.psis_diagnostic`` computes it);
- each latent site's mean and standard deviation under q, elementwise, in its own support.

References:

[1] Yes, but Did It Work?: Evaluating Variational Inference, Yuling Yao, Aki Vehtari,
    Daniel Simpson, Andrew Gelman, arXiv:1802.02538
"""

import math
from dataclasses import dataclass

import torch
from pyro import poutine

from elbogap.global_latents.model import sample_sites
from elbogap.inference.evaluation import pareto_khat
from elbogap.inference.log_px import ImportanceAccumulator


@dataclass
class GuideDraws:
    """``count`` draws of a guide with their log densities (float64, ``(count,)``) and site values ``(count, size)``."""

    log_prior: torch.Tensor
    log_lik: torch.Tensor
    log_q: torch.Tensor
    values: dict[str, torch.Tensor]

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_prior + self.log_lik - self.log_q


@torch.no_grad()
def guide_draws(model, guide, data: torch.Tensor, count: int) -> GuideDraws:
    """Draw ``count`` times from ``guide`` on the whole data set and score each draw under the model.

    One guide trace and one replayed model trace per draw: any program runs, whatever it
    assumes about shapes.
    """
    index = torch.arange(len(data), device=data.device)
    log_prior, log_lik, log_q = [], [], []
    values = {name: [] for name in model.latent_sites}
    for _ in range(count):
        guide_trace = poutine.trace(guide.guide).get_trace(data, index, len(data))
        model_trace = poutine.trace(poutine.replay(model.full_program, trace=guide_trace)).get_trace(data)
        log_q.append(sum(site["fn"].log_prob(site["value"]).double().sum()
                         for site in sample_sites(guide_trace).values() if not site["is_observed"]))
        prior, lik = 0.0, 0.0
        for name, site in sample_sites(model_trace).items():
            log_p = site["fn"].log_prob(site["value"]).double().sum()
            if name in model.latent_sites:
                prior = prior + log_p
            else:
                lik = lik + log_p
        log_prior.append(prior)
        log_lik.append(lik)
        for name in model.latent_sites:
            values[name].append(model_trace.nodes[name]["value"].reshape(-1))
    stack = torch.stack
    return GuideDraws(stack([torch.as_tensor(v) for v in log_prior]), stack([torch.as_tensor(v) for v in log_lik]),
                      stack(log_q), {name: stack(v) for name, v in values.items()})


def moments(values: dict[str, torch.Tensor], weights: torch.Tensor | None = None) -> dict[str, dict]:
    """Mean and standard deviation of each site's elements over draws ``(count, size)``, optionally weighted."""
    out = {}
    for name, draws in values.items():
        draws = draws.double()
        if weights is None:
            mean, sd = draws.mean(0), draws.std(0) if len(draws) > 1 else torch.zeros(draws.shape[1:])
        else:
            w = weights.double()[:, None]
            mean = (w * draws).sum(0)
            sd = (w * (draws - mean).pow(2)).sum(0).sqrt()
        out[name] = {"mean": mean, "sd": sd}
    return out


def summarize_draws(draws: GuideDraws, num_data: int) -> dict:
    """The ELBO of D, its terms, the importance estimate of log p(D) and q's diagnostics, in nats for all of D."""
    log_w = draws.log_w
    count = len(log_w)
    weights = ImportanceAccumulator()
    weights.add(log_w[:, None])
    khat = float(pareto_khat(log_w[:, None])[0])
    metrics = {
        "num_points": num_data,
        "samples": count,
        "elbo": float(log_w.mean()),
        "elbo_stderr": float(log_w.std() / math.sqrt(count)) if count > 1 else float("nan"),
        "expected_log_lik": float(draws.log_lik.mean()),
        "kl_prior": float((draws.log_q - draws.log_prior).mean()),
        "log_evidence_q": float(weights.log_mean()[0]),
        "log_evidence_q_stderr": float(weights.stderr()[0]),
        "ess": float(weights.effective_sample_size()[0]),
        "khat": None if math.isnan(khat) else khat,
    }
    return metrics
