"""The seeds of a study trained at once: each guide's runs stacked into one program before they run.

Where ``elbogap compare`` has enough runs of one guide to train (its seeds: the kind's ``stack_from``) and the kind
of model can stack them
(:attr:`~elbogap.protocols.Protocol.stacker`: Pyro's autoguides on a model with global latents,
:class:`~elbogap.global_latents.stacked.StackedFits`; elbogap's own models with their amortized families,
:class:`~elbogap.inference.stacked_training.StackedTraining`), the driver builds each run's model, guide and trainer
exactly as the run would (the stream ``training`` of its seed), trains them as one program, takes each run's curve
evaluations at the steps the run would (on its own model and guide, written back from the stack) and its gradient
signal-to-noise there too (for every fit due at once where the stack can:
:meth:`~elbogap.inference.stacking.Stack.gradient_snr`), lets the stack do what its kind does at once for the
trained runs (:meth:`Stack.after_training`: for elbogap's models, every seed's q* refit at once) and writes each
run's checkpoint, marked as trained at once. Each run then resumes from it on the study's backend, finds its
training finished (or, after SIGINT or SIGTERM, goes on alone from its step) and is evaluated as any run. Guides
that cannot stack (a guide program, a family with free per-point parameters, settings the stack does not train, a
program ``vmap`` cannot run, ``--stacked-fits off``) train in their runs, one at a time, said in one line; so do
the seeds of a guide whose stack a user's program broke (its runs then meet the error and report it as any run
does).
"""

import math
import time
from dataclasses import replace
from pathlib import Path

import pyro
import torch
from pyro.util import get_rng_state, set_rng_state

from elbogap import streams
from elbogap.factory import build, for_data, guide_label, make_trainer, warm_start
from elbogap.failures import program_failure
from elbogap.inference.stacking import NotStackable
from elbogap.phases import Phases
from elbogap.progress import Progress, as_progress
from elbogap.protocols import PROTOCOLS
from elbogap.runs import CHECKPOINT, measure_snr, save_run_checkpoint, snr_fields
from elbogap.stopping import StopAsked
from elbogap.threads import intra_op_threads


