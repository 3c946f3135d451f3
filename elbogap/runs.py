"""One run: train a model with one guide and seed into a run directory, evaluate it, reload it.

A run directory holds ``checkpoint.pt`` (model, guide, optimizer and RNG state, the resolved
configuration), ``run.json`` (metrics, curves, configuration, versions) and ``train.log``.
"""

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pyro
import torch

from elbogap.backends.task import where_am_i
from elbogap.checkpoint import load_checkpoint, save_checkpoint
from elbogap.config import Config, differences, evaluation_changes
from elbogap.data import Dataset, load_data
from elbogap.device import resolve_device, rng_devices
from elbogap.errors import UsageError
from elbogap.guides import build_guide
from elbogap.inference import Trainer, evaluate, refit_guide
from elbogap.inference.gaps import KnownLogPx, gap_decomposition
from elbogap.model import build_model
from elbogap.phases import Phases
from elbogap.versions import versions

CHECKPOINT, RUN_JSON, LOG = "checkpoint.pt", "run.json", "train.log"


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint of the last completed step."""

    def __init__(self, signum: int, step: int | None, run_dir: Path):
        self.signum, self.step, self.run_dir = signum, step, run_dir
        after = "" if step is None else f" after step {step}"
        super().__init__(f"interrupted by {signal.Signals(signum).name}{after}; the checkpoint in {run_dir} holds "
                         "it: rerun the same command with --resume to continue")


class NumericalFault(Exception):
    """The loss or a parameter became NaN or infinite; the last good checkpoint is left as it was."""


def guide_label(guide_name: str) -> str:
    """How a guide entry is named in results: itself, or ``stem.name`` for a program ``dir/stem.py:name``."""
    from elbogap.user_model import display_name, is_user_model

    return display_name(guide_name) if is_user_model(guide_name) else guide_name.replace(":", "-")


def skipped_run(guide_name: str, seed: int, fault: str) -> dict:
    """The record of a run stopped by a NaN fault under ``--on-nan skip``, said on stderr."""
    print(f"elbogap: skipped {fault}", file=sys.stderr)
    return {"guide": guide_label(guide_name), "guide_spec": guide_name, "seed": seed, "failed": fault}


@contextlib.contextmanager
def stop_requests():
    """Turn SIGINT and SIGTERM into a request the training loop honours after the current step."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: requested.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parameters_finite(params) -> bool:
    """Whether every tensor the run's optimizer updates is finite."""
    return all(bool(torch.isfinite(value).all()) for value in params)


def load_dataset(config: Config) -> Dataset:
    """The data set a configuration names, subset and binarized as it says, on its device."""
    data = load_data(config.data, config.test_fraction, config.data_seed, config.data_dir, config.binarize,
                     config.train_size, config.test_size)
    return data.to(resolve_device(config.device))


def resolve_likelihood(config: Config, data: Dataset) -> str:
    """The configured likelihood, or Bernoulli for binary data and Gaussian otherwise."""
    binary = data.is_binary
    if config.likelihood is None:
        return "bernoulli" if binary and config.model == "vae" else "gaussian"
    if config.likelihood == "bernoulli" and not binary:
        raise UsageError(
            f"{data.name} is not binary but the likelihood is Bernoulli; "
            "use --binarize threshold|static|dynamic or --likelihood gaussian"
        )
    return config.likelihood


def build(config: Config, data: Dataset, guide_name: str):
    """A fresh model and guide for ``data`` as the configuration describes them.

    ``config.model`` and ``guide_name`` are built-in names or user programs (``file.py:name``);
    a class named as both model and guide is built once, so the pair shares one instance.
    """
    from elbogap.user_model import is_user_model, load_user_model

    instances, modules, example = {}, {}, data.train[:3]
    if is_user_model(config.model):
        model = load_user_model(config.model, example, config.latent_dim, instances, modules)
    else:
        model = build_model(config.model, data.data_dim, config.latent_dim, config.hidden_dims,
                            config.activation, resolve_likelihood(config, data))
    model = model.to(resolve_device(config.device))
    return model, guide_for(config, model, len(data.train), guide_name, example, instances, modules)


