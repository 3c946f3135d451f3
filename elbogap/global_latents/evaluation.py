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

from elbogap.global_latents.model import sample_sites, traced_draws
from elbogap.inference.weights import group_spread_dof, khat_threshold, proposal_estimate
from elbogap.sites import draws_depth, scored, traces_under_draws


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

    def __add__(self, other: "GuideDraws") -> "GuideDraws":
        """The draws of both, in order."""
        return GuideDraws(torch.cat([self.log_prior, other.log_prior]), torch.cat([self.log_lik, other.log_lik]),
                          torch.cat([self.log_q, other.log_q]),
                          {name: torch.cat([value, other.values[name]]) for name, value in self.values.items()})

    @property
    def elbo_stderr(self) -> float:
        return float(self.log_w.double().std() / math.sqrt(len(self.log_w))) if len(self.log_w) > 1 else math.inf


#: the most draws of q :func:`precise_draws` takes, as a multiple of the draws asked for
MORE_DRAWS = 16


def precise_draws(model, guide, data: torch.Tensor, count: int, stderr: float) -> GuideDraws:
    """``count`` draws of :func:`guide_draws`, doubled until the ELBO's standard error is at most ``stderr`` (nats)
    or the draws reach ``MORE_DRAWS * count``: the ELBO is subtracted from log p(D), whose error is about that."""
    draws = guide_draws(model, guide, data, count)
    while draws.elbo_stderr > stderr and len(draws.log_w) < MORE_DRAWS * count:
        draws = draws + guide_draws(model, guide, data, len(draws.log_w))
    return draws


#: draws of an autoguide taken at once under an outer plate
DRAW_CHUNK = 500


@torch.no_grad()
def guide_draws(model, guide, data: torch.Tensor, count: int) -> GuideDraws:
    """Draw ``count`` times from ``guide`` on the whole data set and score each draw under the model.

    Pyro's autoguides are drawn in chunks under an outer plate, as Pyro's vectorized particles
    are, where the model broadcasts over it (checked on the first draw against the model's own
    density); otherwise, and for guide programs, one guide trace per draw, so any guide runs, and the
    model scored at all the draws at once (:func:`_looped_draws`).
    """
    if draws_broadcast(model, guide, data):
        parts = []
        for start in range(0, count, DRAW_CHUNK):
            chunk = _plate_draws(model, guide, data, min(DRAW_CHUNK, count - start))
            if chunk is None:
                guide.draws_broadcast = False
                break
            parts.append(chunk)
        else:
            return GuideDraws(*(torch.cat([getattr(p, key) for p in parts]) for key in ("log_prior", "log_lik",
                                                                                          "log_q")),
                              {name: torch.cat([p.values[name] for p in parts]) for name in model.latent_sites})
    return _looped_draws(model, guide, data, count)


#: q's draws whose log-likelihood per row is kept for the ArviZ export (PSIS-LOO, ``az.compare``), and the most
#: numbers (draws x rows) kept
POINTWISE_DRAWS, POINTWISE_NUMBERS = 1000, 4_000_000


