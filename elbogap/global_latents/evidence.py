r"""The evidence :math:`\log p(D)` of a model with global latents: AIS from a fitted Gaussian reference, and BDMC.

The default estimate (``start="gaussian"``) runs in five stages, once per seed, independent of every guide:

1. tempered SMC from the prior (:mod:`elbogap.inference.smc`, an adaptive schedule) brings particles to the
   posterior, and their mean and covariance place a Gaussian near it;
2. that Gaussian is refined by SVI in the coordinates it whitens (:mod:`elbogap.inference.gaussian_fit`): the
   reference :math:`r = \mathcal{N}(m, L L^\top)`;
3. where the program has centred hierarchies, the same two stages and a pilot run on its non-centred form choose
   the coordinates the reported run anneals in (:func:`_forms`), and the other form checks that choice;
4. AIS [1] anneals independent chains from exact draws of :math:`r` to the posterior along
   :math:`r^{1-\beta} p(\theta, z, D)^\beta`, with HMC in the whitened coordinates
   (:class:`~elbogap.inference.whitened.WhitenedPath`: a mass matrix from :math:`L`) and the pilot-tuned
   step sizes of :mod:`elbogap.inference.ais`. A short run of ``pilot_steps`` temperatures measures the
   standard error; the reported run is a fresh one with as many temperatures as that error says reach
   ``target_stderr`` (its variance falls about as :math:`1/T`), at least four times the pilot's and at most
   ``max_steps``. A reported run whose error
   is over 1.5 times the target, or whose weights' tail is too heavy for an error (PSIS :math:`\hat k` above 0.5),
   runs again, fresh, with at least twice the temperatures (four times where it had no error);
5. AIS from the prior checks it (:func:`checked_against_prior`), and replaces it where it lies clearly above: a
   reference misses what its HMC cannot reach from it, as a funnel's neck.

Every AIS chain's weight has expectation :math:`p(D)` whatever :math:`r` is, so the estimate is valid for any
reference; a good one only makes it precise. ``start="prior"`` is the earlier estimator, one AIS run from
the prior at ``max_steps`` temperatures, kept for comparison. BDMC simulates data sets
:math:`D^* \sim p(D)` together with the latents that made them (exact posterior draws for :math:`D^*`) and
sandwiches :math:`\log p(D^*)` between forward and reverse AIS from the prior.

References:

[1] Annealed Importance Sampling, Radford M. Neal, arXiv:physics/9803008
[2] Sandwiching the marginal likelihood using bidirectional Monte Carlo, Roger B. Grosse,
    Zoubin Ghahramani, Ryan P. Adams, arXiv:1511.02543
"""

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from scipy import stats

from elbogap.global_latents.decentred import decentred_latents, original_latents
from elbogap.inference.ais import AISSettings, AnnealingPath, anneal, pilot_steps, sigmoid_schedule, tune_step_sizes
from elbogap.inference.bdmc import summarize_sandwich
from elbogap.inference.gaussian_fit import GaussianFitSettings, fit_gaussian
from elbogap.inference.smc import SMCSettings, tempered_smc
from elbogap.inference.weights import group_spread_dof, log_mean_exp, log_mean_exp_stderr, pareto_khat
from elbogap.inference.whitened import STARTS, WhitenedPath, moment_match
from elbogap.model.target import DataSetTarget
from elbogap.progress import Progress, as_progress
from elbogap.threads import intra_op_threads


def one_thread():
    """One intra-op thread: a program's tensors here are small, and on two threads a unary op on an
    expanded (chains, N) tensor was measured 50 times slower (9 ms against 0.19 ms)."""
    return intra_op_threads(1)


