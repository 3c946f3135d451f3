"""Figures of a comparison, drawn from its saved results and the runs' saved figure data (PNG, matplotlib)."""

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from elbogap.calibration.report import calibration_figures  # noqa: E402
from elbogap.checkpoint import load_checkpoint  # noqa: E402
from elbogap.errors import UsageError  # noqa: E402
from elbogap.figure_data import FILE as FIGURE_DATA  # noqa: E402
from elbogap.figure_tools import by_guide, mark_convergence, save  # noqa: E402
from elbogap.global_latents import plots as whole_data_set_figures  # noqa: E402
from elbogap.records import of_whole_data_set, point_splits, upgraded  # noqa: E402
from elbogap.report import finished  # noqa: E402
from elbogap.summary import bound_markers, over_seeds


def curve_points_words(results: dict) -> str:
    """Which test points the evaluations during training cover: a fixed prefix of ``--curve-points`` of the split,
    not the split the tables report on."""
    run = next((run for run in finished(results["runs"]) if "test" in run), None)
    total = run["test"].get("split_points", run["test"]["num_points"]) if run else None
    count = results["config"].get("curve_points")
    if not count or total is None or count >= total:
        return "test points"
    return f"first {count} of {total} test points"


def plot_training(results: dict, path: Path) -> Path:
    """Running training ELBO, test ELBO and test log p(x) at evaluation points, per run; where it was measured,
    a third panel with the gradient's signal-to-noise over training (see :func:`plot_snr`)."""
    measured = any("snr_draws" in point for run in results["runs"] for point in run.get("curve_eval", []))
    fig, axes = plt.subplots(1, 3 if measured else 2, figsize=(16.5 if measured else 11, 4))
    left, right = axes[:2]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (guide, runs) in enumerate(by_guide(results["runs"]).items()):
        color = colors[i % len(colors)]
        for j, run in enumerate(runs):
            label = guide if j == 0 else None
            steps, elbo = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
            left.plot(steps, elbo, color=color, alpha=0.5, lw=1, label=label)
            points = [p for p in run.get("curve_eval", []) if "test_elbo" in p]
            if points:
                left.plot([p["step"] for p in points], [p["test_elbo"] for p in points], "o--", color=color,
                          ms=3, lw=1)
                right.plot([p["step"] for p in points], [p["test_log_px"] for p in points], "s-", color=color,
                           ms=3, lw=1, label=label)
                right.plot([p["step"] for p in points], [p["test_elbo"] for p in points], ":", color=color, lw=1)
    mark_convergence(left, results["runs"])
    subset = curve_points_words(results)
    left.set(xlabel="SVI step", ylabel="nats per data point",
             title=f"ELBO: running train (lines), test at evaluation points (dots,\n{subset})")
    right.set(xlabel="SVI step", ylabel="nats per data point",
              title=f"test log p(x) (squares) above test ELBO (dotted)\non the {subset}")
    low = [p["test_elbo"] for run in results["runs"] for p in run.get("curve_eval", []) if "test_elbo" in p]
    if low:  # the first evaluations of an untrained model would squash the interesting range
        top = max([p["test_log_px"] for run in results["runs"] for p in run["curve_eval"] if "test_log_px" in p]
                  + [value for run in results["runs"] for _, value in run["curve"]])
        floor = sorted(low)[len(low) // 10]
        for axis in (left, right):
            axis.set_ylim(floor - 0.2 * (top - floor), top + 0.1 * (top - floor))
    for axis in (left, right):
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    if measured:
        plot_snr(results, axes[2])
    return save(fig, path)


def plot_snr(results: dict, axis) -> None:
    """The training gradient's signal-to-noise at the evaluation points, log scale: per guide, the mean over
    seeds of the median over entries, the encoder's (solid) and the decoder's (dashed)."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (guide, runs) in enumerate(by_guide(results["runs"]).items()):
        for group, style in (("encoder", "-"), ("decoder", "--")):
            by_step = defaultdict(list)
            for run in runs:
                for point in run.get("curve_eval", []):
                    if math.isfinite(point.get(f"snr_{group}", math.nan)):
                        by_step[point["step"]].append(point[f"snr_{group}"])
            steps = sorted(by_step)
            axis.plot(steps, [sum(by_step[step]) / len(by_step[step]) for step in steps], style, marker=".",
                      color=colors[i % len(colors)], lw=1, label=f"{guide} {group}" if steps else None)
    draws = next(point["snr_draws"] for run in results["runs"] for point in run.get("curve_eval", [])
                 if "snr_draws" in point)
    axis.set_yscale("log")
    axis.set(xlabel="SVI step", ylabel="median over entries of |mean| / sd",
             title=f"gradient signal-to-noise ({draws} draws, one fixed batch)\nencoder (solid), decoder (dashed)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7)


def plot_gap_over_training(results: dict, path: Path) -> Path:
    """log p(x) and the ELBO on the test split over training (top), and the gap between them (bottom).

    In ``--mode fixed-model`` log p(x) is flat and shared: the ELBO rises and the gap, a pure KL,
    falls. Where q* was refit during training (``--dynamics-points``) the gap is stacked into the
    approximation gap (log p(x) - L[q*]) and the amortization gap (L[q*] - L[q]).
    """
    groups = by_guide(results["runs"])
    fig, axes = plt.subplots(2, len(groups), figsize=(3.6 * len(groups), 5.6), squeeze=False, sharex="col")
    for col, (guide, runs) in enumerate(groups.items()):
        top, bottom = axes[0, col], axes[1, col]
        points = [p for p in runs[0].get("curve_eval", []) if "test_elbo" in p]
        steps = [p["step"] for p in points]
        top.plot(steps, [p["test_log_px"] for p in points], "k-", lw=1.5, label="log p(x)")
        top.plot(steps, [p["test_elbo"] for p in points], "--", color="tab:blue", lw=1.5, label="ELBO")
        if points and "dynamics_elbo_star" in points[0]:
            approx = [p["dynamics_gap_log_px"] - p["dynamics_elbo_star"] for p in points]
            total = [p["dynamics_gap_log_px"] - p["dynamics_gap_elbo"] for p in points]
            bottom.fill_between(steps, 0, approx, color="tab:green", alpha=0.5, label="approximation gap")
            bottom.fill_between(steps, approx, total, color="tab:purple", alpha=0.5, label="amortization gap")
        else:
            gap = [p["test_log_px"] - p["test_elbo"] for p in points]
            bottom.fill_between(steps, 0, gap, color="tab:orange", alpha=0.5, label="KL gap")
        top.set_title(f"{guide} (seed {runs[0]['seed']})")
        bottom.set_xlabel("SVI step")
        for axis in (top, bottom):
            axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"nats per data point\n({curve_points_words(results)})")
    axes[1, 0].set_ylabel("log p(x) - ELBO (nats)")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fixed = results["config"].get("mode") == "fixed-model"
    fig.suptitle("fixed model: log p(x) is the same for every guide, the ELBO rises towards it" if fixed
                 else "log p(x) and the ELBO over training; the gap between them is KL(q || p(z|x))", fontsize=10)
    return save(fig, path)


def _error_bar(stats: dict) -> float:
    """A bar's error: the spread over seeds where there are several, else the run's Monte-Carlo standard error."""
    return stats.get("seed_sd", stats.get("mc_stderr", 0.0))


def plot_gaps(results: dict, path: Path) -> Path:
    """KL gap per guide, train and test, and where q* was refit its approximation and amortization gaps (test).

    Bars: the mean over seeds ± the standard deviation over seeds, or ± the Monte-Carlo standard
    error with one seed; dots: each seed. A ``≤`` before a guide's name: its approximation gap
    is an upper bound (and its amortization gap a lower bound).
    """
    groups = by_guide(results["runs"])
    split_gaps = any("approx_gap" in run["test"] for run in results["runs"])
    fig, axes = plt.subplots(1, 2 if split_gaps else 1, figsize=((2.6 if split_gaps else 1.3) * len(groups) + 4, 4),
                             squeeze=False)
    width = 0.38
    panels = [[("train", "kl_gap", "train"), ("test", "kl_gap", "test")],
              [("test", "approx_gap", "approximation gap"), ("test", "amort_gap", "amortization gap")]]
    for column, bars in enumerate(panels[:axes.shape[1]]):
        axis = axes[0, column]
        for offset, (split, key, label), color in zip((-width / 2, width / 2), bars, ("tab:blue", "tab:orange"),
                                                      strict=True):
            for i, runs in enumerate(groups.values()):
                stats = over_seeds([run[split] for run in runs], key)
                if stats is None:
                    continue
                axis.bar(i + offset, stats["mean"], width, yerr=_error_bar(stats), capsize=3, color=color, alpha=0.8,
                         label=label if i == 0 else None)
                axis.plot([i + offset] * len(runs), [run[split][key] for run in runs], "k.", ms=4)
        names = [("≤ " if column and bound_markers([run["test"] for run in runs]) else "") + guide
                 for guide, runs in groups.items()]
        axis.set_xticks(range(len(groups)), names)
        axis.axhline(0.0, color="k", lw=0.6)
        if axis.get_legend_handles_labels()[0]:  # no bar where the first guide has no number (matplotlib warns)
            axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    test = results["runs"][0]["test"]
    method = test["log_px_method"] + ("" if test.get("log_px_guide_independent", True) else ", guide-dependent")
    several = max(len(runs) for runs in groups.values()) > 1
    error = "sd over seeds" if several else "Monte-Carlo s.e."
    axes[0, 0].set(ylabel="KL gap = log p(x) - ELBO (nats)",
                   title=f"KL(q(z|x) || p(z|x)) per family\n(log p(x) by {method}; bars: mean ± {error}, dots: seeds)")
    if split_gaps:
        axes[0, 1].set(ylabel="nats (test gap points)",
                       title="approximation gap log p(x) - L[q*],\namortization gap L[q*] - L[q]\n"
                             f"(bars: mean ± {error};\n≤: an upper bound on the approximation gap)")
    return save(fig, path)


def plot_posteriors(fits: list[tuple[str, dict]], path: Path) -> Path:
    """For 1-D and 2-D latents: the true posterior p(z|x) (filled) against each guide's q(z|x) (lines, or draws: dots
    in 2-D, a histogram in 1-D), per test point, from each run's saved figure data (``fits``: ``(guide name, its
    "posteriors")``, see :mod:`elbogap.figure_data`)."""
    columns = max(len(saved["panels"]) for _, saved in fits)
    fig, axes = plt.subplots(len(fits), columns, figsize=(2.6 * columns, 2.5 * len(fits)), squeeze=False)
    for row, (name, saved) in enumerate(fits):
        for col, panel in enumerate(saved["panels"]):
            _posterior_panel(axes[row, col], panel)
            if col == 0:
                axes[row, col].set_ylabel(name)
            if row == 0:
                axes[row, col].set_title(f"test point {col}", fontsize=9)
    constrained = sorted({site for _, saved in fits for site in saved.get("constrained", [])})
    note = f"; {', '.join(constrained)} on the real line (biject_to of the support)" if constrained else ""
    fig.suptitle(f"true posterior p(z|x) (grey) and q(z|x) (red){note}", fontsize=10)
    return save(fig, path)


#: q's contours, as shares of its peak density
Q_LEVELS = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9)


def _posterior_panel(axis, panel: dict) -> None:
    grid = panel["grid"]
    if grid.shape[-1] == 1:
        _posterior_line(axis, grid[:, 0].numpy(), panel)
        return
    z1, z2 = grid[..., 0].numpy(), grid[..., 1].numpy()
    axis.contourf(z1, z2, panel["log_posterior"].exp().numpy(), levels=12, cmap="Greys")
    if "log_q" in panel:
        relative = (panel["log_q"].double() - panel["log_q"].double().max()).exp().numpy()  # peak 1
        # levels above 0 only: a level at 0 traced where the density underflows, red lines where q has no mass
        axis.contour(z1, z2, relative, levels=Q_LEVELS, colors="tab:red", linewidths=0.8)
    else:
        samples = panel["q_draws"].numpy()
        axis.plot(samples[:, 0], samples[:, 1], ".", color="tab:red", ms=1.5, alpha=0.5)
    axis.set_xticks([])
    axis.set_yticks([])


def _posterior_line(axis, z, panel: dict) -> None:
    """One latent: the true posterior's density filled, q's as a line, or a histogram of q's draws."""
    axis.fill_between(z, panel["log_posterior"].exp().numpy(), color="0.7", linewidth=0)
    if "log_q" in panel:
        axis.plot(z, panel["log_q"].exp().numpy(), color="tab:red", linewidth=1.0)
    else:
        draws = panel["q_draws"][:, 0]
        bins = 30  # each draw weighs 1 / (draws x bin width): q's density, also where draws fall off the line
        weight = torch.full_like(draws, bins / (len(draws) * float(z[-1] - z[0])))
        axis.hist(draws.numpy(), bins=bins, range=(z[0], z[-1]), weights=weight.numpy(), histtype="step",
                  color="tab:red", linewidth=0.8)
    axis.set_xlim(z[0], z[-1])
    axis.set_yticks([])