def guide_for(config: Config, model, num_data: int, guide_name: str, example: torch.Tensor | None = None,
              instances: dict | None = None, modules: dict | None = None):
    """A fresh guide of ``guide_name`` for ``model``, with the configuration's network settings, on its device.

    ``guide_name`` is a built-in family or a user's guide program (``file.py:name``; ``example``
    is a small batch to check it on).
    """
    from elbogap.guides import ProgramGuide
    from elbogap.guides.autoguide import AutoGuideFamily
    from elbogap.user_model import is_autoguide, is_user_model, resolve_program

    if is_autoguide(guide_name):
        guide = AutoGuideFamily(guide_name.removeprefix("auto:"), model, num_data)
    elif is_user_model(guide_name):
        program, owner = resolve_program(guide_name, "guide", model.data_dim, model.latent_dim, instances, modules)
        guide = ProgramGuide(program, model, example, guide_name, owner)
    else:
        guide = build_guide(guide_name, model, num_data, config.hidden_dims, config.activation,
                            config.flow_depth, config.mixture_size, config.rank)
    return guide.to(resolve_device(config.device))


def evaluate_splits(model, guide, data: Dataset, config: Config, seed: int, phases: Phases | None = None,
                    progress: bool = False) -> dict:
    """Metrics of the train and test splits, from the run's own reproducible evaluation seed.

    The test split is evaluated whole; the training split on a seeded subset of
    ``--train-eval-points`` points (all of it for 0, or for a per-datapoint guide), as the
    training curve already shows the fit. ``num_points`` and ``split_points`` say how many.

    ``phases`` gets the seconds of each split's evaluation (``evaluate_SPLIT``) and of its gap
    decomposition (``gaps_SPLIT``, the q* refits and their evaluation).
    """
    pyro.set_rng_seed(seed + 10_000)
    phases = phases if phases is not None else Phases()
    metrics = {}
    for split, x in data.splits().items():
        if split == "train" and guide.amortized and 0 < config.train_eval_points < len(x):
            x = x[train_eval_index(len(x), config)]
        metrics[split] = evaluate_split(model, guide, x, config, fresh_local=split != "train", phases=phases,
                                        split=split, progress=progress)
        metrics[split]["split_points"] = len(data.splits()[split])
    return metrics


def train_eval_index(num_points: int, config: Config) -> torch.Tensor:
    """The seeded subset of the training split evaluated after training (``--train-eval-points`` of them)."""
    generator = torch.Generator().manual_seed(config.data_seed + 11)
    return torch.randperm(num_points, generator=generator)[:config.train_eval_points].sort().values.to(config.device)


def subset_index(num_points: int, count: int, config: Config) -> torch.Tensor:
    """A seeded subset of ``count`` points of a split, sorted; smaller subsets are prefixes of larger ones.

    The gap points (``--gap-points``) and the AIS points (``--ais-points``) are drawn from one
    permutation, so the points where gaps are reported always have AIS where AIS runs.
    """
    generator = torch.Generator().manual_seed(config.data_seed + 7)
    return torch.randperm(num_points, generator=generator)[:count].sort().values.to(config.device)


def gap_index(num_points: int, config: Config) -> torch.Tensor:
    """The seeded subset of a split on which q* is refit (``--gap-points`` of them)."""
    return subset_index(num_points, config.gap_points, config)


