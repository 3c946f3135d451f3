"""The seeds of a study trained at once: each guide's runs on a model with global latents, stacked before they run.

Where ``elbogap compare`` has two or more runs of one autoguide to train (its seeds), the driver builds each run's
model and guide exactly as the run would (the stream ``training`` of its seed), trains them as one program
(:class:`~elbogap.global_latents.stacked.StackedFits`) and writes each run's checkpoint, marked as trained at once;
each run then resumes from it on the study's backend, finds its training finished (or, after SIGINT or SIGTERM,
goes on alone from its step) and is evaluated as any run. Guides that cannot stack (a guide program, a model with
parameters of its own, a program ``vmap`` cannot run, ``--stacked-fits off``) train in their runs, one at a time,
said in one line; so do the seeds of a guide whose stack a user's program broke (its runs then meet the error and
report it as any run does).
"""

import sys
import time
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from elbogap import streams
from elbogap.factory import build, for_data, guide_label, make_trainer
from elbogap.failures import program_failure
from elbogap.global_latents.protocol import batch_size
from elbogap.global_latents.stacked import NotStackable, StackedFits, refusal
from elbogap.inference.convergence import ConvergenceSettings
from elbogap.runs import CHECKPOINT, save_run_checkpoint


def stack_seeds(config, data, tasks, progress: bool = False, should_stop=lambda: None) -> dict[str, int | str]:
    """Train each guide's runs among ``tasks`` (:class:`~elbogap.backends.RunTask`, with no checkpoint yet) at once
    and write their checkpoints; per guide label, how many were stacked or why they were not."""
    outcome = {}
    for guide_name in dict.fromkeys(task.guide for task in tasks):
        pending = [task for task in tasks if task.guide == guide_name and task.reference is None
                   and not (Path(task.run_dir) / CHECKPOINT).exists()]
        if len(pending) < 2:
            continue
        label = guide_label(guide_name)
        try:
            outcome[label] = train_at_once(config, data, guide_name, pending, progress, should_stop)
        except Exception as error:  # NotStackable, or a user's program that raised: the runs train (and report) alone
            failure = None if isinstance(error, NotStackable) else program_failure(error, [config.model, guide_name])
            if not isinstance(error, NotStackable) and failure is None:
                raise  # elbogap's own error
            why = error if failure is None else f"{failure}, while trained at once"
            outcome[label] = f"one at a time: {why}"
            if progress:
                print(f"{label}: each seed trains in its run ({why})", file=sys.stderr)
        if should_stop():
            break
    return outcome


def train_at_once(config, data, guide_name: str, tasks, progress: bool, should_stop) -> int:
    """The runs ``tasks`` of ``guide_name`` trained as one program, their checkpoints written; how many (a fit whose
    parameters ended non-finite gets none: its run trains alone, and ``--on-nan`` says what becomes of it)."""
    resolved = for_data(config, data, guide_name)
    seeds = [task.seed for task in tasks]
    runs = []
    for seed in seeds:  # as runs.run_one builds a run
        pyro.clear_param_store()
        streams.seeded("training", seed)
        runs.append(build(resolved, data, guide_name))
    model, guide = runs[0]
    if why := refusal(resolved, model, guide_name):
        raise NotStackable(why)
    num_data = len(data.train)
    if batch_size(resolved, model, guide) < num_data:
        raise NotStackable("the program subsamples its rows (stacked fits take every row at each step)")
    cap = resolved.total_steps(num_data)
    converge = resolved.schedule == "converge"
    stack = StackedFits(model, [guide for _, guide in runs], data.train, seeds, resolved.lr, resolved.particles, cap,
                        ConvergenceSettings(tolerance=resolved.convergence_tol), converge,
                        1.0 if converge else resolved.lr_decay ** (1 / max(cap, 1)))
    started = time.perf_counter()
    with tqdm(desc=f"{guide_label(guide_name)}: {len(seeds)} seeds at once", disable=not progress,
              leave=False) as bar:
        stack.run(should_stop, bar)
    seconds = (time.perf_counter() - started) / len(seeds)
    stack.write_back()
    written = 0
    for g, ((run_model, run_guide), task) in enumerate(zip(runs, tasks, strict=True)):
        if not stack.views[g].params_finite():  # it gave up on NaN: its run trains alone and reports the fault
            continue
        written += 1
        trainer = make_trainer(resolved, run_model, run_guide, data, task.seed)
        trainer.step_count, trainer.losses, trainer.seconds = stack.steps[g], list(stack.losses[g]), seconds
        if trainer.schedule is not None:
            trainer.schedule.load_state_dict(stack.schedules[g].state_dict())
        Path(task.run_dir).mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            save_run_checkpoint(Path(task.run_dir), resolved, guide_name, task.seed, trainer, False,
                                stacked=len(seeds))
    return written
