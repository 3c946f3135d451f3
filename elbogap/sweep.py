"""The main job: every guide with every seed, one run after another or `--jobs` at once; both splits evaluated."""

import sys
from collections.abc import Callable
from pathlib import Path

from elbogap.config import Config
from elbogap.runs import NumericalFault, build, guide_label, load_dataset, run_one, skipped_run
from elbogap.versions import versions


def run_name(guide: str, seed: int) -> str:
    """``GUIDE-seedSEED``; a user's guide program is named by its file stem and name (``my_vae.VAE``)."""
    return f"{guide_label(guide)}-seed{seed}"


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
        references = {seed: out / "runs" / f"reference-{config.reference_guide}-seed{seed}" for seed in config.seeds}
    if config.jobs > 1:
        return compare_in_parallel(config, out, results, references, progress, on_run)
    for seed, run_dir in references.items():
        reference = run_one(config, data, config.reference_guide, seed, run_dir, progress)
        results["reference_runs"] = [*results.get("reference_runs", []),
                                     {**reference, "run_dir": str(run_dir.relative_to(out))}]
    for guide_name in config.guides:
        for seed in config.seeds:
            name = run_name(guide_name, seed)
            try:
                run = run_one(config, data, guide_name, seed, out / "runs" / name, progress, references.get(seed))
            except NumericalFault as fault:
                if config.on_nan != "skip":
                    raise
                run = skipped_run(guide_name, seed, str(fault))
            results["runs"].append({**run, "run_dir": f"runs/{name}"})
            if on_run is not None:
                on_run(results)
            if progress:
                report_run(guide_name, seed, run)
    return results


def save_study(results: dict, out: str | Path, config: Config) -> None:
    """Write a finished study: results.json/.csv/.md, the resolved ``config.toml`` and, if asked, the figures."""
    from elbogap.config import to_toml
    from elbogap.report import write_results

    out = Path(out)
    write_results(results, out)
    (out / "config.toml").write_text(to_toml(config))
    if config.figures:
        from elbogap.plots import make_figures

        make_figures(out)


def report_run(guide_name: str, seed: int, run: dict) -> None:
    if "failed" not in run:
        test = run["test"]
        print(f"{guide_name:>10} seed {seed}: test log p(x) {test['log_px']:.3f}, "
              f"ELBO {test['elbo']:.3f}, gap {test['kl_gap']:.3f}", file=sys.stderr)


def compare_in_parallel(config: Config, out: Path, results: dict, references: dict, progress: bool,
                        on_run: Callable[[dict], None] | None) -> dict:
    """:func:`compare` with ``config.jobs`` runs at a time (see :mod:`elbogap.parallel`); same records, same order."""
    from elbogap.parallel import run_parallel

    finished = {}

    def collect(guide_name, seed, run):
        finished[guide_name, seed] = run
        if progress:
            report_run(guide_name, seed, run)
        results["runs"] = [{**finished[g, s], "run_dir": f"runs/{run_name(g, s)}"}
                           for g in config.guides for s in config.seeds if (g, s) in finished]
        if on_run is not None:
            on_run(results)

    if references:
        reference_runs = {}
        run_parallel(config, [(config.reference_guide, seed, run_dir, None) for seed, run_dir in references.items()],
                     config.jobs, lambda guide_name, seed, run: reference_runs.update({seed: run}))
        results["reference_runs"] = [{**reference_runs[seed], "run_dir": str(run_dir.relative_to(out))}
                                     for seed, run_dir in references.items()]
    tasks = [(g, s, out / "runs" / run_name(g, s), references.get(s)) for g in config.guides for s in config.seeds]
    run_parallel(config, tasks, config.jobs, collect)
    return results
