r"""A flow trained from two starts, the better kept.

Pyro's IAF (one affine autoregressive transform of N(0, I), :math:`y = \mu(x) + e^{s(x)} x`) contains the mean
field within Pyro's bounds on :math:`e^s`, yet neither of its starts wins everywhere, each fit called converged
(BENCHMARKS.md, "The IAF in the program's sampling order, trained from both starts"): from Pyro's start alone it
read 0.124 nats on a pooled regression whose family optimum is about 0, and 0.135 on varying intercepts where the
other start reached 0.059; from the seed's mean-field fit alone, 0.33 on the random-effects example where Pyro's
start reached 0.17. So a run of such a family (:attr:`~elbogap.global_latents.autoguides.Autoguide.
second_start`) trains from Pyro's start as any run does, and then once more (:func:`second_start`):

- a fresh guide of the family, its network's last layer set to the mean-field fit :math:`q_\text{MF}`
  (:func:`start_at_mean_field`: weights 0, biases the fit's loc and log scale, so
  :math:`y = \text{loc} + \text{scale} \cdot x`), trained by the run's own settings until converged, its plateau
  rule keeping that start as its first level;
- both fits' ELBO of D from the evaluation's precise draws, on the stream ``start_choice`` (not the evaluation's, so
  the reported ELBO is not the maximum of two noisy numbers);
- the fit with the higher ELBO is the run's: its parameters are copied into the run's guide before the run's last
  checkpoint, and its convergence verdict is the run's.

Each seed's second fit is kept in ``OUT/shared/`` (:func:`second_fits`): where a study's seeds trained at once,
their second fits train at once right after (:func:`second_fits_at_once`), and each run reads its own. The run's
record keeps both fits as ``second_start`` (with ``failed``, where the second fit met non-finite parameters:
the run's own fit then stands). ``--warm-start off`` trains from Pyro's start alone.
"""

import time
from pathlib import Path

import pyro
import torch
from pyro.util import get_rng_state, set_rng_state

from elbogap import streams
from elbogap.global_latents.autoguides import autoguide
from elbogap.global_latents.evaluation import precise_draws, summarize_draws
from elbogap.global_latents.guides import global_guide
from elbogap.global_latents.shared import seeds_cache, shared_path
from elbogap.global_latents.stacked import stacker
from elbogap.global_latents.training import converging_trainer
from elbogap.global_latents.warm_start import mean_field_fits, mean_field_settings
from elbogap.inference.stacking import NotStackable

#: the two starts, in the order their fits train
STARTS = ("Pyro's start", "mean-field fit")


def trains_twice(config, model, guide) -> bool:
    """Whether the run of ``guide`` trains from a second start (see the module)."""
    family = autoguide(getattr(guide, "name", ""))
    return (family is not None and family.second_start and not model.param_names
            and config.warm_start != "off")


def start_at_mean_field(guide, fit: dict) -> bool:
    r"""Set the IAF ``guide`` to the mean-field fit ``fit`` (its flat ``loc`` and ``scale``): the last layer of its
    network outputs :math:`(\mu, s)` as ``[mu_1..mu_D, s_1..s_D]``; with its weights 0 and its biases
    ``(loc, log scale)``, :math:`y = \text{loc} + \text{scale} \cdot x`. False where the guide's flat vector is not
    the fit's (a prototype on a subsampled plate): it then starts where Pyro starts it."""
    loc, scale = fit["loc"], fit["scale"]
    (part,) = guide.auto.transform.parts
    last = part.arn.layers[-1]
    if last.bias.shape[-1] != 2 * len(loc) or part.arn.skip_layer is not None:
        return False
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.cat([loc, scale.log()]))
    return True


def second_fit_settings(config, num_data: int, family: str) -> dict:
    """What a seed's second fit depends on, beside the model, the data and the seed: its family and every setting its
    trainer (and the mean-field fit it starts from) reads."""
    return {**mean_field_settings(config, num_data), "family": family, "from": STARTS[1]}


def second_fits(model, data, config, family: str, seeds, run_dirs, progress, after_step=None,
                should_stop=lambda: None) -> dict[int, dict]:
    """Per seed, ``family`` trained from the seed's mean-field fit until converged: ``{"state": the guide's state,
    "convergence": its verdict, "steps", "fits_at_once", "failed"}``; a seed whose guide cannot start there (a
    prototype on a subsampled plate) is left out.

    Kept in ``OUT/shared/`` (:mod:`~elbogap.global_latents.shared`), so that a study whose seeds trained at once
    trains their second fits at once too (:func:`second_fits_at_once`) and each run reads its own. The seeds not
    there yet are trained at once where they stack, else one at a time (``after_step(trainer)`` after each lone step:
    where a run hears stop requests); fits stopped by ``should_stop()`` are neither kept nor returned. The caller's
    random state and param store are left as they were."""
    settings = second_fit_settings(config, len(data.train), family)
    paths = {seed: shared_path(Path(run_dir), "second_start", model, data.train, settings, seed)
             for seed, run_dir in zip(seeds, run_dirs, strict=True)}
    dirs = dict(zip(seeds, run_dirs, strict=True))

    def train(missing: list[int]) -> dict[int, dict]:
        starts = mean_field_fits(model, data, config, missing, [dirs[seed] for seed in missing], progress,
                                 should_stop)
        if should_stop():
            return {}
        with progress.phase("training from the mean-field fit"):
            trained = train_second(model, data, config, family, missing, starts, after_step, should_stop)
        return {} if should_stop() else trained

    rng = get_rng_state()
    try:
        with pyro.get_param_store().scope():
            return seeds_cache(paths, train)
    finally:
        set_rng_state(rng)