#: a reported run whose error is over this many times the target (or that has none) runs again with more temperatures
RETRY = 1.5
#: the fewest temperatures of a reported run, in pilots' lengths: AIS's bias at few temperatures (every chain short
#: of the posterior alike) is not in its chains' spread; on a tester's centred hierarchy a 100-temperature run, its
#: pilot's error already under the target, read 0.045 low at 3.8 s.e., and at 400 temperatures within 0.002 (0.2 s.e.)
REPORTED_FLOOR = 4
#: combined standard errors by which AIS from the prior must lie above the fitted reference's estimate to replace it
#: (:func:`checked_against_prior`): both are valid lower bounds, so a replacement on noise only costs precision
PRIOR_SWITCH = 2.0
#: and by at least this many nats (a bias below the gaps' tolerance is not worth a noisier estimate: a 256-chain run
#: from the prior read 0.036 above an exact value at 3.4 of its s.e., on a masked regression the reference had right)
PRIOR_SWITCH_NATS = 0.1
#: the largest standard error of the short run from the prior that is read as a rival: a noisier one cannot tell a
#: 0.1-nat bias and would plan thousands of temperatures (a 1000-row regression: 0.25, then 4000 temperatures, 88 s)
PRIOR_CHECK_STDERR = 0.15
#: the share of SMC's particles far outside the fitted reference (``smc_far``, :func:`reference_coverage`) above which
#: the reference has missed modes: 2-3% for a horseshoe's funnel, at most 5.5% on the unimodal models of a tester's
#: passes, 30-57% for a tester's two-component mixture whose means swap labels (two mirror modes), 41% for a
#: one-factor model's sign symmetry, 80% for a 3-component mixture's other five
FAR_SHARE = 0.1
#: a smaller share that, with the short run from the prior lying above the reference's estimate, is doubt enough too:
#: on a one-factor model's sign symmetry 8% of SMC's particles sat in the other mode while the reference's estimate
#: read log 2 low. On the unimodal models of a tester's pass, 7 seeds' short runs lay above, with 0-1.2% but for a
#: centred hierarchy's 4.3%: that one pays a run from the prior at every temperature and keeps the reference's
#: estimate unless the run lies clearly above it
FAR_HINT = 0.02
#: the check's settings, in the evidence's cache key
PRIOR_CHECK_SETTINGS = {"pilot": "above", "above": PRIOR_SWITCH, "above_nats": PRIOR_SWITCH_NATS,
                        "stderr": PRIOR_CHECK_STDERR, "modes": {"far_share": FAR_SHARE, "far_hint": FAR_HINT,
                                                                "steps": "max_steps", "pilot": "any"}}


