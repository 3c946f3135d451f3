"""The protocol of models whose latents are per data point (a VAE, the linear-Gaussian model, per-point programs).

After training, each split is evaluated whole (the training split on a seeded subset), log p(x)
as ``--log-px`` plans it, and the KL gap is split into approximation and amortization gaps on a
seeded subset of points; during training, fixed prefixes of the splits give a cheap curve; BDMC
runs on data simulated from the trained model.
"""

import json
from pathlib import Path

import numpy as np
import torch

from elbogap import streams
from elbogap.checkpoint import load_checkpoint
from elbogap.config import Config
from elbogap.data import Dataset
from elbogap.device import rng_devices
from elbogap.figure_data import save_figure_data
from elbogap.inference import evaluate, refit_guide
from elbogap.inference.bdmc import sandwich
from elbogap.inference.gaps import KnownLogPx, gap_decomposition
from elbogap.inference.stacked_training import Q_STAR, stacker
from elbogap.phases import Phases
from elbogap.points import CARRIED, carried
from elbogap.progress import Progress, as_progress
from elbogap.protocols.base import Protocol
from elbogap.user_model import check_program_rows


def evaluate_splits(model, guide, data: Dataset, config: Config, seed: int, phases: Phases | None = None,
                    progress: bool | Progress = False, run_dir=None) -> dict:
    """Metrics of the train and test splits, each from its own reproducible stream (``evaluation``,
    ``evaluation_test``), so that the test split's draws do not depend on how many the training split's took, and
    each split's guide-independent log p(x) (AIS) from its own again (``log_px_train``, ``log_px_test``), the same
    for every guide of a seed.

    The test split is evaluated whole; the training split on a seeded subset of
    ``--train-eval-points`` points (all of it for 0, or for a per-datapoint guide), as the
    training curve already shows the fit. ``num_points`` and ``split_points`` say how many.

    ``phases`` gets the seconds of each split's evaluation (``evaluate_SPLIT``) and of its gap
    decomposition (``gaps_SPLIT``, the q* refits and their evaluation).
    """
    phases = phases if phases is not None else Phases()
    metrics = {}
    saved = Path(run_dir) / Q_STAR if run_dir is not None else None
    found = load_checkpoint(saved) if saved is not None and saved.is_file() else {}  # q* refit at once with its stack
    splits = data.splits()
    for split, rows in evaluated_rows(data, guide.amortized, config).items():
        streams.seeded("evaluation" if split == "train" else "evaluation_test", seed)
        metrics[split], per_point = evaluate_split(
            model, guide, splits[split][rows], config, fresh_local=split != "train", phases=phases, split=split,
            progress=progress, q_star=found.get(split),
            fresh_stream=lambda split=split: streams.seeded(f"log_px_{split}", seed))
        metrics[split]["split_points"] = len(splits[split])
        metrics[split][CARRIED] = carried(per_point, rows)  # for the run's points.npz (elbogap.points)
    if run_dir is not None:  # what the figures show beyond these numbers, so that drawing them fits nothing
        save_figure_data(run_dir, model, guide, data, seed)
    return metrics


def evaluated_rows(data: Dataset, amortized: bool, config: Config) -> dict[str, torch.Tensor]:
    """Per split, the rows evaluated after training: the test split whole, the training split's seeded subset of
    ``--train-eval-points`` (all of it for 0, or for a guide that is not amortized)."""
    rows = {}
    for split, x in data.splits().items():
        if split == "train" and amortized and 0 < config.train_eval_points < len(x):
            rows[split] = train_eval_index(len(x), config)
        else:
            rows[split] = torch.arange(len(x), device=x.device)
    return rows


def evaluated_points(data: Dataset, amortized: bool, config: Config) -> dict[str, torch.Tensor]:
    """Per split, the points evaluated after training (:func:`evaluated_rows`)."""
    splits = data.splits()
    return {split: splits[split][rows] for split, rows in evaluated_rows(data, amortized, config).items()}


