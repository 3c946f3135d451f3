"""The main job: train a model with each guide and seed, evaluate both splits, collect results."""

import sys
from collections.abc import Callable
from pathlib import Path

from elbogap.config import Config
from elbogap.runs import NumericalFault, build, load_dataset, run_one
from elbogap.versions import versions


def run_name(guide: str, seed: int) -> str:
    return f"{guide}-seed{seed}"


def compare(config: Config, out: str | Path | None = None, progress: bool = False,
            on_run: Callable[[dict], None] | None = None) -> dict:
    """Run every guide with every seed on one data set and model.

    Each run is saved as a run directory ``out/runs/GUIDE-seedSEED``. Returns
    ``{"config", "versions", "runs"}``; each run holds its guide, seed, the metrics of
    :func:`~elbogap.inference.evaluate` for ``"train"`` and ``"test"``, ``train_seconds`` (the
    SVI steps alone) and its curves. ``on_run(results)`` is called after every run, so partial
    results can be saved as they arrive.
    """
    config.validate()
    out = Path(out if out is not None else config.out)
    data = load_dataset(config)
    for name in config.guides:  # fail on a bad guide before any training, not in the middle
        build(config, data, name)
    results = {"config": config.to_dict(), "versions": versions(), "runs": []}
    references = {}
    if config.mode == "fixed-model":  # one model per seed, trained with the reference guide, then frozen
        build(config, data, config.reference_guide)
        for seed in config.seeds:
            references[seed] = out / "runs" / f"reference-{config.reference_guide}-seed{seed}"
            reference = run_one(config, data, config.reference_guide, seed, references[seed], progress)
            results["reference_runs"] = [*results.get("reference_runs", []), {**reference, "run_dir": str(
                references[seed].relative_to(out))}]
    for guide_name in config.guides:
        for seed in config.seeds:
            name = run_name(guide_name, seed)
            try:
                run = run_one(config, data, guide_name, seed, out / "runs" / name, progress, references.get(seed))
            except NumericalFault as fault:
                if config.on_nan != "skip":
                    raise
                print(f"elbogap: skipped {fault}", file=sys.stderr)
                run = {"guide": guide_name, "seed": seed, "failed": str(fault)}
            results["runs"].append({**run, "run_dir": f"runs/{name}"})
            if on_run is not None:
                on_run(results)
            if progress and "failed" not in run:
                test = run["test"]
                print(f"{guide_name:>10} seed {seed}: test log p(x) {test['log_px']:.3f}, "
                      f"ELBO {test['elbo']:.3f}, gap {test['kl_gap']:.3f}", file=sys.stderr)
    return results