@dataclass(frozen=True)
class EvidenceSettings:
    """How :func:`ais_evidence` estimates :math:`\\log p(D)` (see the module).

    :param str start: ``"gaussian"`` (the fitted reference) or ``"prior"``.
    :param int chains: AIS chains, evaluated together.
    :param int max_steps: the most temperatures of the reported run (from the prior: exactly these).
    :param float target_stderr: the standard error, in nats, the reported run's temperatures are chosen for.
    :param int pilot_steps: temperatures of the run that measures the error.
    :param int leapfrog_steps: leapfrog steps per HMC transition.
    :param float target_accept: the acceptance rate step sizes are tuned toward.
    :param bool non_centred: whether a program with centred hierarchies is also tried in its non-centred form, and
        the form whose pilot is the better annealed (:func:`_forms`).
    :param bool modes_check: whether SMC's particles far outside the reference (modes it missed) run AIS from the
        prior at ``max_steps``, which replaces the reference's estimate where it lies above
        (:func:`checked_against_prior`); off, only a precise short run from the prior lying above does (the
        estimator before 2026-12-06, kept for comparison).
    """

    start: str = "gaussian"
    chains: int = 256
    max_steps: int = 4000
    target_stderr: float = 0.02
    pilot_steps: int = 100
    leapfrog_steps: int = 5
    target_accept: float = 0.65
    non_centred: bool = True
    modes_check: bool = True
    smc: SMCSettings = field(default_factory=SMCSettings)
    fit: GaussianFitSettings = field(default_factory=GaussianFitSettings)

    def ais(self, steps: int) -> AISSettings:
        return AISSettings(steps=steps, chains=self.chains, leapfrog_steps=self.leapfrog_steps,
                           target_accept=self.target_accept)

    def steps_for(self, pilot_stderr: float) -> int:
        """Temperatures for ``target_stderr``, from the pilot's error at ``pilot_steps`` (variance as 1/T), with a
        margin of 1.5, and at least :data:`REPORTED_FLOOR` times the pilot's (also where its weights had no error:
        the reported run then asks again); at most ``max_steps``."""
        floor = REPORTED_FLOOR * self.pilot_steps
        if not math.isfinite(pilot_stderr):  # a tail too heavy for an error: more temperatures, not all of them
            return min(self.max_steps, floor)
        wanted = 1.5 * self.pilot_steps * (pilot_stderr / self.target_stderr) ** 2
        return int(min(self.max_steps, max(floor, math.ceil(wanted))))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evidence:
    r""":math:`\log p(D)` by AIS, its standard error over chains, and what the run did.

    ``log_w`` ``(chains,)`` are the chains' log-weights and ``states`` ``(chains, latent_dim)``
    their final positions: weighted by :math:`w_k / \sum w`, they are draws from the posterior
    (a reference where no MCMC ran). ``acceptance`` is the mean acceptance per temperature band.
    ``stages`` records how the reference was found and what each stage cost.
    """

    log_evidence: float
    stderr: float
    log_w: torch.Tensor
    states: torch.Tensor
    acceptance: torch.Tensor
    step_sizes: torch.Tensor
    seconds: float
    steps: int = 0
    stages: dict = field(default_factory=dict)
    #: the annealed program and its path where the estimate came from the fitted Gaussian reference (for
    #: :func:`with_reference_draws`); not recorded
    reference: tuple | None = field(default=None, repr=False)
    #: draws of that reference ``(count, latent_dim)`` in the model's own latents and their log-weights ``(count,)``
    draws: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def dof(self) -> float:
        """Degrees of freedom of ``stderr`` (:func:`~elbogap.inference.weights.group_spread_dof`), for its interval."""
        return group_spread_dof(len(self.log_w))

    def summary(self, settings) -> dict:
        khat = float(pareto_khat(self.log_w.double()[:, None])[0])
        return {"log_evidence": self.log_evidence, "stderr": self.stderr, "dof": self.dof, **settings.to_dict(),
                **({"start": self.stages["start"]} if "start" in self.stages else {}),
                "steps_used": self.steps, "acceptance": self.acceptance.tolist(), "seconds": self.seconds,
                "khat": khat if math.isfinite(khat) else None, "stages": self.stages,
                "effective_chains": float(self.log_w.double().softmax(0).pow(2).sum().reciprocal())}


def ais_evidence(model, data: torch.Tensor, settings: EvidenceSettings | AISSettings | None = None,
                 progress: bool | Progress = False) -> Evidence:
    r""":math:`\log p(D)` by AIS, :math:`\log \frac1K \sum_k w_k` over ``settings.chains`` (see the module).

    An :class:`~elbogap.inference.ais.AISSettings` runs the earlier estimator, from the prior at its
    ``steps``. ``progress`` shows a bar per stage.
    """
    if isinstance(settings, AISSettings):
        return _from_prior(model, data, settings, progress)
    settings = settings or EvidenceSettings()
    if settings.start not in STARTS:
        raise ValueError(f"unknown evidence start {settings.start!r}; choose one of {', '.join(STARTS)}")
    if settings.start == "prior":
        return _from_prior(model, data, settings.ais(settings.max_steps), progress)
    evidence = checked_against_prior(model, data, settings, _from_reference(model, data, settings, progress), progress)
    return with_reference_draws(model, data, evidence)  # last: every number before draws as it did without them


#: draws of the fitted Gaussian reference r weighted by p(D, z) / r(z) (:func:`with_reference_draws`)
REFERENCE_DRAWS = 2048