def stack_with_gap_points(config, data: Dataset, guide_name: str, runs, seeds):
    """elbogap's stacked training (:func:`~elbogap.inference.stacked_training.stacker`), told each split's gap
    points, on which it refits every seed's q* at once after training."""
    gap_points = ({split: x[gap_index(len(x), config)] for split, x in evaluated_points(data, True, config).items()}
                  if config.gap_points else None)
    return stacker(config, data, guide_name, runs, seeds, gap_points)


def train_eval_index(num_points: int, config: Config) -> torch.Tensor:
    """The seeded subset of the training split evaluated after training (``--train-eval-points`` of them)."""
    generator = streams.generator("train_subset", config.data_seed)
    return torch.randperm(num_points, generator=generator)[:config.train_eval_points].sort().values.to(config.device)


def subset_index(num_points: int, count: int, config: Config) -> torch.Tensor:
    """A seeded subset of ``count`` points of a split, sorted; smaller subsets are prefixes of larger ones.

    The gap points (``--gap-points``) and the AIS points (``--ais-points``) are drawn from one
    permutation, so the points where gaps are reported always have AIS where AIS runs.
    """
    generator = streams.generator("subsets", config.data_seed)
    return torch.randperm(num_points, generator=generator)[:count].sort().values.to(config.device)


def gap_index(num_points: int, config: Config) -> torch.Tensor:
    """The seeded subset of a split on which q* is refit (``--gap-points`` of them)."""
    return subset_index(num_points, config.gap_points, config)


def evaluate_split(model, guide, x: torch.Tensor, config: Config, fresh_local: bool, phases: Phases | None = None,
                   split: str = "split", progress: bool | Progress = False, q_star: dict | None = None,
                   fresh_stream=None) -> tuple[dict, dict]:
    """Metrics of one split, with the gap decomposition on ``--gap-points`` of its points, and its per-point tensors.

    A per-datapoint guide first fits its parameters with the model fixed. Where ``--log-px``
    gives a guide-independent log p(x) (exact, quadrature, AIS on every point, or, under
    ``auto``, AIS on the gap and ``--ais-points`` subset), the gaps are computed from it. ``q_star``, q* found
    already on the gap points (refit at once with other seeds), is taken instead of a refit. ``fresh_stream`` seeds
    that log p(x)'s draws (:func:`~elbogap.inference.evaluation.evaluate`).
    """
    phases = phases if phases is not None else Phases()
    progress = as_progress(progress)
    options = {"elbo_samples": config.eval_samples, "iw_samples": config.iw_samples,
               "quadrature_points": config.quadrature_points, "log_px_method": config.log_px,
               "ais": config.ais_settings()}
    with phases(f"evaluate_{split}"), progress.phase(f"evaluate {split}"):
        if not guide.amortized:
            if fresh_local:
                guide = guide.fresh(len(x))
            local_fit = refit_guide(model, guide, x, jit=config.jit, progress=progress, desc=f"fit {split} points")
        ais_index = subset_index(len(x), max(config.ais_points, config.gap_points), config)
        evaluation = evaluate(model, guide, x, ais_index=ais_index, progress=progress, desc=f"evaluate {split}",
                              fresh_stream=fresh_stream, **options)
    metrics = {**evaluation.metrics, **elbo_on_log_px_points(evaluation.per_point)}
    if not guide.amortized:
        metrics["local_fit_converged"] = local_fit.converged
    if config.gap_points:
        index = gap_index(len(x), config)
        log_px = None
        if metrics["log_px_guide_independent"]:
            per_point = evaluation.per_point
            log_px = KnownLogPx.of(per_point, metrics["log_px_method"], index)
        with phases(f"gaps_{split}"), progress.phase(f"q* {split}"):
            refit_options = {"jit": config.jit, "progress": progress, "desc": f"q* {split}"}
            metrics.update(gap_decomposition(model, guide, x[index], index, refit_options=refit_options,
                                             log_px=log_px, given=q_star, **options))
    return metrics, evaluation.per_point


