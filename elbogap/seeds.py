"""The seeds of a study trained at once: each guide's runs stacked into one program before they run.

Where ``elbogap compare`` has two or more runs of one guide to train (its seeds) and the kind of model can stack them
(:attr:`~elbogap.protocols.Protocol.stacker`: Pyro's autoguides on a model with global latents,
:class:`~elbogap.global_latents.stacked.StackedFits`; elbogap's own models with their amortized families,
:class:`~elbogap.inference.stacked_training.StackedTraining`), the driver builds each run's model, guide and trainer
exactly as the run would (the stream ``training`` of its seed), trains them as one program, takes each run's curve
evaluations and gradient signal-to-noise at the steps the run would (on its own model and guide, written back from
the stack) and writes each run's checkpoint, marked as trained at once. Each run then resumes from it on the study's
backend, finds its training finished (or, after SIGINT or SIGTERM, goes on alone from its step) and is evaluated as
any run. Guides that cannot stack (a guide program, a family with free per-point parameters, settings the stack does
not train, a program ``vmap`` cannot run, ``--stacked-fits off``) train in their runs, one at a time, said in one
line; so do the seeds of a guide whose stack a user's program broke (its runs then meet the error and report it as
any run does).
"""

import time
from dataclasses import replace
from pathlib import Path

import pyro
import torch

from elbogap import streams
from elbogap.factory import build, for_data, guide_label, make_trainer
from elbogap.failures import program_failure
from elbogap.inference.stacking import NotStackable
from elbogap.phases import Phases
from elbogap.progress import Progress, as_progress
from elbogap.protocols import PROTOCOLS
from elbogap.runs import CHECKPOINT, measure_snr, save_run_checkpoint
from elbogap.threads import intra_op_threads


def pending_stacks(config, data, tasks, slots: int = 1) -> list:
    """The stack tasks for ``tasks`` (runs without a checkpoint yet): per guide with at least the kind's
    :attr:`~elbogap.protocols.Protocol.stack_from` such seeds, its seeds in chunks of at least that many, as many
    chunks as keep ``slots`` workers busy beside the other guides' stacks."""
    protocol = PROTOCOLS[data.kind]
    if protocol.stacker is None:
        return []
    pending = {}
    for task in tasks:
        if task.reference is None and not task.stack and not (Path(task.run_dir) / CHECKPOINT).exists():
            pending.setdefault(task.guide, []).append(task)
    pending = {guide: runs for guide, runs in pending.items() if len(runs) >= protocol.stack_from}
    chunks = max(1, -(-slots // max(len(pending), 1)))  # per guide, so that every slot has a stack
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
    """Add a stack's outcome to the study's ``fits_at_once`` (per guide label: seeds stacked, or why not)."""
    label = guide_label(guide_name)
    if isinstance(outcome, str) or isinstance(outcomes.get(label), str):
        outcomes[label] = outcome if isinstance(outcome, str) else outcomes[label]
    else:
        outcomes[label] = outcomes.get(label, 0) + outcome


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
    """The runs ``tasks`` of ``guide_name`` trained as one program, their checkpoints written; how many (a fit whose
    parameters ended non-finite gets none: its run trains alone, and ``--on-nan`` says what becomes of it)."""
    resolved = for_data(config, data, guide_name)
    seeds = [task.seed for task in tasks]
    runs = []
    for seed in seeds:  # as runs.run_one builds a run
        pyro.clear_param_store()
        streams.seeded("training", seed)
        model, guide = build(resolved, data, guide_name)
        runs.append((model, guide, make_trainer(resolved, model, guide, data, seed)))
    stack = PROTOCOLS[data.kind].stacker(resolved, data, guide_name, runs, seeds)
    cap = resolved.total_steps(len(data.train))
    eval_every = resolved.eval_every or max(1, cap // 10)
    phases = [Phases({"train": 0.0}) for _ in tasks]
    curve_evals: list[list[dict]] = [[] for _ in tasks]
    store = pyro.get_param_store()

    def on_step(fits: list[int]) -> None:  # each run's curve evaluation where its lone run takes it
        for g in fits:
            step = stack.steps[g]
            if step % eval_every and step != cap:
                continue
            model, guide, trainer = runs[g]
            stack.write_back(g)
            stack.load_into(g, trainer)
            with store.scope(), torch.random.fork_rng():  # each run registers its own modules, as alone
                with phases[g]("curve_evaluations"):
                    point = {"step": step, **PROTOCOLS[data.kind].curve_point(model, guide, data, resolved)}
                curve_evals[g].append({**point, **measure_snr(trainer, resolved.snr_draws, phases[g], Progress())})

    started = time.perf_counter()
    threads = PROTOCOLS[data.kind].threads
    with as_progress(progress).bar(f"{len(seeds)} seeds at once", cap) as bar, intra_op_threads(threads):
        stack.run(should_stop, bar, on_step)
    evaluations = sum(p.seconds.get("curve_evaluations", 0.0) + p.seconds.get("gradient_snr", 0.0) for p in phases)
    seconds = (time.perf_counter() - started - evaluations) / len(seeds)
    stack.write_back()
    written = 0
    for g, ((_, _, trainer), task) in enumerate(zip(runs, tasks, strict=True)):
        if not stack.params_finite(g):  # it gave up on NaN: its run trains alone and reports the fault
            continue
        written += 1
        stack.load_into(g, trainer)
        trainer.seconds = phases[g].seconds["train"] = seconds
        Path(task.run_dir).mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), store.scope():
            save_run_checkpoint(Path(task.run_dir), resolved, guide_name, task.seed, trainer, False, curve_evals[g],
                                phases[g].seconds, stacked=len(seeds))
    return written