def with_reference_draws(model, data, evidence: Evidence, count: int = REFERENCE_DRAWS, chunk: int = 256) -> Evidence:
    r"""``evidence`` with ``count`` draws of its fitted Gaussian reference :math:`r` and their log-weights
    :math:`\log p(z, D) - \log r(z)`, a second weighted reference posterior beside the AIS chains' final states.

    Where :math:`r` fits the posterior closely, these are worth many more effective draws than the chains' (a
    Gaussian posterior: 1930-2045 of 2048 at PSIS :math:`\hat k` below 0.25, their sds within 1.6% where 256 chains
    give 4.4%). On a 21-latent Gaussian hierarchy the chains' states put the reference's sd of the top mean 7% low,
    and read a mean-field q's sd ratio there (0.92 against the exact sd; the family's optimum 0.89) as 0.99; the
    draws read 0.92. Where :math:`r` fits less closely (eight schools, :math:`\hat k` 0.42-0.55) the chains stay:
    an sd from heavier-tailed weights is no better than theirs, whatever Kish's count says
    (:data:`~elbogap.global_latents.reference.REFERENCE_DRAWS_KHAT`).

    Made only where the estimate came from :math:`r` and SMC's particles did not sit far outside it
    (:data:`FAR_HINT`): in a posterior with modes :math:`r` did not settle in, its draws miss them whatever their
    weights say. The reference posterior takes them where their weights' tail allows
    (:func:`~elbogap.global_latents.reference.ais_reference`)."""
    if evidence.reference is None or evidence.stages.get("fit", {}).get("smc_far", 0.0) > FAR_HINT:
        return evidence
    program, path = evidence.reference
    zs, log_w = [], []
    with torch.no_grad():
        for start in range(0, count, chunk):
            z = path.to_z(torch.randn(min(chunk, count - start), path.dim, dtype=path.dtype, device=path.device))
            log_prior, log_lik = path.log_parts(z)
            zs.append(z)
            log_w.append((log_prior + log_lik - path.log_density(z)).double())
    z, log_w = torch.cat(zs), torch.cat(log_w)
    if program is not model:
        z = original_latents(program, model, data, z)
    evidence.draws = (z.detach(), log_w)
    return evidence


def checked_against_prior(model, data, settings: EvidenceSettings, evidence: Evidence, progress) -> Evidence:
    r"""``evidence`` (AIS from the fitted reference), or AIS from the prior where runs from the prior say the
    reference missed part of the posterior.

    Both are stochastic lower bounds on :math:`\log p(D)` (in expectation). A Gaussian reference misses what its HMC
    cannot reach from it, as a funnel's neck: on eight schools written centred, its AIS read 0.16-0.22 nats low at
    7 s.e. (or with no error at all), on a tester's six-group funnel 0.19 nats low at 7 s.e. So, once per seed:

    1. a run from the prior at the pilot's ``pilot_steps`` temperatures; where it has an error bar of at most
       :data:`PRIOR_CHECK_STDERR` and lies above the reference's estimate (a run with a twentieth of the
       temperatures or fewer, more biased low, yet higher), the reference's estimate is in doubt (on models where
       the reference is right it lies below, on large data sets tens of nats below, and nothing more runs). Where
       SMC's particles said the posterior has modes the reference did not settle in (more than :data:`FAR_SHARE`
       of them far outside it, or more than :data:`FAR_HINT` with the short run lying above), that is doubt
       enough, whatever that short run's error: a reference in one of two
       mirror modes reads log 2 low with a tiny error bar (a tester's mixture: 0.69 low at 168 s.e., where the
       short run read above with an error of 0.18 or none; a one-factor model's sign symmetry: 0.73 low at 49
       s.e., where it read 1.2 below the reference's estimate);
    2. then a fresh run from the prior with the temperatures that pilot's error says reach ``target_stderr`` (at
       most ``max_steps``; ``max_steps`` itself where the modes gave the doubt); where it lies above the
       reference's estimate by more than :data:`PRIOR_SWITCH` combined standard errors (its own alone where the
       reference's weights had no error bar) and :data:`PRIOR_SWITCH_NATS`, it is reported instead.

    ``stages["prior_check"]`` records both runs, ``modes`` where SMC's particles gave the doubt, and ``switched``
    (the reference's estimate it replaced)."""
    begun = time.perf_counter()
    pilot = _from_prior(model, data, settings.ais(settings.pilot_steps), progress)
    record = {"steps": settings.pilot_steps, "log_evidence": pilot.log_evidence, "stderr": pilot.stderr,
              "seconds": time.perf_counter() - begun}
    evidence.stages["prior_check"] = record
    reference_stderr = evidence.stderr if math.isfinite(evidence.stderr) else 0.0  # a heavy tail: likely lower
    far, above = evidence.stages.get("fit", {}).get("smc_far", 0.0), pilot.log_evidence > evidence.log_evidence
    modes = settings.modes_check and (far > FAR_SHARE or (far > FAR_HINT and above))
    if not (modes or (above and pilot.stderr <= PRIOR_CHECK_STDERR)):
        return evidence  # below, or above with no error bar (NaN) or too noisy: the reference's estimate stands
    if modes:
        record["modes"] = True
    steps = settings.max_steps if modes else settings.steps_for(pilot.stderr)
    prior = _from_prior(model, data, settings.ais(steps), progress)
    record.update(run={"steps": prior.steps, "log_evidence": prior.log_evidence, "stderr": prior.stderr},
                  seconds=time.perf_counter() - begun)
    margin = max(PRIOR_SWITCH * math.hypot(prior.stderr, reference_stderr), PRIOR_SWITCH_NATS)
    if not prior.log_evidence - evidence.log_evidence > margin:
        return evidence
    prior.stages = {**evidence.stages, "start": "prior",
                    "prior_check": {**record, "switched": {"from": "gaussian", "log_evidence": evidence.log_evidence,
                                                           "stderr": evidence.stderr, "steps": evidence.steps}}}
    prior.seconds = evidence.seconds + record["seconds"]
    return prior