def pending_stacks(config, data, tasks, workers: int = 1) -> list:
    """The stack tasks for ``tasks`` (runs without a checkpoint yet): per guide with at least the kind's
    :attr:`~elbogap.protocols.Protocol.stack_from` such seeds, its seeds in chunks of at least that many, as many
    chunks as keep ``workers`` busy beside the other guides' stacks."""
    protocol = PROTOCOLS[data.kind]
    if protocol.stacker is None:
        return []
    pending = {}
    for task in tasks:
        if task.reference is None and not task.stack and not (Path(task.run_dir) / CHECKPOINT).exists():
            pending.setdefault(task.guide, []).append(task)
    pending = {guide: runs for guide, runs in pending.items() if len(runs) >= protocol.stack_from}
    chunks = max(1, -(-workers // max(len(pending), 1)))  # per guide, so that every worker has a stack
    stacks = []
    for runs in pending.values():
        count = min(chunks, len(runs) // protocol.stack_from)
        for k in range(count):
            part = runs[k::count]
            stacks.append(replace(part[0], stack=tuple((run.seed, run.run_dir) for run in part)))
    return stacks


def stacked_runs(stack) -> list:
    """The run tasks a stack task trains."""
    return [replace(stack, seed=seed, run_dir=run_dir, stack=()) for seed, run_dir in stack.stack]


def stack_outcome(config, data, guide_name: str, tasks, progress=False, should_stop=lambda: None) -> int | str:
    """Train the runs ``tasks`` of ``guide_name`` at once and write their checkpoints (:func:`train_at_once`): how
    many, or ``"one at a time: why"`` where they cannot stack or a user's program broke the stack (its runs then
    train alone and meet the error themselves)."""
    try:
        return train_at_once(config, data, guide_name, tasks, progress, should_stop)
    except Exception as error:  # NotStackable, or a user's program that raised: the runs train (and report) alone
        failure = None if isinstance(error, NotStackable) else program_failure(error, [config.model, guide_name])
        if not isinstance(error, NotStackable) and failure is None:
            raise  # elbogap's own error
        return f"one at a time: {error if failure is None else f'{failure}, while trained at once'}"


def merge_outcomes(outcomes: dict, guide_name: str, outcome: int | str) -> None:
    """Add a stack's outcome to the study's ``fits_at_once``: per guide label, the most seeds one of its stacks
    trained at once (as calibrate's), or why its seeds trained one at a time where none of its stacks did."""
    label = guide_label(guide_name)
    if isinstance(outcome, int):
        outcomes[label] = max(outcome, outcomes[label] if isinstance(outcomes.get(label), int) else 0)
    else:
        outcomes.setdefault(label, outcome)


def stack_seeds(config, data, tasks, progress: bool = False, should_stop=lambda: None) -> dict[str, int | str]:
    """Train each guide's runs among ``tasks`` at once here, one stack after another, and write their checkpoints;
    per guide label, how many were stacked or why they were not (``compare`` runs the stacks on its backend)."""
    outcomes: dict[str, int | str] = {}
    for stack in pending_stacks(config, data, tasks):
        outcome = stack_outcome(config, data, stack.guide, stacked_runs(stack), progress, should_stop)
        merge_outcomes(outcomes, stack.guide, outcome)
        if should_stop():
            break
    return outcomes


def train_at_once(config, data, guide_name: str, tasks, progress: bool, should_stop) -> int:
    """The runs ``tasks`` of ``guide_name`` trained as one program, their checkpoints written; how many (a fit that
    went non-finite gets none: its run trains alone, and ``--on-nan`` says what becomes of it).

    Each run's curve evaluations, gradient SNR and ``--checkpoint-every`` checkpoints come at the steps its lone run
    has them; from each hand-over on (those and the last checkpoint), torch's generator is the run's own (the stream
    ``stacked_run`` of its seed and step), so a run that goes on alone after a stop draws its own numbers."""
    resolved = for_data(config, data, guide_name)
    seeds = [task.seed for task in tasks]
    built, states = [], []
    for seed in seeds:  # as runs.run_one builds a run
        pyro.clear_param_store()
        streams.seeded("training", seed)
        built.append(build(resolved, data, guide_name))
        states.append(get_rng_state())
    begun = time.perf_counter()
    with intra_op_threads(PROTOCOLS[data.kind].threads):  # the seeds' starts at once, as their runs would train
        try:
            starts = warm_start(resolved, data, built, seeds, [task.run_dir for task in tasks], progress, should_stop)
        except StopAsked:  # asked while the starts trained: no run has begun, nothing to keep
            return 0
    warm_seconds = (time.perf_counter() - begun) / len(tasks)  # each run's share
    runs = []
    for seed, (model, guide), state, started in zip(seeds, built, states, starts, strict=True):
        set_rng_state(state)  # where its lone run makes its trainer
        runs.append((model, guide, make_trainer(resolved, model, guide, data, seed, keep_start=started is not None)))
    stack = PROTOCOLS[data.kind].stacker(resolved, data, guide_name, runs, seeds)
    cap = resolved.total_steps(len(data.train))
    eval_every = resolved.eval_every or max(1, cap // 10)
    phases = [Phases({"train": 0.0, **({"mean_field_fit": warm_seconds} if started else {})}) for started in starts]
    curve_evals: list[list[dict]] = [[] for _ in tasks]
    store = pyro.get_param_store()

    def usable(g: int) -> bool:  # a fit that went non-finite is left to its run, which meets the fault alone
        return stack.params_finite(g) and all(map(math.isfinite, stack.losses[g][-1:]))

    def hand_over(g: int) -> None:  # the run's own model, guide and trainer as they stand in the stack now
        stack.write_back(g)
        stack.load_into(g, runs[g][2])
        torch.manual_seed(streams.seed_for("stacked_run", seeds[g], stack.steps[g]))  # each run's own draws from here

    def save(g: int, seconds: float) -> None:
        trainer = runs[g][2]
        trainer.seconds = phases[g].seconds["train"] = seconds
        Path(tasks[g].run_dir).mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), store.scope(), torch.random.fork_rng():
            hand_over(g)  # the checkpoint keeps this run's generator state, for a run that goes on alone
            save_run_checkpoint(Path(tasks[g].run_dir), resolved, guide_name, seeds[g], trainer, False,
                                curve_evals[g], phases[g].seconds, stacked=len(seeds), started=starts[g])

    def training_seconds() -> float:
        evaluations = sum(p.seconds.get("curve_evaluations", 0.0) + p.seconds.get("gradient_snr", 0.0)
                          for p in phases)
        return (time.perf_counter() - started - evaluations) / len(seeds)

    def evaluates(g: int) -> bool:
        return not stack.steps[g] % eval_every or stack.steps[g] == cap

    def snr_at_once(fits: list[int]) -> dict[int, dict]:  # the fits' gradient SNR, where the stack measures it at once
        if not fits or not resolved.snr_draws:
            return {}
        begun = time.perf_counter()
        with torch.random.fork_rng():
            measured = stack.gradient_snr(fits, resolved.snr_draws)
        if measured is None:
            return {}
        share = (time.perf_counter() - begun) / len(fits)
        for g in fits:
            phases[g].add("gradient_snr", share)
        return {g: snr_fields(measured[g], resolved.snr_draws, runs[g][2].batch_size) for g in fits}

    def on_step(fits: list[int]) -> None:  # each run's curve evaluations and checkpoints where its lone run has them
        snr = snr_at_once([g for g in fits if evaluates(g) and usable(g)])
        for g in fits:
            step = stack.steps[g]
            evaluate = evaluates(g)
            save_now = resolved.checkpoint_every and not step % resolved.checkpoint_every
            model, guide, trainer = runs[g]
            check = trainer.checks_window_at(step, cap)
            if not (evaluate or save_now or check) or not usable(g):
                continue
            if check or evaluate:
                with store.scope(), torch.random.fork_rng():  # each run registers its own modules, as alone
                    hand_over(g)
                    with phases[g]("curve_evaluations"):
                        trainer.check_window(cap)  # the trend rule's scorings at its window's ends, where they fall
                        if evaluate:
                            point = {"step": step, **PROTOCOLS[data.kind].curve_point(model, guide, data, resolved)}
                    if evaluate:
                        alone = g not in snr
                        measured = measure_snr(trainer, resolved.snr_draws, phases[g], Progress()) if alone else snr[g]
                        curve_evals[g].append({**point, **measured})
            if save_now:
                save(g, training_seconds())

    started = time.perf_counter()
    threads = PROTOCOLS[data.kind].threads
    with as_progress(progress).bar(f"{guide_label(guide_name)}: {len(seeds)} seeds at once", cap) as bar, \
            intra_op_threads(threads):
        stack.run(should_stop, bar, on_step)
        seconds = training_seconds()
        if not should_stop():  # what the kind does at once for the trained runs before they are evaluated (q*)
            with store.scope(), torch.random.fork_rng():
                for g, extra in stack.after_training(resolved, data, [task.run_dir for task in tasks]).items():
                    for name, value in extra.items():
                        phases[g].add(name, value)
        if not should_stop() and (second_fits := PROTOCOLS[data.kind].second_fits) is not None:
            begun = time.perf_counter()  # the runs' second fits at once, for each run to read (its second start)
            with store.scope(), torch.random.fork_rng():
                second_fits(resolved, data, [(model, guide) for model, guide, _ in runs], seeds,
                            [task.run_dir for task in tasks], as_progress(progress), should_stop)
            for phase in phases:
                phase.add("second_fits", (time.perf_counter() - begun) / len(tasks))
    written = 0
    for g in range(len(tasks)):
        if usable(g):
            save(g, seconds)
            written += 1
    return written