def elbo_on_log_px_points(per_point: dict) -> dict:
    """The ELBO on the points log p(x) covers and its standard error, so that log p(x) - ELBO = KL gap in one row.

    Where log p(x) covers every point (exact, quadrature, AIS everywhere) it is the split's ELBO.
    """
    covered = ~per_point["log_px"].isnan()
    stderr = per_point["elbo_stderr"][covered].double()
    return {"elbo_log_px_points": float(per_point["elbo"][covered].double().mean()),
            "elbo_log_px_points_stderr": float(stderr.pow(2).sum().sqrt() / max(len(stderr), 1))}


def run_bdmc(model, data: Dataset, config: Config, seed: int, run_dir: str | Path,
             progress: bool | Progress = False) -> dict:
    """BDMC on ``config.bdmc`` pairs simulated from ``model``; writes bdmc.json and bdmc.npz, returns the summary."""

    streams.seeded("bdmc", seed)
    summary, arrays = sandwich(model, data.train[:1], config.bdmc, config.ais_settings(), progress=progress)
    run_dir = Path(run_dir)
    (run_dir / "bdmc.json").write_text(json.dumps(summary, indent=2))
    np.savez(run_dir / "bdmc.npz", **{key: value.detach().cpu().numpy() for key, value in arrays.items()})
    return summary


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
                               iw_samples=min(config.iw_samples, 100), quadrature_points=16,
                               refine_quadrature=False).metrics
            point[f"{split}_elbo"] = metrics["elbo"]
            point[f"{split}_log_px"] = metrics["log_px"]
        if config.dynamics_points and guide.amortized:
            count = min(config.dynamics_points, len(data.test))
            with torch.enable_grad():
                gaps = gap_decomposition(model, guide, data.test[:count], elbo_samples=32, iw_samples=100,
                                         quadrature_points=16)
            point.update({f"dynamics_{key}": gaps[key] for key in ("gap_log_px", "gap_elbo", "elbo_star")})
    return point


#: training rows the ELBO checks of ``--schedule converge`` score, and draws of q per row
CHECK_ROWS, CHECK_DRAWS = 1024, 4


def elbo_check(model, guide, data: Dataset, config: Config):
    """The ELBO per data point on the first ``CHECK_ROWS`` training rows, from the same draws at every call (the
    stream ``convergence_checks``), for ``--schedule converge``."""
    check = _check_evaluation(model, guide, data)
    return lambda: check().metrics["elbo"]


def elbo_terms(model, guide, data: Dataset, config: Config):
    """The ELBO of each of the first ``CHECK_ROWS`` training rows, on the draws :func:`elbo_check` scores, for the
    trend rule of ``--schedule fixed``."""
    check = _check_evaluation(model, guide, data)
    return lambda: check().per_point["elbo"]


def _check_evaluation(model, guide, data: Dataset):
    count = min(CHECK_ROWS, len(data.train))
    rows, index = data.train[:count], torch.arange(count, device=data.train.device)

    def check():
        with torch.random.fork_rng(devices=rng_devices(rows)):
            streams.seeded("convergence_checks", 0)
            return evaluate(model, guide, rows, index, elbo_samples=CHECK_DRAWS, iw_samples=1, log_px_method="iwae")

    return check


#: the fewest seeds stacked: on the default VAE (one thread, benchmarks/stacked_seeds.py), 2 stacked seeds cost 0.9-1.9
#: ms per fit-step against 0.9-1.7 ms for a lone run's compiled step (no gain), 4 cost 0.6-1.2 ms (1.3-1.5x less)
STACK_FROM = 4

VAE = Protocol("vae", evaluate=evaluate_splits, curve_point=evaluation_point, bdmc=run_bdmc, elbo_check=elbo_check,
               elbo_terms=elbo_terms,
               defaults={"lr": 0.003, "steps": 2000, "schedule": "fixed", "convergence_tol": 0.01,
                         "particles": 1}, stacker=stack_with_gap_points, stack_from=STACK_FROM,
               check_data=check_program_rows)
