r"""Per-datapoint evaluation of a guide against a model: ELBO, its two terms, log p(x) and the gap."""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from elbogap.device import rng_devices
from elbogap.errors import UsageError
from elbogap.inference.ais import AISSettings
from elbogap.inference.gap import kl_gap
from elbogap.inference.kl import analytic_kl
from elbogap.inference.log_joint import ELEMENT_BUDGET, flatten_latents, latent_sites, log_joint, observed_sites
from elbogap.inference.log_px import (
    LogPxEstimate,
    LogPxMethod,
    LogPxSettings,
    plan,
)
from elbogap.inference.weights import (
    FINITE_VARIANCE_KHAT,
    errors_a_mean_combines,
    group_spread_dof,
    interval_halfwidth,
    khat_threshold,
    mean_error,
    proposal_estimate,
)
from elbogap.progress import Progress, as_progress
from elbogap.records import with_totals
from elbogap.sites import (
    broadcasts_draws,
    draws_depth,
    latent_transforms,
    repeat_rows,
    scored,
    scored_per_point,
    traces_under_draws,
)

#: draws of q per data point evaluated at once
SAMPLE_CHUNK = 64


@dataclass
class Evaluation:
    """Split averages in ``metrics`` (floats and method names) and per-point tensors in ``per_point``.

    ``dof`` holds, per per-point estimate with a standard error (``elbo``, ``log_px_iwae``, ``log_px``,
    ``log_px_ais``), the degrees of freedom of one point's error, or a tensor of them per point where two estimators
    gave the column (quadrature's points and those AIS filled in); :meth:`interval` turns them into intervals.
    """

    metrics: dict
    per_point: dict[str, torch.Tensor]
    dof: dict[str, float] = field(default_factory=dict)

    def interval(self, key: str, level: float = 0.95, bias=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Each point's ``level`` interval for ``per_point[key]``: the estimate :math:`\pm t_\nu` standard errors,
        its upper end raised by ``bias`` (a float or a tensor per point).

        One point's IWAE or AIS error is read off a few groups of its weights and has about 6 degrees of
        freedom (:func:`~elbogap.inference.weights.group_spread_dof`), so its 95% interval is :math:`\pm 2.47`
        standard errors; the ELBO's has one fewer than its draws. NaN where the error is. Without ``bias`` the
        interval covers the estimator's own long-run mean, not :math:`\log p(x)`: IWAE and AIS are biased low, by
        0.4-2.5 nats under heavy tails (where such an interval covered :math:`\log p(x)` in 69-77% of repeats).
        Give the bias where one is known (a BDMC width on data like the model's) to cover :math:`\log p(x)`.
        """
        if key not in self.dof:
            raise KeyError(f"no per-point standard error for {key!r}; one of {sorted(self.dof)}")
        halfwidth = interval_halfwidth(self.per_point[f"{key}_stderr"].double(), self.dof[key], level)
        values = self.per_point[key].double()
        return values - halfwidth, values + halfwidth + torch.as_tensor(bias, dtype=torch.float64).clamp(min=0.0)


class _Moments:
    """Running mean and standard error of the mean over sample chunks, per data point, in float64.

    Chunks are merged by Chan et al.'s pairwise update of the mean and the sum of squared deviations,
    never as E[v^2] - mean^2, which loses every digit of the spread when values of -2000 vary by 0.1.
    """

    def __init__(self):
        self.count, self.mean_, self.squares = 0, 0.0, 0.0

    def add(self, values: torch.Tensor) -> None:
        values = values.double()
        count = values.shape[0]
        mean = values.mean(0)
        squares = (values - mean).pow(2).sum(0)
        total = self.count + count
        delta = mean - self.mean_
        self.mean_ = self.mean_ + delta * count / total
        self.squares = self.squares + squares + delta.pow(2) * self.count * count / total
        self.count = total

    def mean(self) -> torch.Tensor:
        return torch.as_tensor(self.mean_)

    def stderr(self) -> torch.Tensor:
        if self.count < 2:
            return torch.full_like(self.mean(), float("nan"))
        return (self.squares / (self.count - 1) / self.count).sqrt()


def draw(q, count: int) -> torch.Tensor:
    """``count`` reparameterized draws of shape ``(count, *q.batch_shape, *q.event_shape)``.

    Drawn from ``q.expand`` rather than ``q.rsample((count,))``: Pyro's MixtureOfDiagNormals
    gathers wrongly for a sample shape on top of batched parameters.
    """
    expanded = q.expand(torch.Size([count]) + q.batch_shape)
    return expanded.rsample() if expanded.has_rsample else expanded.sample()


def _prior(model, x):
    """The prior of a one-site model's latent, for an analytic KL; None for a hierarchy, or a site off the real line,
    whose q is a density on the real line (Monte Carlo KL then)."""
    sites = latent_sites(model)
    if len(sites) != 1 or latent_transforms(model):
        return None
    return poutine.trace(model.model).get_trace(x).nodes[next(iter(sites))]["fn"]


def _density_draws(model, guide, x, index):
    """Draws from a guide with a density object: ``(count) -> (z, log q, log p(z), log p(x|z))``, and that q."""
    q = guide.distribution(x, index)

    def draws(count):
        z = draw(q, count)
        return (z, q.log_prob(z), *log_joint(model, x, z))

    return draws, q


def _program_draws(model, guide, x, index):
    r"""Draws from any guide program, by tracing it and replaying the model on it: no density object needed.

    ``count`` draws are taken at once under an outer ``pyro.plate`` (as Pyro's vectorized
    particles); a program that cannot broadcast over it gets the draws as rows of one batch
    (``x`` and ``index`` repeated), and one that cannot take those either is run once per draw.
    :math:`\log q` sums every site the guide samples (auxiliary ones included).
    """
    sites, observed = latent_sites(model), observed_sites(model)
    nesting = draws_depth(guide.guide, (x, index), model.model, (x,))

    def one(count, vectorized, rows=1):
        inputs = (x, index) if rows == 1 else (repeat_rows(x, rows), repeat_rows(index, rows))
        guide_trace, model_trace = traces_under_draws(guide.guide, inputs, model.model, inputs[:1],
                                                      count if vectorized else None, nesting)
        shape = (count, len(x)) if vectorized else (rows * len(x),)

        def total(trace, names, score=scored):  # the guide's sites per point: see scored_per_point
            log_q = sum(score(trace.nodes[name]).expand(shape) for name in names)
            return log_q if rows == 1 else log_q.reshape(rows, len(x))

        guide_sites = [name for name, site in guide_trace.nodes.items() if site["type"] == "sample"
                       and not site["is_observed"] and not site_is_subsample(site)]
        values = {name: guide_trace.nodes[name]["value"].expand(*shape, *sites[name]) for name in sites}
        z = flatten_latents(model, values, len(shape))
        z = z if rows == 1 else z.reshape(rows, len(x), -1)
        return (z, total(guide_trace, guide_sites, scored_per_point), total(model_trace, sites),
                total(model_trace, observed))

    layouts = {
        "plate": lambda count: one(count, vectorized=True),
        "rows": lambda count: one(count, vectorized=False, rows=count),
        "loop": lambda count: tuple(torch.stack(parts) for parts in zip(*(one(1, False) for _ in range(count)),
                                                                          strict=True)),
    }
    working = ["plate", "rows", "loop"] if broadcasts_draws(model) else ["rows", "loop"]

    def draws(count):
        # the first layout the programs take is kept for every later chunk
        while len(working) > 1:
            try:
                return layouts[working[0]](count)
            except (RuntimeError, ValueError, IndexError):  # programs that do not take this layout
                working.pop(0)
        return layouts[working[0]](count)

    return draws, None


def sample_latents(model, guide, x: torch.Tensor, count: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """``count`` draws of every latent site from ``guide`` for the rows of ``x``: ``(count, batch, latent_dim)``."""
    draws, _ = (_program_draws if guide.program else _density_draws)(model, guide, x, index)
    return draws(count)[0]


#: the fewest draws per point whose ELBO takes the KL's draws as a control variate (:func:`controlled_elbo`): its
#: coefficient, estimated from the same draws, biases the mean by O(1/draws); the 4-draw ELBO checks of the trend
#: rule (their false-alarm and miss rates measured with the closed form) keep the closed form
CONTROL_DRAWS = 32


def controlled_elbo(log_lik: torch.Tensor, kl_draws: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    r"""Per draw ``(samples, points)``, :math:`\log p(x \mid z_s) - a\,k_s - (1 - a)\,\mathrm{KL}` with
    :math:`k_s = \log q(z_s) - \log p(z_s)`, whose mean over draws is unbiased for the ELBO for any :math:`a`
    (:math:`E_q k = \mathrm{KL}`, known in closed form), at each point's :math:`a = \mathrm{Cov}(\log p(x \mid
    z), k) / \mathrm{Var}(k)`, the least variance (a control variate; the coefficient estimated from the same
    draws biases the mean by O(1/samples)). :math:`a = 0` is :math:`\log w_s`, whose noise vanishes as q nears
    the posterior; :math:`a = 1` the closed-form KL's, whose noise is the reconstruction's. Written here: Pyro's
    ``TraceMeanField_ELBO`` takes the closed form alone, and on a tester's VAE q*'s ELBO read ± 0.017 with it
    beside ± 0.002 for the flows scored by log w."""
    centred_kl = kl_draws - kl_draws.mean(0)
    variance = centred_kl.pow(2).mean(0)
    covariance = ((log_lik - log_lik.mean(0)) * centred_kl).mean(0)
    share = torch.where(variance > 0, covariance / variance.clamp(min=torch.finfo(variance.dtype).tiny),
                        torch.zeros_like(variance))
    return log_lik - share * kl_draws - (1 - share) * kl


def _evaluate_chunk(model, guide, x, index, num_samples, sample_chunk, keep_draws=False):
    draws, q = (_program_draws if guide.program else _density_draws)(model, guide, x, index)
    posterior = model.posterior(x) if getattr(model, "has_exact_posterior", False) else None
    log_w, recon, kl_prior_mc, kl_post_mc, z_mean = _Moments(), _Moments(), _Moments(), _Moments(), _Moments()
    all_log_w, all_log_lik, all_kl = [], [], []
    for start in range(0, num_samples, sample_chunk):
        count = min(sample_chunk, num_samples - start)
        z, log_q, log_prior, log_lik = draws(count)
        log_weight = log_prior + log_lik - log_q
        log_w.add(log_weight)
        all_log_w.append(log_weight)
        kl_draw = log_q - log_prior
        all_log_lik.append(log_lik)
        all_kl.append(kl_draw)
        z_mean.add(z)
        recon.add(log_lik)
        kl_prior_mc.add(kl_draw)
        if posterior is not None:
            kl_post_mc.add(log_q - posterior.log_prob(z))

    out = {"recon": recon.mean()}
    prior = _prior(model, x) if q is not None else None
    kl_prior = analytic_kl(q, prior) if prior is not None else None
    all_log_w = torch.cat(all_log_w)
    if kl_prior is not None and num_samples < CONTROL_DRAWS:  # the closed form's noise is the reconstruction's
        out.update(kl_prior=kl_prior, elbo=recon.mean() - kl_prior, elbo_stderr=recon.stderr())
        if keep_draws:
            out["elbo_draws"] = (torch.cat(all_log_lik).double() - kl_prior.double()).T
    elif kl_prior is not None:
        draws_of_elbo = controlled_elbo(torch.cat(all_log_lik).double(), torch.cat(all_kl).double(), kl_prior.double())
        spread = draws_of_elbo.std(0) if len(draws_of_elbo) > 1 else torch.full_like(kl_prior.double(), math.nan)
        out.update(kl_prior=kl_prior, elbo=draws_of_elbo.mean(0).to(kl_prior.dtype),
                   elbo_stderr=(spread / math.sqrt(len(draws_of_elbo))).to(kl_prior.dtype))
        if keep_draws:
            out["elbo_draws"] = draws_of_elbo.T
    else:
        out.update(kl_prior=kl_prior_mc.mean(), elbo=log_w.mean(), elbo_stderr=log_w.stderr())
        if keep_draws:
            out["elbo_draws"] = all_log_w.double().T
    out["kl_prior_analytic"] = kl_prior is not None
    if posterior is not None:
        kl_post = analytic_kl(q, posterior) if q is not None else None
        out["kl_exact_analytic"] = kl_post is not None
        out["kl_exact"] = kl_post if kl_post is not None else kl_post_mc.mean()
        out["kl_exact_stderr"] = torch.zeros_like(out["kl_exact"]) if kl_post is not None else kl_post_mc.stderr()
    iwae, khat = proposal_estimate(all_log_w)  # all draws are kept for k-hat: one pass over them
    out.update(log_px_iwae=iwae.log_mean, log_px_iwae_stderr=iwae.stderr, ess=iwae.ess, khat=khat,
               log_px_iwae_jackknife_stderr=iwae.jackknife)
    out["z_mean"] = z_mean.mean()
    return out


def evaluate(model, guide, x: torch.Tensor, index: torch.Tensor | None = None,
             elbo_samples: int = 256, iw_samples: int = 1000, log_px_method: str | None = None,
             quadrature_points: int = 32, ais: AISSettings | None = None,
             ais_index: torch.Tensor | None = None, progress: bool | Progress = False, desc: str = "evaluate",
             keep_draws: bool = False, fresh_stream: Callable[[], None] | None = None,
             refine_quadrature: bool = True) -> Evaluation:
    r"""Evaluate ``guide`` against ``model`` on every row of ``x``, in nats per data point.

    Metrics (split averages; standard errors combine the per-point ones as
    :math:`\sqrt{\sum_n s_n^2} / N`):

    - ``elbo`` :math:`= \mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p(z))`, from
      ``elbo_samples`` draws of :math:`q` (more when ``iw_samples`` draws are taken anyway);
    - ``recon`` :math:`= \mathbb{E}_q \log p(x \mid z)` and ``kl_prior`` (analytic where the
      pair of distributions allows, ``kl_prior_method``);
    - ``log_px`` by ``log_px_method`` (see :func:`~elbogap.inference.log_px.plan`): ``"exact"``
      (closed form), ``"quadrature"`` (1-D and 2-D latents), ``"iwae"``
      (:math:`\log \frac1K \sum_k p(x, z_k)/q(z_k \mid x)`, :math:`K` = ``iw_samples``, a lower
      bound whose bias depends on the guide), ``"ais"`` (annealed importance sampling with the
      settings ``ais``, guide-independent) or ``"auto"``: the most exact the model allows, and
      for models with neither closed form nor 1-D or 2-D latents, AIS on the rows ``ais_index`` (none if
      not given). ``log_px_points`` says on how many rows ``log_px`` and ``kl_gap`` were
      computed; where that is a subset, ``elbo_log_px_points`` is the ELBO on those rows;
    - ``log_px_iwae`` (always, from the draws of q) and ``log_px_ais`` (where AIS ran), with
      standard errors, so the guide-dependent estimate stands beside the guide-independent one;
    - ``kl_gap`` :math:`= \log p(x) - \mathrm{ELBO}`, see :func:`~elbogap.inference.gap.kl_gap`;
    - ``kl_exact`` :math:`= \mathrm{KL}(q \,\|\, p(z \mid x))` computed directly, for models
      with a closed-form posterior, so the identity can be checked rather than assumed;
    - ``ess_mean``: Kish's effective sample size of the importance weights, averaged;
    - ``khat_mean``, ``khat_bad_share``: PSIS :math:`\hat k` of :math:`q` as an importance
      proposal (see :func:`~elbogap.inference.weights.pareto_khat`), averaged (:math:`+\infty`
      where a point's weights have no tail fit), and the share of points above ``khat_threshold``
      (:func:`~elbogap.inference.weights.khat_threshold` of ``khat_samples`` draws);
      ``log_px_iwae_note`` where some points are above it, since IWAE's standard error
      cannot see a tail without finite variance. Where :math:`\hat k` exceeds 0.5 on more than
      a quarter of the points, q's weights have no finite variance there (no central limit holds): IWAE's
      standard errors are NaN, the split's and every point's, and the note says so; the rate at which
      the group spread falls is fitted separately over the points above and below 0.5;
    - ``active_units``: latent dimensions the data uses (see :func:`active_units`).

    Standard errors are Monte Carlo errors with the points held fixed: the ELBO's from the
    spread of its draws (float64 moments), IWAE's and AIS's per point from the spread of
    log-means over groups of draws or chains (:func:`~elbogap.inference.weights.log_mean_exp_stderr`),
    and for a split mean from each point's jackknife error (``*_jackknife_stderr`` per point,
    :func:`~elbogap.inference.weights.jackknife_stderr`), whose mean square is right whatever the tails, plus the
    mean of the points' bias bounds (``*_bias_bound``: AIS from the modes) added whole (a mean over one point takes
    that point's own error, which holds its bound).
    One point's IWAE or AIS error has few degrees of freedom (``Evaluation.dof``), so its 95% interval is
    wider than :math:`\pm 1.96` standard errors (:meth:`Evaluation.interval`).
    ``progress`` shows a bar (with the time left) over the chunks of points and AIS's transitions.
    ``keep_draws`` adds ``per_point["elbo_draws"]`` ``(points, draws)``, each draw's ELBO term,
    for standard errors of differences between guides evaluated on common random numbers.
    ``fresh_stream``, where given, is called before each guide-independent estimate (AIS) to seed its draws, inside
    a fork of torch's generators: q's draws before it number differently from guide to guide (a mixture draws its
    components too), every guide of a seed should get the same estimate, and the draws after it are as if it had
    drawn none (so that a deterministic estimate, quadrature, leaves them as they were).
    ``refine_quadrature`` off keeps the quadrature on its one grid per point, and fills in no point it leaves without
    an error bar (the cheap curve during training: AIS there took 5 s an evaluation on a tester's 2-D program).
    """
    log_px_plan = plan(log_px_method, model)
    if elbo_samples < 1 or iw_samples < 1:
        raise UsageError("--eval-samples and --iw-samples must be at least 1")
    if index is None:
        index = torch.arange(len(x), device=x.device)
    num_samples = max(elbo_samples, iw_samples if log_px_plan.uses_iw_draws else 0)
    with torch.inference_mode():
        per_point, z_mean = _evaluate_q(model, guide, x, index, num_samples, progress, desc, keep_draws)
    if _infinite_share(per_point["khat"]) > NO_STDERR_SHARE:  # no central limit: no error bar for IWAE or its uses
        for key in ("log_px_iwae_stderr", "log_px_iwae_jackknife_stderr"):
            per_point[key] = torch.full_like(per_point[key], math.nan)
    settings = LogPxSettings(quadrature_points, ais, num_samples, progress, iw_samples, refine_quadrature)
    estimates, fills = [], []
    dof = {"elbo": num_samples - 1 if num_samples > 1 else math.inf, "log_px_iwae": group_spread_dof(num_samples)}
    for step in log_px_plan.steps:
        rows = _step_rows(step, ais_index, per_point)
        if rows is not None and not len(rows) or step.rows == "unsure" and not refine_quadrature:
            continue  # no subset chosen for this split, no point left unsure, or the cheap curve during training
        own_stream = fresh_stream is not None and step.method.guide_independent
        with torch.random.fork_rng(devices=rng_devices(x)) if own_stream else contextlib.nullcontext():
            if own_stream:
                fresh_stream()
            estimate = _estimate_on(step.method, rows, model, guide, x, index, settings, per_point)
        jackknife = estimate.stderr if estimate.sum_stderr is None else estimate.sum_stderr
        if step.rows == "unsure":  # filled in: the points it ran on take its estimate, the others keep theirs
            _fill_in(per_point, dof, estimate, jackknife, f"{estimates[-1][0].name} left {len(rows)} of {len(x)} "
                     f"points without an error bar (see the estimators' documentation); {step.method.name.upper()} "
                     f"gave their log p(x), {estimate.info['samples']} chains each")
            fills.append((step.method, estimate))
        else:
            per_point["log_px"], per_point["log_px_stderr"] = estimate.values, estimate.stderr
            per_point["log_px_jackknife_stderr"] = jackknife
            per_point["log_px_bias_bound"] = _bias_bound(estimate)
            per_point["log_px_systematic"] = torch.full(estimate.values.shape, step.method.systematic,
                                                        device=x.device)
            dof["log_px"] = estimate.dof
            estimates.append((step.method, estimate))
        if column := step.method.kept_as:
            per_point[column], per_point[f"{column}_stderr"] = estimate.values, estimate.stderr
            per_point[f"{column}_jackknife_stderr"] = jackknife
            per_point[f"{column}_bias_bound"] = _bias_bound(estimate)
            dof[column] = estimate.dof
    per_point["kl_gap"] = kl_gap(per_point["log_px"], per_point["elbo"])
    metrics = _summarize(per_point, num_samples, estimates, fills)
    metrics["active_units"] = active_units(z_mean)
    return Evaluation(metrics, per_point, dof)


#: a filled-in point whose estimate lies below q's IWAE by more than this many joint standard errors (and
#: FILL_BELOW_NATS) failed: a Cauchy prior's point 1,826 units out, where AIS's start did not reach its posterior
FILL_BELOW_SDS = 4.0
FILL_BELOW_NATS = 0.5


def _fill_in(per_point: dict, dof: dict, estimate: LogPxEstimate, jackknife: torch.Tensor, note: str) -> None:
    """The points ``estimate`` ran on (not NaN) take its values, errors and degrees of freedom in ``per_point`` and
    ``dof``; the others keep theirs. Both it and q's IWAE are lower bounds in expectation: a point where it lies
    far below IWAE (:data:`FILL_BELOW_SDS`, :data:`FILL_BELOW_NATS`) takes IWAE's value, with no error bar (a tester's
    Cauchy-prior point read -11,800 nats by AIS against a truth of -19.5, and the split's KL gap -183), and the note
    says so."""
    filled = ~estimate.values.isnan()
    below = (per_point["log_px_iwae"] - estimate.values).double()
    noise = (estimate.stderr.double() ** 2 + per_point["log_px_iwae_stderr"].double().nan_to_num() ** 2).sqrt()
    failed = filled & (below > FILL_BELOW_SDS * noise + FILL_BELOW_NATS)
    nan = torch.full_like(estimate.stderr, math.nan)
    values = torch.where(failed, per_point["log_px_iwae"].to(estimate.values.dtype), estimate.values)
    for key, value in (("log_px", values), ("log_px_stderr", torch.where(failed, nan, estimate.stderr)),
                       ("log_px_jackknife_stderr", torch.where(failed, nan, jackknife)),
                       ("log_px_bias_bound", _bias_bound(estimate))):
        per_point[key] = torch.where(filled, value, per_point[key])
    per_point["log_px_systematic"] = per_point["log_px_systematic"] & ~filled
    dof["log_px"] = torch.where(filled.cpu(), estimate.dof, torch.as_tensor(dof["log_px"], dtype=torch.float64))
    if failed.any():
        note += (f"; on {int(failed.sum())} of them it fell below q's IWAE, by up to {float(below[failed].max()):.4g} "
                 "nats (its start did not reach their posterior): they take IWAE's value, a lower bound that depends "
                 "on the guide, with no error bar")
    estimate.info["log_px_note"] = note


def _step_rows(step, ais_index: torch.Tensor | None, per_point: dict) -> torch.Tensor | None:
    """The rows a plan's step runs on: all (None), the AIS subset (none where not chosen), or the points with an
    estimate but no error bar."""
    if step.rows == "subset":
        return ais_index if ais_index is not None else torch.empty(0, dtype=torch.long)
    if step.rows == "unsure":
        return (per_point["log_px_stderr"].isnan() & ~per_point["log_px"].isnan()).nonzero().flatten()
    return None


def _estimate_on(method: LogPxMethod, rows: torch.Tensor | None, model, guide, x, index, settings: LogPxSettings,
                 per_point: dict) -> LogPxEstimate:
    """``method``'s estimate on ``rows`` of ``x`` (all where None), laid out over every row with NaN on the others."""
    if rows is None:
        return method.estimate(model, guide, x, index, settings, per_point)
    estimate = method.estimate(model, guide, x[rows], index[rows], settings,
                               {key: values[rows] for key, values in per_point.items()})
    nan = torch.full((len(x),), float("nan"), dtype=estimate.values.dtype, device=x.device)
    sum_stderr = None if estimate.sum_stderr is None else nan.index_put((rows,), estimate.sum_stderr)
    bias = None if estimate.bias_bound is None else torch.zeros_like(nan).index_put((rows,), estimate.bias_bound)
    return LogPxEstimate(nan.index_put((rows,), estimate.values), nan.index_put((rows,), estimate.stderr),
                         estimate.info, sum_stderr, estimate.dof, bias)


def _evaluate_q(model, guide, x, index, num_samples, progress=False, desc="",
                keep_draws=False) -> tuple[dict, torch.Tensor]:
    """Per-point ELBO, its terms, IWAE and diagnostics from ``num_samples`` draws of q, in chunks."""
    sample_chunk = min(num_samples, SAMPLE_CHUNK)
    point_chunk = max(1, ELEMENT_BUDGET // (sample_chunk * x.shape[1]))
    starts = range(0, len(x), point_chunk)
    chunks = [
        _evaluate_chunk(model, guide, x[i:i + point_chunk], index[i:i + point_chunk], num_samples, sample_chunk,
                        keep_draws)
        for i in as_progress(progress if len(starts) > 1 else False).iterate(starts, desc, unit="chunk")
    ]
    z_mean = torch.cat([c.pop("z_mean") for c in chunks])
    per_point = {key: torch.cat([torch.as_tensor(c[key]).expand(len(c["elbo"]), *torch.as_tensor(c[key]).shape[1:])
                                 for c in chunks]) for key in chunks[0]}
    return per_point, z_mean


def active_units(z_mean: torch.Tensor, threshold: float = 0.01) -> int:
    r"""Latent dimensions whose posterior mean varies across data: :math:`\mathrm{Var}_x \mathbb{E}_q[z_d] > 0.01` [1].

    References:

    [1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov,
        arXiv:1509.00519
    """
    if len(z_mean) < 2:
        return 0
    return int((z_mean.double().var(0) > threshold).sum())


#: float rounding, in the dtype's epsilons times the magnitudes of the terms a per-point number is computed from, in
#: an ELBO's error and in a gap's (a difference of two such numbers). The exact guide's KL gap on the linear-Gaussian
#: model, where the ELBO has no Monte-Carlo error, read -2.4e-6 (1.1 epsilons of |log p(x)| + |recon| + |KL| = 18)
#: beside a stated error of 5e-9 (a tester's). Where there is Monte-Carlo error, rounding varies with the draws and
#: shows in their spread: 8 epsilons added whole read a float32 PPCA's ELBO error (magnitude 2000) at 14 times its
#: spread over repeats (benchmarks/coverage.py, elbo-float32-narrow); see :func:`with_rounding`
ELBO_ROUNDING, GAP_ROUNDING = 1, 2
#: the per-point numbers an ELBO is computed from
ELBO_TERMS = ("recon", "kl_prior")
#: a Monte-Carlo error below this share of the rounding bound is none: the estimate is deterministic to float precision
DETERMINISTIC_SHARE = 0.01


def with_rounding(monte_carlo: float, bound: float) -> float:
    """A mean's error given its Monte-Carlo error and its float rounding's ``bound``: the Monte-Carlo error, whose
    draws vary the rounding too (on a float32 PPCA at magnitude 2000 the spread over repeats matched it alone, where
    adding the bound read it 2.4 times too large), or the bound where the estimate has no Monte-Carlo error to speak
    of (below :data:`DETERMINISTIC_SHARE` of it: the exact posterior's ELBO)."""
    return bound if monte_carlo < DETERMINISTIC_SHARE * bound else monte_carlo


def rounding(per_point: dict, keys: tuple[str, ...], rows: torch.Tensor | None = None, epsilons: float = 1) -> float:
    r"""The float rounding of a mean of per-point numbers computed from ``keys``: ``epsilons`` times :math:`\epsilon`
    times the mean over ``rows`` of :math:`\sum_k |v_k|`, :math:`\epsilon` the coarsest of their dtypes' and the
    ELBO's (1.2e-7 in float32); a mean's error where it has no Monte-Carlo error (:func:`with_rounding`)."""
    magnitude = sum(per_point[key].double().abs() for key in keys)
    magnitude = magnitude if rows is None else magnitude[rows]
    epsilon = max(torch.finfo(per_point[key].dtype).eps for key in (*keys, "elbo") if key in per_point)
    return epsilons * epsilon * float(magnitude.mean())


def _combined_stderr(stderr: torch.Tensor, rows: torch.Tensor | None = None) -> float:
    """The standard error of a mean over ``rows`` (all where None) from per-point ones; NaN if any is NaN."""
    return mean_error(stderr if rows is None else stderr[rows])


def _mean_stderr(per_point: dict, key: str, rows: torch.Tensor | None = None,
                 systematic: bool | torch.Tensor = False) -> float:
    """The error of the mean of ``per_point[key]`` over ``rows`` (all where None), from the errors
    :func:`~elbogap.inference.weights.errors_a_mean_combines` picks (averaged where they are ``systematic``), and the
    mean of the points' bias bounds (``KEY_bias_bound``, where an estimator gave them) added whole; over one point, its
    own error, which holds its bound already."""
    own, jackknife = per_point[f"{key}_stderr"], per_point[f"{key}_jackknife_stderr"]
    bias = per_point.get(f"{key}_bias_bound")
    if rows is not None:
        own, jackknife = own[rows], jackknife[rows]
        bias = None if bias is None else bias[rows]
    return mean_error(errors_a_mean_combines(own, jackknife), systematic, bias if len(own) > 1 else None)


def _bias_bound(estimate: LogPxEstimate) -> torch.Tensor:
    """Per point, the estimate's bias bound (:attr:`~elbogap.estimators.LogPxEstimate.bias_bound`; 0 where none)."""
    return torch.zeros_like(estimate.stderr) if estimate.bias_bound is None else estimate.bias_bound


#: above this share of points whose weights have infinite variance, their errors would dominate the split's: IWAE
#: reports none
NO_STDERR_SHARE = 0.25


def _infinite_share(khat: torch.Tensor) -> float:
    """The share of the points with a tail fit whose k-hat says q's weights have infinite variance (above 0.5)."""
    fitted = khat[~khat.isnan()]
    return float((fitted > FINITE_VARIANCE_KHAT).double().mean()) if len(fitted) else 0.0


def _count(share: float, points: int) -> str:
    """``3 of 240 points``: a share of points as their count (a share of 1 in 240 read "0% of points")."""
    return f"{round(share * points)} of {points} points"


def _khat_summary(khat: torch.Tensor, num_samples: int, log_px_method: str = "iwae") -> dict:
    """k-hat's mean (+inf where any point has an unbounded tail), the share above the threshold, and a warning (where
    log p(x) is ``log_px_method``'s, not IWAE's, the warning says so instead of asking for AIS)."""
    threshold = khat_threshold(num_samples)
    out = {"khat_threshold": threshold, "khat_samples": num_samples}
    if khat.isnan().all():  # too few samples for a tail fit (fewer than 25): None, not NaN, in the JSON
        return {**out, "khat_mean": None, "khat_bad_share": None}
    khat = khat[~khat.isnan()].double()
    bad = float((khat > threshold).double().mean())
    out.update(khat_mean=float(khat.mean()), khat_bad_share=bad)
    infinite = _infinite_share(khat)
    elsewhere = None if log_px_method == "iwae" else f"log p(x) and the KL gap here are {log_px_method}'s, not IWAE's"
    if infinite > NO_STDERR_SHARE:
        out["log_px_iwae_note"] = (
            f"k-hat of q's importance weights is above {FINITE_VARIANCE_KHAT} on {_count(infinite, len(khat))} "
            f"(above {threshold:.2f}, S = {num_samples}, on {_count(bad, len(khat))}): their variance is infinite, so "
            "IWAE has no standard error; " + (elsewhere or "use AIS (--log-px ais) for an error bar"))
    elif bad > 0:
        out["log_px_iwae_note"] = (
            f"k-hat of q's importance weights is above {threshold:.2f} (S = {num_samples}) on "
            f"{_count(bad, len(khat))}: there the weights have no usable variance, and IWAE's standard error may "
            "understate its error" + (f" ({elsewhere})" if elsewhere else ""))
    return out


def _summarize(per_point: dict, num_samples: int, estimates: list[tuple[LogPxMethod, LogPxEstimate]],
               fills: list[tuple[LogPxMethod, LogPxEstimate]] = ()) -> dict:
    def mean(key, where=None):
        values = per_point[key].double()
        return float(values[where].mean() if where is not None else values.mean())

    covered = ~per_point["log_px"].isnan()
    subset = not bool(covered.all())
    method, estimate = estimates[-1]
    bounds = per_point["log_px_systematic"][covered]  # a quadrature's points (bounds), not those AIS filled in
    metrics = {
        "units": len(per_point["elbo"]),  # every number below is a mean over these (records.py: one schema)
        "num_points": len(per_point["elbo"]),
        "elbo": mean("elbo"),
        "elbo_stderr": with_rounding(_combined_stderr(per_point["elbo_stderr"]),
                                     rounding(per_point, ELBO_TERMS, epsilons=ELBO_ROUNDING)),
        "elbo_samples": num_samples,
        "recon": mean("recon"),
        "kl_prior": mean("kl_prior"),
        "kl_prior_method": "analytic" if bool(per_point["kl_prior_analytic"].all()) else "mc",
        "log_px": mean("log_px", covered),
        "log_px_stderr": _mean_stderr(per_point, "log_px", covered, bounds),
        "log_px_method": method.name,
        "log_px_guide_independent": method.guide_independent,
        "log_px_points": int(covered.sum()),
        "log_px_samples": estimate.info["samples"],
        "log_px_iwae": mean("log_px_iwae"),
        "log_px_iwae_stderr": _mean_stderr(per_point, "log_px_iwae"),
        "log_px_iwae_samples": num_samples,
        "kl_gap": mean("kl_gap", covered),
        "kl_gap_stderr": with_rounding(math.hypot(_combined_stderr(per_point["elbo_stderr"], covered),
                                                  _mean_stderr(per_point, "log_px", covered, bounds)),
                                       rounding(per_point, (*ELBO_TERMS, "log_px"), covered, GAP_ROUNDING)),
        "ess_mean": mean("ess"),
        **_khat_summary(per_point["khat"], num_samples, method.name),
    }
    if subset:
        metrics["elbo_log_px_points"] = mean("elbo", covered)
    for method, estimate in [*estimates, *fills]:
        metrics.update({key: value for key, value in estimate.info.items() if key != "samples"})
        own = ~estimate.values.isnan()  # the points it ran on
        if method.kept_as:
            metrics[method.kept_as] = mean(method.kept_as, own)
            metrics[f"{method.kept_as}_stderr"] = _mean_stderr(per_point, method.kept_as, own)
        if method.check:
            metrics.update(method.check(per_point, own))
    for method, estimate in fills:
        metrics.update(log_px_filled_by=method.name, log_px_filled_points=int((~estimate.values.isnan()).sum()))
    if "kl_exact" in per_point:
        metrics["kl_exact"] = mean("kl_exact")
        metrics["kl_exact_stderr"] = _combined_stderr(per_point["kl_exact_stderr"])
        metrics["kl_exact_method"] = "analytic" if bool(per_point["kl_exact_analytic"].all()) else "mc"
    return with_totals(metrics)