def train_second(model, data, config, family: str, seeds: list[int], starts: dict, after_step,
                 should_stop) -> dict[int, dict]:
    """The second fits of ``seeds`` (see :func:`second_fits`), each guide built and started from the stream
    ``second_start`` of its seed: as one stacked program where they stack, else one at a time."""
    cap = config.total_steps(len(data.train))
    runs, states, ready = [], [], []
    for seed in seeds:
        streams.seeded("second_start", seed)
        guide = global_guide(family, model, data.train)
        if start_at_mean_field(guide, starts[seed]):
            runs.append((model, guide, converging_trainer(config, model, guide, data, seed, keep_start=True)))
            states.append(get_rng_state())
            ready.append(seed)
    failed = {seed: "" for seed in ready}
    try:
        if len(ready) < 2:
            raise NotStackable("one seed")
        stack = stacker(config, data, family, runs, ready)
    except NotStackable:
        for seed, (_, _, trainer), state in zip(ready, runs, states, strict=True):
            set_rng_state(state)  # each seed trains on its own stream, whichever seeds are asked for with it
            try:
                trainer.run(cap, after_step)
            except ValueError as error:  # a distribution refusing non-finite parameters: the run's own fit stands
                failed[seed] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        verdicts = [trainer.convergence(cap) for _, _, trainer in runs]
        steps = [trainer.step_count for _, _, trainer in runs]
        at_once = 1
    else:
        stack.run(should_stop)
        stack.write_back()
        for g, seed in enumerate(ready):
            if not stack.params_finite(g):
                failed[seed] = "its parameters became non-finite"
        verdicts = [stack.verdict(g) for g in range(len(ready))]
        steps = [stack.steps[g] for g in range(len(ready))]
        at_once = len(ready)
    return {seed: {"state": {name: value.detach().clone() for name, value in guide.state_dict().items()},
                   "convergence": verdict, "steps": count, "fits_at_once": at_once, "failed": failed[seed]}
            for seed, (_, guide, _), verdict, count in zip(ready, runs, verdicts, steps, strict=True)}


def second_fits_at_once(config, data, runs: list[tuple], seeds: list[int], run_dirs: list, progress,
                        should_stop=lambda: None) -> None:
    """Train at once the second fits of the runs ``runs`` (each run's model and guide, one family, the seeds
    ``seeds`` trained at once), for each run's :func:`second_start` to read from ``OUT/shared/``; nothing where the
    family trains once."""
    model, guide = runs[0]
    if trains_twice(config, model, guide):
        second_fits(model, data, config, f"auto:{guide.name}", seeds, run_dirs, progress, should_stop=should_stop)


def second_start(config, data, model, guide, trainer, seed: int, run_dir, progress, after_step=None) -> dict | None:
    """Keep in ``guide`` the better of the run's own fit (``trainer``, finished) and the seed's second fit
    (:func:`second_fits`: read from ``OUT/shared/``, or trained now); the record, or None where the family trains once.
    ``after_step(trainer)`` follows each step of a second fit trained now (where the run hears stop requests). The
    caller's random state is left as it was."""
    if not trains_twice(config, model, guide):
        return None
    begun = time.perf_counter()
    family = f"auto:{guide.name}"
    fit = second_fits(model, data, config, family, [seed], [run_dir], progress, after_step).get(seed)
    if fit is None:
        return None
    rng = get_rng_state()
    try:
        with pyro.get_param_store().scope():
            other = global_guide(family, model, data.train)
            with torch.no_grad():
                other.load_state_dict(fit["state"])
            scores = [start_choice(model, fitted, data, config, seed) for fitted in (guide, other)]
        better = int(scores[1]["elbo"] > scores[0]["elbo"] and not fit["failed"])
        if better:
            with torch.no_grad():
                guide.load_state_dict(fit["state"])
    finally:
        set_rng_state(rng)
    verdicts = [trainer.convergence(config.total_steps(len(data.train))), fit["convergence"]]
    return {"starts": list(STARTS), "kept": STARTS[better], "elbo": [score["elbo"] for score in scores],
            "elbo_stderr": [score["elbo_stderr"] for score in scores], "steps": [trainer.step_count, fit["steps"]],
            "converged": [verdict["converged"] for verdict in verdicts], "convergence": verdicts[better],
            "fits_at_once": fit["fits_at_once"], "seconds": time.perf_counter() - begun,
            **({"failed": fit["failed"]} if fit["failed"] else {})}


def start_choice(model, guide, data, config, seed: int) -> dict:
    """The ELBO of D of a fitted ``guide`` and its s.e., from precise draws on the stream ``start_choice``."""
    streams.seeded("start_choice", seed)
    return summarize_draws(precise_draws(model, guide, data.train, config.iw_samples, config.evidence_stderr),
                           len(data.train))