def _from_prior(model, data, settings: AISSettings, progress) -> Evidence:
    started = time.perf_counter()
    path = AnnealingPath(DataSetTarget(model, data))
    with one_thread(), as_progress(progress).bar(f"AIS from the prior at {settings.steps} temperatures",
                                                   pilot_steps(settings) + settings.steps, unit="transition") as bar:
        step_sizes = tune_step_sizes(path, settings, bar=bar)
        betas = sigmoid_schedule(settings.steps, dtype=data.dtype)
        state, _, acceptance = anneal(path, path.start(settings.chains), betas, step_sizes, settings.leapfrog_steps,
                                      bar=bar)
    log_w = state.log_w.double()
    return Evidence(float(log_mean_exp(log_w)[0]), float(log_mean_exp_stderr(log_w)[0]), log_w[:, 0],
                    state.z[:, 0].detach(), acceptance, step_sizes[:, 0], time.perf_counter() - started,
                    settings.steps, {"start": "prior"})


def gaussian_reference(model, data: torch.Tensor, settings: EvidenceSettings, progress: bool | Progress = False,
                       stages: dict | None = None) -> WhitenedPath:
    """Stages 1 and 2 of the module: tempered SMC from the prior, then SVI of a full-rank Gaussian from its
    particles."""
    stages = {} if stages is None else stages
    progress = as_progress(progress)

    def log_parts(z):
        return model.log_density(z, data)

    started = time.perf_counter()
    with progress.bar("SMC from the prior", None, unit="temperature") as bar:
        smc = tempered_smc(log_parts, model.prior_draws(settings.smc.particles, data).to(data.dtype), settings.smc,
                           bar=bar)
    mean, scale_tril = moment_match(smc.z)
    stages["smc"] = {"temperatures": smc.temperatures, "beta": smc.beta, "log_evidence": smc.log_evidence,
                     "acceptance": smc.acceptance, "seconds": time.perf_counter() - started}
    started = time.perf_counter()
    with progress.bar("fit the Gaussian reference", settings.fit.steps, unit="step") as bar:
        fit = fit_gaussian(log_parts, mean, scale_tril, settings.fit, bar=bar)
    diagonal = fit.scale_tril if fit.scale_tril.dim() == 1 else fit.scale_tril.diagonal()
    if bool(torch.isfinite(fit.scale_tril).all()) and bool((diagonal > 0).all()):
        mean, scale_tril = fit.mean, fit.scale_tril
    path = WhitenedPath(log_parts, mean, scale_tril, start="gaussian")
    stages["fit"] = {"elbo": fit.elbo, "seconds": time.perf_counter() - started,
                     **reference_coverage(path, smc.z.detach())}
    return path


#: squared Mahalanobis distance per dimension beyond which a particle sits far outside the reference (about 3.2
#: sds a dimension): none of SMC's particles for the unimodal benchmark models, 2-3% for a horseshoe's funnel,
#: 80% for a 3-component mixture's other five mirror modes
FAR = 10.0