def evaluate_split(model, guide, x: torch.Tensor, config: Config, fresh_local: bool, phases: Phases | None = None,
                   split: str = "split", progress: bool = False) -> dict:
    """Metrics of one split, with the gap decomposition on ``--gap-points`` of its points.

    A per-datapoint guide first fits its parameters with the model fixed. Where ``--log-px``
    gives a guide-independent log p(x) (exact, quadrature, AIS on every point, or, under
    ``auto``, AIS on the gap and ``--ais-points`` subset), the gaps are computed from it.
    """
    phases = phases if phases is not None else Phases()
    options = {"elbo_samples": config.eval_samples, "iw_samples": config.iw_samples,
               "quadrature_points": config.quadrature_points, "log_px_method": config.log_px,
               "ais": config.ais_settings()}
    with phases(f"evaluate_{split}"):
        if not guide.amortized:
            if fresh_local:
                guide = guide.fresh(len(x))
            refit_guide(model, guide, x, jit=config.jit, progress=progress, desc=f"fit {split} points")
        ais_index = subset_index(len(x), max(config.ais_points, config.gap_points), config)
        evaluation = evaluate(model, guide, x, ais_index=ais_index, progress=progress, desc=f"evaluate {split}",
                              **options)
    metrics = evaluation.metrics
    if config.gap_points:
        index = gap_index(len(x), config)
        log_px = None
        if metrics["log_px_guide_independent"]:
            per_point = evaluation.per_point
            log_px = KnownLogPx(per_point["log_px"][index], per_point["log_px_stderr"][index], metrics["log_px_method"])
        with phases(f"gaps_{split}"):
            refit_options = {"jit": config.jit, "progress": progress, "desc": f"q* {split}"}
            metrics.update(gap_decomposition(model, guide, x[index], index, refit_options=refit_options,
                                             log_px=log_px, **options))
    return metrics


def run_bdmc(model, data: Dataset, config: Config, seed: int, run_dir: str | Path) -> dict:
    """BDMC on ``config.bdmc`` pairs simulated from ``model``; writes bdmc.json and bdmc.npz, returns the summary."""
    import numpy as np

    from elbogap.inference.bdmc import sandwich

    pyro.set_rng_seed(seed + 20_000)
    summary, arrays = sandwich(model, data.train[:1], config.bdmc, config.ais_settings())
    run_dir = Path(run_dir)
    (run_dir / "bdmc.json").write_text(json.dumps(summary, indent=2))
    np.savez(run_dir / "bdmc.npz", **{key: value.detach().cpu().numpy() for key, value in arrays.items()})
    return summary


