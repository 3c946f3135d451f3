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

The run's record keeps both as ``second_start`` (with ``failed``, where the second fit met non-finite parameters:
the run's own fit then stands). ``--warm-start off`` trains from Pyro's start alone.
"""

import time

import pyro
import torch
from pyro.util import get_rng_state, set_rng_state

from elbogap import streams
from elbogap.global_latents.autoguides import autoguide
from elbogap.global_latents.evaluation import precise_draws, summarize_draws
from elbogap.global_latents.guides import global_guide
from elbogap.global_latents.training import converging_trainer
from elbogap.global_latents.warm_start import mean_field_fit

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


def second_start(config, data, model, guide, trainer, seed: int, run_dir, progress, after_step=None) -> dict | None:
    """Train ``guide``'s family from the seed's mean-field fit beside the run's own fit (``trainer``, finished), and
    keep the better in ``guide`` (see the module); the record, or None where the family trains once.
    ``after_step(trainer)`` follows each step of the second fit (where the run hears stop requests). The caller's
    random state is left as it was."""
    if not trains_twice(config, model, guide):
        return None
    begun = time.perf_counter()
    fit = mean_field_fit(model, data, config, seed, run_dir, progress)
    cap = config.total_steps(len(data.train))
    rng = get_rng_state()
    try:
        with pyro.get_param_store().scope():
            streams.seeded("second_start", seed)
            other = global_guide(f"auto:{guide.name}", model, data.train)
            if not start_at_mean_field(other, fit):
                return None
            other_trainer = converging_trainer(config, model, other, data, seed, keep_start=True)
            try:
                with progress.phase("training from the mean-field fit"):
                    other_trainer.run(cap, after_step, progress,
                                      desc="training from the mean-field fit (until converged)")
            except ValueError as error:  # a distribution refusing non-finite parameters: the run's own fit stands
                failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            else:
                failed = ""
            scores = [start_choice(model, fitted, data, config, seed) for fitted in (guide, other)]
            better = int(scores[1]["elbo"] > scores[0]["elbo"] and not failed)
            state = {name: value.detach().clone() for name, value in other.state_dict().items()}
        if better:
            with torch.no_grad():
                guide.load_state_dict(state)
    finally:
        set_rng_state(rng)
    fits = (trainer, other_trainer)
    verdicts = [fitted.convergence(cap) for fitted in fits]
    return {"starts": list(STARTS), "kept": STARTS[better], "elbo": [score["elbo"] for score in scores],
            "elbo_stderr": [score["elbo_stderr"] for score in scores], "steps": [fitted.step_count for fitted in fits],
            "converged": [verdict["converged"] for verdict in verdicts], "convergence": verdicts[better],
            "seconds": time.perf_counter() - begun, **({"failed": failed} if failed else {})}


def start_choice(model, guide, data, config, seed: int) -> dict:
    """The ELBO of D of a fitted ``guide`` and its s.e., from precise draws on the stream ``start_choice``."""
    streams.seeded("start_choice", seed)
    return summarize_draws(precise_draws(model, guide, data.train, config.iw_samples, config.evidence_stderr),
                           len(data.train))