def reference_coverage(path: WhitenedPath, z: torch.Tensor) -> dict:
    """How SMC's particles ``z`` ``(N, d)`` sit around the fitted reference of ``path``: the share outside its
    central 99.9% ellipsoid (about 0.001 for draws of it; more where the posterior is wider or heavier-tailed than
    the reference) and the share ``FAR`` beyond it (particles in modes the reference's fit did not settle in),
    from their squared Mahalanobis distances, the squared norms of their whitened coordinates."""
    distance, dimensions = path.to_u(z).double().pow(2).sum(-1), z.shape[-1]
    return {"smc_outside": float((distance > stats.chi2.ppf(0.999, dimensions)).double().mean()),
            "smc_far": float((distance > FAR * dimensions).double().mean())}


def _reference_and_pilot(model, data, settings: EvidenceSettings, progress: Progress, stages: dict):
    """Stages 1 and 2 and the pilot run on ``model``: its annealing path and the pilot's record in ``stages``."""
    path = gaussian_reference(model, data, settings, progress, stages)
    begun = time.perf_counter()
    pilot = _anneal(path, settings.ais(settings.pilot_steps), progress,
                    f"AIS pilot at {settings.pilot_steps} temperatures")  # its transitions: step-size tuning too
    stages["pilot"] = {"steps": settings.pilot_steps, "stderr": float(log_mean_exp_stderr(pilot.log_w.double())[0]),
                       "log_evidence": float(log_mean_exp(pilot.log_w.double())[0]),
                       "seconds": time.perf_counter() - begun}
    return path


def _forms(model, data, settings: EvidenceSettings, progress: Progress, stages: dict) -> list[tuple]:
    r"""The forms of the program the reported run may anneal, the better first: ``model`` as written, and its
    non-centred form where it has centred hierarchies
    (:meth:`~elbogap.global_latents.model.GlobalLatentModel.non_centred`), each as ``(program, path, stages)`` with
    its reference and pilot; the better pilot by :func:`_better_pilot` (a path the chains travel better loses less
    of the evidence). The evidence is the same in either coordinates; only a run's precision and bias differ. On
    centred funnels (eight schools, a tester's 80-group regression, 80 sparse groups) the program as written read
    0.08-0.22 nats low at 4-7 s.e.; its non-centred form's run was within 0.03 of exact (BENCHMARKS.md).
    ``stages["coordinates"]`` records both pilots and the choice; ``stages`` gets the better form's stages."""
    started = time.perf_counter()
    written = {}
    forms = [(model, _reference_and_pilot(model, data, settings, progress, written), written)]
    rewritten = model.non_centred(data) if settings.non_centred else None
    if rewritten is not None:
        other = {}
        forms.append((rewritten, _reference_and_pilot(rewritten, data, settings, progress, other), other))
        if _better_pilot(other["pilot"], written["pilot"]):
            forms.reverse()
        stages["coordinates"] = {"sites": rewritten.decentred_sites,
                                 "chosen": "non-centred" if forms[0][0] is rewritten else "as written",
                                 "pilots": {"as written": written["pilot"], "non-centred": other["pilot"]},
                                 "seconds": time.perf_counter() - started}
    stages.update(forms[0][2])
    return forms


def _better_pilot(pilot: dict, other: dict) -> bool:
    """Whether ``pilot`` anneals better than ``other``: its weights have an error bar where the other's do not (a tail
    too heavy for a variance marks a path the chains travel badly), else it reads higher. Either can be wrong by
    chance, so the other form's run checks the choice (:func:`_from_reference`)."""
    has, other_has = math.isfinite(pilot["stderr"]), math.isfinite(other["stderr"])
    if has != other_has:
        return has
    return pilot["log_evidence"] > other["log_evidence"]