def training_curve(losses: list[float], points: int = 100) -> list[list[float]]:
    """``[step, mean ELBO over the preceding window]`` at about ``points`` places."""
    window = max(1, len(losses) // points)
    return [[end, -sum(losses[end - window:end]) / window]
            for end in range(window, len(losses) + 1, window)]


@torch.no_grad()
def evaluation_point(model, guide, data: Dataset, config: Config) -> dict:
    """Cheap metrics on fixed subsets during training: train and test ELBO, test log p(x)."""
    point = {}
    with torch.random.fork_rng(devices=rng_devices(data.train)):  # evaluation leaves training's random stream alone
        for split, x in data.splits().items():
            count = min(config.curve_points, len(x))
            if not guide.amortized and split == "test":
                continue  # a per-datapoint guide has no parameters for test points until it is refit
            metrics = evaluate(model, guide, x[:count], torch.arange(count, device=x.device), elbo_samples=16,
                               iw_samples=min(config.iw_samples, 100), quadrature_points=16).metrics
            point[f"{split}_elbo"] = metrics["elbo"]
            point[f"{split}_log_px"] = metrics["log_px"]
        if config.dynamics_points and guide.amortized:
            count = min(config.dynamics_points, len(data.test))
            with torch.enable_grad():
                gaps = gap_decomposition(model, guide, data.test[:count], elbo_samples=32, iw_samples=100,
                                         quadrature_points=16)
            point.update({f"dynamics_{key}": gaps[key] for key in ("gap_log_px", "gap_elbo", "elbo_star")})
    return point


def make_trainer(config: Config, model, guide, data: Dataset, seed: int, freeze_model: bool = False) -> Trainer:
    """The SVI trainer a configuration describes: objective, particles, learning rate and its decay, KL warm-up,
    binarization and compilation, for ``config.total_steps`` steps on the training split."""
    num_data = len(data.train)
    steps = config.total_steps(num_data)
    return Trainer(model, guide, data.train, config.batch_size, config.lr, config.objective, config.particles,
                   seed, freeze_model=freeze_model, lr_decay=config.lr_decay ** (1 / max(steps, 1)),
                   kl_warmup_steps=round(config.kl_warmup * config.steps_per_epoch(num_data)),
                   dynamic_binarize=data.dynamic, jit=config.jit)


def fit_family(model, config: Config, data: Dataset, family: str, seed: int):
    """A fresh guide of ``family`` fitted to a fixed ``model`` as the run's own training was (see :func:`make_trainer`).

    ``elbogap evaluate RUN_DIR --guide B --refit``: family B seen through the decoder trained with another guide.
    """
    pyro.set_rng_seed(seed)
    guide = guide_for(config, model, len(data.train), family, data.train[:3])
    make_trainer(config, model, guide, data, seed, freeze_model=True).run(config.total_steps(len(data.train)))
    return guide


class RunLog:
    """A plain-text log of one run, appended to as it goes."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, message: str) -> None:
        with self.path.open("a") as stream:
            stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run_one(config: Config, data: Dataset, guide_name: str, seed: int, run_dir: str | Path,
            progress: bool = False, fixed_model: str | Path | None = None, where: dict | None = None) -> dict:
    """Train the model jointly with one guide from ``seed``, save it, and evaluate both splits.

    With ``fixed_model`` (a run directory), the model is that run's trained model, held fixed:
    only the guide is fitted, so log p(x) is the same for every guide and every ELBO difference
    is a KL difference.

    Returns the run's record: guide, seed, the metrics of :func:`~elbogap.inference.evaluate`
    for ``"train"`` and ``"test"``, ``train_seconds`` (the SVI steps alone), the running ELBO
    (``curve``), the periodic evaluations (``curve_eval``) and ``where`` it ran (backend, host, pid).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / LOG)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = build(config, data, guide_name)
    if fixed_model is not None:
        with torch.no_grad():
            model.load_state_dict(load_checkpoint(Path(fixed_model) / CHECKPOINT)["trainer"]["model"])
    num_data = len(data.train)
    steps = config.total_steps(num_data)
    trainer = make_trainer(config, model, guide, data, seed, freeze_model=fixed_model is not None)
    eval_every = config.eval_every or max(1, steps // 10)
    curve_eval: list[dict] = []
    phases = Phases({"train": 0.0})  # training's phases add up over every session of the run
    if (run_dir / CHECKPOINT).exists():
        state = resumable_state(run_dir, config, guide_name, seed)
        if state["complete"] and (run_dir / RUN_JSON).is_file():
            saved = json.loads((run_dir / RUN_JSON).read_text())
            changed = evaluation_changes(saved["config"], config.to_dict())
            if not changed:
                return saved["run"]
            log.write(f"re-evaluate the trained run: evaluation settings changed ({', '.join(changed)})")
        trainer.load_state_dict(state["trainer"])
        curve_eval = json.loads(state["curve_eval"])
        phases = Phases(json.loads(state.get("phases", '{"train": 0.0}')))
        log.write(f"resume at step {trainer.step_count}")
    else:
        log.write(f"start guide={guide_name} seed={seed} steps={steps} config={json.dumps(config.to_dict())}")

    def save(complete: bool) -> None:
        with phases("checkpoints"):
            phases.seconds["train"] = trainer.seconds
            save_checkpoint(run_dir / CHECKPOINT, {
                "config": json.dumps(config.to_dict()), "guide_name": guide_name, "seed": seed,
                "complete": complete, "trainer": trainer.state_dict(), "curve_eval": json.dumps(curve_eval),
                "phases": json.dumps(phases.seconds),
            })

    def fault(step: int) -> NumericalFault:
        message = (f"guide {guide_name}, seed {seed}: the loss or a parameter became NaN/inf at step {step}; "
                   "likely cause: a learning rate too high for this model and data (try a smaller --lr, "
                   f"--lr-decay or --kl-warmup) or extreme data values; the last good checkpoint in {run_dir} "
                   "is intact")
        log.write(message)
        return NumericalFault(message)

    def after_step(trainer: Trainer) -> None:
        step = trainer.step_count
        if not math.isfinite(trainer.losses[-1]) or not parameters_finite(trainer.svi.params):
            raise fault(step)
        if stop:
            save(complete=False)
            log.write(f"interrupted after step {step}")
            raise Interrupted(stop[0], step, run_dir)
        if step % eval_every == 0 or step == steps:
            with phases("curve_evaluations"):
                curve_eval.append({"step": step, **evaluation_point(model, guide, data, config)})
            log.write(f"step {step} " + " ".join(f"{k}={v:.4f}" for k, v in curve_eval[-1].items() if k != "step"))
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save(complete=False)

    with stop_requests() as stop:
        try:
            fit = trainer.run(steps, after_step, progress, desc=f"{guide_name} seed {seed}")
        except ValueError as error:  # a distribution refusing NaN parameters inside the step
            if parameters_finite(trainer.svi.params) and "nan" not in str(error).lower():
                raise
            raise fault(trainer.step_count + 1) from None
    save(complete=True)
    metrics = evaluate_splits(model, guide, data, config, seed, phases, progress)
    if config.bdmc:
        with phases("bdmc"):
            metrics["bdmc"] = run_bdmc(model, data, config, seed, run_dir)
        log.write("bdmc " + " ".join(f"{k}={metrics['bdmc'][k]:.4f}" for k in ("lower", "upper", "width")))
    log.write(f"seconds {phases.line()}")
    log.write("final " + " ".join(f"{split}_{k}={metrics[split][k]:.4f}" for split in metrics
                                  for k in ("log_px", "elbo", "kl_gap") if split in ("train", "test")))
    run = {"guide": guide_label(guide_name), "guide_spec": guide_name, "seed": seed, **metrics,
           "train_seconds": fit.seconds, "seconds": phases.seconds, "steps": steps,
           "compiled_loss": trainer.svi.compiled,
           "curve": training_curve(fit.losses), "curve_eval": curve_eval,
           "model_from": None if fixed_model is None else str(fixed_model),
           "where": where or where_am_i("local")}
    record = {"config": config.to_dict(), "versions": versions(), "run": run}
    write_atomically(run_dir / RUN_JSON, json.dumps(record, indent=2))
    return run


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a run stopped mid-write never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resumable_state(run_dir: Path, config: Config, guide_name: str, seed: int) -> dict:
    """The checkpoint in ``run_dir``, if ``--resume`` was given and it belongs to this configuration."""
    if not config.resume:
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    state = load_checkpoint(run_dir / CHECKPOINT)
    changed = differences(json.loads(state["config"]), config.to_dict())
    if state["guide_name"] != guide_name or state["seed"] != seed:
        changed = ["guide/seed", *changed]
    if changed:
        raise UsageError(f"{run_dir} holds a checkpoint from another configuration (it differs in "
                         f"{', '.join(changed)}); resume with the same settings or choose another --out")
    return state


def load_run(run_dir: str | Path, device: str | None = None, data: Dataset | None = None):
    """Rebuild a saved run: ``(config, data, model, guide, checkpoint)``, on ``device`` (default: the run's).

    ``data``, the run's data set already loaded (another run of the same study), saves loading it again.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist; give a directory written by elbogap train")
    state = load_checkpoint(run_dir / CHECKPOINT)
    config = Config(**json.loads(state["config"]))
    config = config if device is None else config.replace(device=device)
    data = data if data is not None else load_dataset(config)
    pyro.clear_param_store()
    model, guide = build(config, data, state["guide_name"])
    try:
        with torch.no_grad():
            model.load_state_dict(state["trainer"]["model"])
            guide.load_state_dict(state["trainer"]["guide"])
    except RuntimeError as error:
        raise UsageError(f"the checkpoint in {run_dir} does not match its configuration: "
                         f"{str(error).splitlines()[0]}") from None
    return config, data, model, guide, state