@torch.no_grad()
def pointwise_log_likelihood(model, values: dict[str, torch.Tensor], data: torch.Tensor) -> dict[str, torch.Tensor]:
    r""":math:`\log p(x_n \mid \theta_s)` per observed site, draw and row, ``(S, N)`` in float32, for the first
    ``S`` of q's draws ``values`` (at most ``POINTWISE_DRAWS``, and ``POINTWISE_NUMBERS / N``): the model conditioned
    on each draw, one trace each (any program), its mask and scale counted; a site whose density is not one per row
    is left out."""
    available = len(next(iter(values.values())))
    count = max(1, min(available, POINTWISE_DRAWS, POINTWISE_NUMBERS // max(len(data), 1)))
    rows: dict[str, list[torch.Tensor]] = {}
    for draw in range(count):
        conditioned = {name: values[name][draw].reshape(shape) for name, shape in model.latent_sites.items()}
        trace = poutine.trace(poutine.condition(model.full_program, data=conditioned)).get_trace(data)
        for name in model.observed_sites:
            log_p = scored(trace.nodes[name])
            if log_p.dim() >= 1 and log_p.shape[0] == len(data):
                rows.setdefault(name, []).append(log_p.reshape(len(data), -1).sum(-1).float().cpu())
    return {name: torch.stack(values) for name, values in rows.items() if len(values) == count}


def plate_nesting(model, guide, data: torch.Tensor) -> int:
    """How deep the plates of ``guide`` and of ``model`` replayed on it nest (at least 1)."""
    index = torch.arange(len(data), device=data.device)
    with torch.no_grad():
        return max(1, draws_depth(guide.guide, (data, index, len(data)), model.full_program, (data,)))


def draws_broadcast(model, guide, data: torch.Tensor) -> bool:
    """Whether ``guide`` and ``model`` run under an outer plate of draws and score it right, found on two draws the
    first time it is asked and kept on the guide (a program that broadcasts wrongly can make huge tensors)."""
    if not getattr(guide, "vectorizable", False):
        return False
    if getattr(guide, "draws_broadcast", None) is None:
        with torch.no_grad(), torch.random.fork_rng():
            guide.draws_broadcast = _plate_draws(model, guide, data, 2) is not None
    return guide.draws_broadcast


def _plate_draws(model, guide, data: torch.Tensor, count: int) -> GuideDraws | None:
    """``count`` draws under an outer plate, or None where a site's density does not come out one per draw."""
    index = torch.arange(len(data), device=data.device)
    arguments = (data, index, len(data))
    nesting = draws_depth(guide.guide, arguments, model.full_program, (data,))
    try:
        guide_trace, model_trace = traces_under_draws(guide.guide, arguments, model.full_program, (data,), count,
                                                      nesting)

        def total(trace, names):
            out = torch.zeros(count, dtype=torch.float64, device=data.device)
            for name in names:
                site = trace.nodes[name]
                log_p = scored(site)
                if log_p.dim() != nesting + 1 or log_p.shape[0] != count:
                    raise ValueError(f"site {name} is not batched by the draws")
                out = out + log_p.reshape(count, -1).double().sum(-1)
            return out

        guide_sites = [name for name, site in sample_sites(guide_trace).items() if not site["is_observed"]]
        observed = [name for name in sample_sites(model_trace) if name not in model.latent_sites]
        draws = GuideDraws(total(model_trace, model.latent_sites), total(model_trace, observed),
                           total(guide_trace, guide_sites), {})
        for name, shape in model.latent_sites.items():
            value = model_trace.nodes[name]["value"]
            if value.numel() != count * math.prod(shape):
                return None
            draws.values[name] = value.reshape(count, -1)
    except (RuntimeError, ValueError, IndexError):  # a program that does not broadcast over the draws
        return None
    # the first draw scored by the model's own density (unbatched): a program that broadcast wrongly differs
    z = model.pack({name: values[0].reshape(shape) for (name, shape), values in
                    zip(model.latent_sites.items(), draws.values.values(), strict=True)})
    log_prior, log_lik = model.log_density(z[None], data)
    _, log_det = model.unpack(z)
    expected = float(log_prior[0] - log_det + log_lik[0])
    if not math.isclose(expected, float(draws.log_prior[0] + draws.log_lik[0]), rel_tol=1e-4, abs_tol=1e-2):
        return None
    return draws


def _looped_draws(model, guide, data: torch.Tensor, count: int) -> GuideDraws:
    """``count`` guide traces one after another (any guide program runs), the model scored at all of their draws at
    once (:meth:`~elbogap.global_latents.model.GlobalLatentModel.site_densities`, batched by vmap where it serves)."""
    index = torch.arange(len(data), device=data.device)
    log_q, stacked = traced_draws(guide.guide, count, model.latent_sites, (data, index, len(data)),
                                  dtype=torch.float64)
    log_prior, log_lik = [], []
    for start in range(0, count, DRAW_CHUNK):
        prior, lik = model.site_densities({name: value[start:start + DRAW_CHUNK] for name, value in stacked.items()},
                                          data)
        log_prior.append(prior.double())
        log_lik.append(lik.double())
    return GuideDraws(torch.cat(log_prior), torch.cat(log_lik), log_q,
                      {name: value.reshape(count, -1) for name, value in stacked.items()})


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
    r"""The ELBO of D, its terms, the importance estimate of log p(D) and q's diagnostics, in nats for all of D: one
    unit, under the names a split of a per-point model gives its per-point means (``recon`` is
    :math:`E_q[\log p(D \mid \theta, z)]`, ``log_px_iwae`` q's importance estimate from ``elbo_samples`` draws)."""
    log_w = draws.log_w.detach().double()
    count = len(log_w)
    weights, khats = proposal_estimate(log_w[:, None])
    khat = float(khats[0])
    metrics = {
        "units": 1,
        "num_points": num_data,
        "elbo_samples": count,
        "elbo": float(log_w.mean()),
        "elbo_stderr": float(log_w.std() / math.sqrt(count)) if count > 1 else float("nan"),
        "recon": float(draws.log_lik.double().mean()),
        "kl_prior": float((draws.log_q.double() - draws.log_prior.double()).mean()),
        "log_px_iwae": float(weights.log_mean[0]),
        "log_px_iwae_stderr": float(weights.stderr[0]),
        "log_px_iwae_dof": group_spread_dof(count),
        "log_px_iwae_samples": count,
        "ess_mean": float(weights.ess[0]),
        "khat_mean": None if math.isnan(khat) else khat,  # +inf where the weights' tail has no fit
        "khat_threshold": khat_threshold(count),
    }
    if math.isnan(metrics["log_px_iwae_stderr"]) and count > 1:
        metrics["log_px_iwae_note"] = (f"q's importance weights have a tail too heavy for a variance (k-hat "
                                          f"{khat:.2f}, above 0.5): q's estimate of log p(D) has no standard error")
    return metrics