def _reported_run(path, settings: EvidenceSettings, progress: Progress, pilot_stderr: float, form: str = ""):
    """The reported run along ``path``: fresh runs, each with more temperatures where a heavier tail (no error) or a
    larger error than the pilot said asks for them (stage 4 of the module); the last run's state, step sizes,
    acceptance and every run's record. Each run's progress line says why it runs (``form``: which of a program's two
    forms, where it has two)."""
    steps, runs, why = settings.steps_for(pilot_stderr), [], ""
    while True:
        begun = time.perf_counter()
        final, step_sizes, acceptance = _anneal(path, settings.ais(steps), progress,
                                                f"AIS at {steps} temperatures{form}{why}", details=True)
        stderr = float(log_mean_exp_stderr(final.log_w.double())[0])
        runs.append({"steps": steps, "stderr": stderr, "log_evidence": float(log_mean_exp(final.log_w.double())[0]),
                     "seconds": time.perf_counter() - begun})
        if steps >= settings.max_steps or math.isfinite(stderr) and stderr <= RETRY * settings.target_stderr:
            return final, step_sizes, acceptance, runs
        wanted = settings.steps_for(stderr) if math.isfinite(stderr) else 4 * steps  # no error: a heavy tail
        steps = min(settings.max_steps, max(2 * steps, wanted))
        why = (f", again: the last run's error {stderr:.2g} is above {settings.target_stderr:g}"
               if math.isfinite(stderr) else ", again: the last run's weights had no error bar (a heavy tail)")


def _from_reference(model, data, settings: EvidenceSettings, progress) -> Evidence:
    """Stages 1-4 of the module. Where the program has two forms, the other form's pilot is read against the reported
    run: reading above it (a pilot, with a twentieth of the temperatures or fewer, is the more biased low), it casts
    doubt on the choice, the other form's reported run follows, and it is reported where it lies above by more than
    :data:`PRIOR_SWITCH` combined s.e. (on a tester's centred hierarchy, under either rule for pilots, one seed in 12
    chose the program as written and read 0.17-0.21 nats low at 10-32 of its s.e.; ``stages["coordinates"]
    ["other_run"]`` records that run, and ``["switched"]`` the run it replaced)."""
    started = time.perf_counter()
    stages = {"start": "gaussian"}
    progress = as_progress(progress)
    with one_thread():
        forms = _forms(model, data, settings, progress, stages)
        program, path, own = forms[0]
        final, step_sizes, acceptance, runs = _reported_run(path, settings, progress, own["pilot"]["stderr"])
        if len(forms) > 1 and forms[1][2]["pilot"]["log_evidence"] > runs[-1]["log_evidence"]:
            other_program, other_path, other = forms[1]
            name = "program as written" if other_program is model else "non-centred form"
            other_final = _reported_run(other_path, settings, progress, other["pilot"]["stderr"],
                                        f" (the {name}, whose pilot read above the first form's run)")
            last, theirs = runs[-1], other_final[3][-1]
            stages["coordinates"]["other_run"] = theirs
            margin = PRIOR_SWITCH * math.hypot(*(value if math.isfinite(value) else 0.0
                                                 for value in (last["stderr"], theirs["stderr"])))
            if theirs["log_evidence"] - last["log_evidence"] > margin:
                program, path, own = other_program, other_path, other
                final, step_sizes, acceptance, runs = other_final
                stages.update(other)
                stages["coordinates"]["chosen"] = "non-centred" if program is not model else "as written"
                stages["coordinates"]["switched"] = last
        stages["reported"] = runs[-1]
        stages["runs"] = runs
        log_w = final.log_w.double()
        states = path.to_z(final.z[:, 0]).detach()
        if program is not model:
            states = original_latents(program, model, data, states)
    return Evidence(float(log_mean_exp(log_w)[0]), float(log_mean_exp_stderr(log_w)[0]), log_w[:, 0], states,
                    acceptance, step_sizes[:, 0], time.perf_counter() - started, runs[-1]["steps"], stages,
                    reference=(program, path))


def _anneal(path, settings: AISSettings, progress: Progress, desc: str, details: bool = False):
    """One AIS run along ``path`` with step sizes from its own pilot: the final state (and step sizes, acceptance)."""
    with progress.bar(desc, pilot_steps(settings) + settings.steps, unit="transition") as bar:
        step_sizes = tune_step_sizes(path, settings, bar=bar)
        betas = sigmoid_schedule(settings.steps, dtype=path.dtype)
        state, _, acceptance = anneal(path, path.start(settings.chains), betas, step_sizes, settings.leapfrog_steps,
                                      bar=bar)
    return (state, step_sizes, acceptance) if details else state