def plot_images(fits: list[tuple[str, dict]], path: Path) -> Path:
    """Test images, then per guide their reconstructions E[x | z], z ~ q(z|x), and prior samples' means, from each
    run's saved figure data (``fits``: ``(guide name, its "images")``)."""
    first = fits[0][1]
    rows = [("data", first["data"])]
    for name, saved in fits:
        if "reconstruction" in saved:
            rows.append((f"{name}: reconstruction", saved["reconstruction"]))
        rows.append((f"{name}: prior sample", saved["prior_sample"]))
    shape, count = tuple(first["shape"]), len(first["data"])
    fig, axes = plt.subplots(len(rows), 1, figsize=(count * 0.9, len(rows) * 1.0), squeeze=False)
    for axis, (label, images) in zip(axes[:, 0], rows, strict=True):
        # one strip per row, images side by side with a one-pixel gap: one axis per row draws fast
        tiles = images[:count].reshape(-1, *shape).clamp(0, 1)
        gap = torch.ones(len(tiles), shape[0], 1)
        strip = torch.cat([tiles, gap], dim=2).permute(1, 0, 2).reshape(shape[0], -1)[:, :-1]
        axis.imshow(strip.numpy(), cmap="Greys_r", vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return save(fig, path)


def _saved_figure_data(results: dict, results_dir: Path, key: str) -> list[tuple[str, dict]]:
    """For each guide's first run that saved figure data (:mod:`figure_data`) holding ``key``: the guide's name and
    that entry."""
    first_runs = list({run["guide"]: run for run in reversed(results["runs"])}.values())[::-1]
    files = [(run["guide"], results_dir / run.get("run_dir", ".") / FIGURE_DATA) for run in first_runs]
    saved = [(guide, load_checkpoint(file)) for guide, file in files if file.is_file()]
    return [(guide, state[key]) for guide, state in saved if key in state]


def draw_posteriors(results: dict, path: Path) -> Path | None:
    """:func:`plot_posteriors` from the runs' saved figure data beside ``path``; None where no run saved any."""
    fits = _saved_figure_data(results, path.parent, "posteriors")
    return plot_posteriors(fits, path) if fits else None


def draw_images(results: dict, path: Path) -> Path | None:
    """:func:`plot_images` from the runs' saved figure data beside ``path``; None where no run saved any."""
    fits = _saved_figure_data(results, path.parent, "images")
    return plot_images(fits, path) if fits else None


def holds_point_splits(results: dict) -> bool:
    """Whether some run holds a split of means over data points (:func:`~elbogap.records.point_splits`)."""
    return any(point_splits(run) for run in results["runs"])


def holds_whole_data_set(results: dict) -> bool:
    """Whether some run's training split is the whole data set as one unit: log p(D), the ELBO of D, their gap."""
    return any(of_whole_data_set(run) for run in results["runs"])


def holds_test_curve(results: dict) -> bool:
    """Whether some run evaluated the test split's log p(x) and ELBO during training."""
    return any("test_elbo" in point for run in results["runs"] for point in run.get("curve_eval", []))


def always(results: dict) -> bool:
    """For figures whose drawing reads saved files and returns None where there are none."""
    return True


@dataclass(frozen=True)
class Figure:
    """One figure file of a study: ``holds(results)`` says whether the records hold the metrics it draws, and
    ``draw(results, path)`` writes it (or returns None where saved files it reads are missing)."""

    file: str
    holds: Callable[[dict], bool]
    draw: Callable[[dict, Path], Path | None]


#: every figure of ``elbogap compare`` and ``train``, drawn where the records hold its metrics, never by the kind
#: of model: a file is drawn by the first of its entries whose metrics are there and which draws it
FIGURES = (
    Figure("training.png", holds_point_splits, plot_training),
    Figure("training.png", holds_whole_data_set, whole_data_set_figures.plot_training),
    Figure("gaps.png", holds_point_splits, plot_gaps),
    Figure("gaps.png", holds_whole_data_set, whole_data_set_figures.plot_gaps),
    Figure("gap_over_training.png", holds_test_curve, plot_gap_over_training),
    Figure("evidence.png", holds_whole_data_set, whole_data_set_figures.plot_evidence),
    Figure("marginals.png", always, whole_data_set_figures.plot_marginals),
    Figure("posteriors.png", always, draw_posteriors),
    Figure("images.png", always, draw_images),
)


def make_figures(results_dir: str | Path) -> list[Path]:
    """Draw every figure a results directory supports, from its records and the runs' saved figure data (never a
    model: :mod:`elbogap.figure_data`); return the files written."""
    results_dir = Path(results_dir)
    path = results_dir / "results.json"
    if not path.is_file():
        raise UsageError(f"{path} does not exist; give a directory written by elbogap compare or train")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error}); rerun the study to rewrite it") from None

    if results.get("kind") == "calibration":  # elbogap calibrate's study: its own figures
        written = calibration_figures(results, results_dir)
        if not written:
            raise UsageError(f"{path} summarizes no simulation yet; nothing to plot")
        return written
    results = upgraded({**results, "runs": finished(results.get("runs", []))})
    if not results["runs"]:
        raise UsageError(f"{path} holds no finished run yet; nothing to plot")
    written = {}
    for figure in FIGURES:
        if figure.file not in written and figure.holds(results):
            drawn = figure.draw(results, results_dir / figure.file)
            if drawn is not None:
                written[figure.file] = drawn
    return list(written.values())