def bdmc_evidence(model, data: torch.Tensor, count: int, settings: EvidenceSettings | None = None,
                  progress: bool | Progress = False) -> tuple[dict, list[torch.Tensor]]:
    r"""BDMC on ``count`` data sets simulated from the model's prior predictive, shaped like ``data``.

    For each :math:`(D^*, \theta^*, z^*)`, the estimator of :func:`ais_evidence` at ``settings`` (its reference
    fitted on :math:`D^*`, its temperatures chosen by its pilot run) gives a stochastic lower bound on
    :math:`\log p(D^*)`, and the same chains run backwards from :math:`(\theta^*, z^*)` (an exact posterior
    draw) to the start, with the same step sizes, a stochastic upper bound. The standard errors of the width
    and the upper bound come from the spread across data sets
    (:func:`~elbogap.inference.bdmc.summarize_sandwich`): the reverse chains of a data set share their one
    exact draw. Returns the summary (means over data sets, per data set values, ``width`` and its reading)
    and the simulated data sets.
    """
    settings = settings or EvidenceSettings()
    started = time.perf_counter()
    lower, upper, lower_se, datasets, steps = [], [], [], [], []
    progress = as_progress(progress)
    with one_thread():
        for number in range(count):
            with progress.phase(f"BDMC data set {number + 1} of {count}"):
                simulated, z = model.simulate(data)
                datasets.append(simulated)
                bounds = sandwich(model, simulated, z.to(data.dtype), settings, progress)
            lower.append(bounds["lower"])
            lower_se.append(bounds["lower_stderr"])
            upper.append(bounds["upper"])
            steps.append(bounds["steps"])

    summary = {"datasets": count, **summarize_sandwich(*(torch.tensor(values, dtype=torch.float64) for values in (
        lower, lower_se, upper, [math.nan] * count))),
               "per_dataset": {"lower": lower, "upper": upper, "steps": steps}, "settings": settings.to_dict(),
               "seconds": time.perf_counter() - started}
    return summary, datasets


def sandwich(model, data: torch.Tensor, z: torch.Tensor, settings: EvidenceSettings | None = None,
             progress: bool | Progress = False) -> dict:
    r"""BDMC on one data set simulated with latents ``z`` (flat, as :meth:`GlobalLatentModel.pack` makes them): the
    forward AIS estimate of :math:`\log p(D)`, a stochastic lower bound, with its standard error; the reverse
    chains' stochastic upper bound (they share their one exact start, so it has no error bar of its own); the
    temperatures used."""
    settings = settings or EvidenceSettings()
    with one_thread():
        forward, backward, used = _sandwich(model, data, z, settings, as_progress(progress))
    return {"lower": float(log_mean_exp(forward.double())[0]), "lower_stderr": float(log_mean_exp_stderr(forward)[0]),
            "upper": -float(log_mean_exp(backward.double())[0]), "steps": used}


def _sandwich(model, data, z, settings: EvidenceSettings, progress) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Forward and reverse log-weights ``(chains, 1)`` on one simulated data set with latents ``z``, and the
    temperatures used."""
    if settings.start == "prior":
        path, ais = AnnealingPath(DataSetTarget(model, data)), settings.ais(settings.max_steps)
        start = z.expand(settings.chains, 1, -1).clone()
    else:
        program, path, own = _forms(model, data, settings, progress, {})[0]  # the evidence's form, and z in it
        ais = settings.ais(settings.steps_for(own["pilot"]["stderr"]))
        if program is not model:
            z = decentred_latents(program, model, data, z[None])[0]
        start = path.to_u(z).expand(settings.chains, 1, -1).clone()
    forward, step_sizes, _ = _anneal(path, ais, progress, f"forward AIS at {ais.steps} temperatures", details=True)
    betas = sigmoid_schedule(ais.steps, dtype=path.dtype)
    with progress.bar(f"reverse AIS at {ais.steps} temperatures", ais.steps, unit="transition") as bar:
        backward, _, _ = anneal(path, start, betas, step_sizes, ais.leapfrog_steps, reverse=True, bar=bar)
    return forward.log_w, backward.log_w, ais.steps
