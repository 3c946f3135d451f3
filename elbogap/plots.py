"""Figures of a comparison, drawn from its saved results and run checkpoints (PNG, matplotlib)."""

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402

from elbogap.errors import UsageError  # noqa: E402
from elbogap.inference import log_joint, refit_guide  # noqa: E402
from elbogap.inference.bdmc import simulate  # noqa: E402
from elbogap.inference.evaluation import sample_latents  # noqa: E402
from elbogap.inference.log_joint import observed_sites, split_latents  # noqa: E402
from elbogap.sites import constrain, latent_transforms  # noqa: E402

#: families whose density can be evaluated anywhere (planar and Sylvester score only their own draws).


def save(fig, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_guide(runs):
    groups = defaultdict(list)
    for run in runs:
        groups[run["guide"]].append(run)
    return groups


def plot_training(results: dict, path: Path) -> Path:
    """Running training ELBO, test ELBO and test log p(x) at evaluation points, per run; where it was measured,
    a third panel with the gradient's signal-to-noise over training (see :func:`plot_snr`)."""
    measured = any("snr_draws" in point for run in results["runs"] for point in run.get("curve_eval", []))
    fig, axes = plt.subplots(1, 3 if measured else 2, figsize=(16.5 if measured else 11, 4))
    left, right = axes[:2]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (guide, runs) in enumerate(_by_guide(results["runs"]).items()):
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
    left.set(xlabel="SVI step", ylabel="nats per data point",
             title="ELBO: running train (lines), test at evaluation points (dots)")
    right.set(xlabel="SVI step", ylabel="nats per data point",
              title="test log p(x) (squares) above test ELBO (dotted)")
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


def mark_convergence(axis, runs: list[dict]) -> None:
    """A red cross at the end of each run's training curve whose fit did not converge (``run["converged"]``)."""
    labelled = False
    for run in runs:
        if run.get("converged") is False and run.get("curve"):
            step, elbo = run["curve"][-1]
            axis.plot([step], [elbo], "x", color="red", ms=10, mew=2, label=None if labelled else "not converged")
            labelled = True


def plot_snr(results: dict, axis) -> None:
    """The training gradient's signal-to-noise at the evaluation points, log scale: per guide, the mean over
    seeds of the median over entries, the encoder's (solid) and the decoder's (dashed)."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (guide, runs) in enumerate(_by_guide(results["runs"]).items()):
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
    groups = _by_guide(results["runs"])
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
    axes[0, 0].set_ylabel("test nats per data point")
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
    from elbogap.summary import bound_markers, over_seeds

    groups = _by_guide(results["runs"])
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
                       title="approximation gap log p(x) - L[q*], amortization gap L[q*] - L[q]\n"
                             f"(bars: mean ± {error}; ≤: an upper bound on the approximation gap)")
    return save(fig, path)


@torch.no_grad()
def _posterior_grid(model, x, size=80):
    """A grid around the posterior of one point, and the normalized log posterior on it."""
    coarse = torch.linspace(-6, 6, 121)
    zz = torch.stack(torch.meshgrid(coarse, coarse, indexing="ij"), -1).reshape(-1, 1, 2)
    log_p = sum(log_joint(model, x, zz)).squeeze(-1)
    keep = zz[log_p > log_p.max() - 12, 0]
    lo, hi = keep.min(0).values - 0.3, keep.max(0).values + 0.3
    axes = [torch.linspace(float(lo[d]), float(hi[d]), size) for d in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    log_p = sum(log_joint(model, x, grid.reshape(-1, 1, 2))).reshape(size, size)
    cell = (hi - lo).prod() / size**2
    return grid, log_p - torch.logsumexp(log_p.flatten(), 0) - cell.log()


@torch.no_grad()
def plot_posteriors(fits: list[tuple], x: torch.Tensor, path: Path) -> Path:
    """For 2-D latents: the true posterior p(z|x) (filled) against each guide's q(z|x) (lines or draws).

    ``fits`` holds ``(name, model, guide, params)``, ``params`` the run's Pyro param-store state:
    each row is drawn inside it, so a user's program uses its own run's parameters.
    """
    fig, axes = plt.subplots(len(fits), len(x), figsize=(2.6 * len(x), 2.5 * len(fits)), squeeze=False)
    for row, (name, model, guide, params) in enumerate(fits):
        for col in range(len(x)):
            with pyro.get_param_store().scope(params):
                _posterior_panel(axes[row, col], name, model, guide, x[col:col + 1])
            if col == 0:
                axes[row, col].set_ylabel(name)
            if row == 0:
                axes[row, col].set_title(f"test point {col}", fontsize=9)
    constrained = sorted({site for _, model, _, _ in fits for site in latent_transforms(model)})
    note = f"; {', '.join(constrained)} on the real line (biject_to of the support)" if constrained else ""
    fig.suptitle(f"true posterior p(z|x) (grey) and q(z|x) (red){note}", fontsize=10)
    return save(fig, path)


def _posterior_panel(axis, name, model, guide, point) -> None:
    grid, log_post = _posterior_grid(model, point)
    z1, z2 = grid[..., 0].numpy(), grid[..., 1].numpy()
    axis.contourf(z1, z2, log_post.exp().numpy(), levels=12, cmap="Greys")
    fitted = guide
    if not guide.amortized:  # per-datapoint parameters for this one point, fitted to the frozen model
        fitted = guide.fresh(1)
        with torch.enable_grad():
            refit_guide(model, fitted, point)
    if fitted.density_anywhere:
        q = fitted.distribution(point, torch.tensor([0]))
        log_q = q.log_prob(grid.reshape(-1, 1, 2)).reshape(grid.shape[:2])
        axis.contour(z1, z2, log_q.exp().numpy(), levels=6, colors="tab:red", linewidths=0.8)
    else:
        samples = sample_latents(model, fitted, point, 400)[:, 0].numpy()
        axis.plot(samples[:, 0], samples[:, 1], ".", color="tab:red", ms=1.5, alpha=0.5)
    axis.set_xticks([])
    axis.set_yticks([])


def _likelihood_mean(model, x, z):
    values, _ = constrain(model, split_latents(model, z))  # z is on the real line (see elbogap.sites)
    trace = poutine.trace(poutine.condition(model.model, data=values)).get_trace(x)
    return trace.nodes[observed_sites(model)[0]]["fn"].mean


@torch.no_grad()
def plot_images(fits, x: torch.Tensor, image_shape, path: Path, num_samples: int = 10) -> Path:
    """Per guide: test images, their reconstructions E[x | z], z ~ q(z|x), and prior samples' means."""
    rows = []
    for name, model, guide, params in fits:
        with pyro.get_param_store().scope(params):
            if guide.amortized:
                z = sample_latents(model, guide, x, 1)[0]
                rows.append((f"{name}: reconstruction", _likelihood_mean(model, x, z)))
            prior_z = simulate(model, x, num_samples)[1]
            rows.append((f"{name}: prior sample", _likelihood_mean(model, x[:num_samples], prior_z)))
    rows.insert(0, ("data", x))
    fig, axes = plt.subplots(len(rows), 1, figsize=(num_samples * 0.9, len(rows) * 1.0), squeeze=False)
    for axis, (label, images) in zip(axes[:, 0], rows, strict=True):
        # one strip per row, images side by side with a one-pixel gap: one axis per row draws fast
        tiles = images[:num_samples].reshape(-1, *image_shape).clamp(0, 1)
        gap = torch.ones(len(tiles), image_shape[0], 1)
        strip = torch.cat([tiles, gap], dim=2).permute(1, 0, 2).reshape(image_shape[0], -1)[:, :-1]
        axis.imshow(strip.numpy(), cmap="Greys_r", vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return save(fig, path)


def image_shape_of(data) -> tuple[int, int] | None:
    if data.image_shape is not None:
        return data.image_shape
    side = math.isqrt(data.data_dim)
    return (side, side) if side * side == data.data_dim and data.is_binary else None


def make_figures(results_dir: str | Path) -> list[Path]:
    """Draw every figure a results directory supports; return the files written."""
    from elbogap.runs import load_run

    results_dir = Path(results_dir)
    path = results_dir / "results.json"
    if not path.is_file():
        raise UsageError(f"{path} does not exist; give a directory written by elbogap compare or train")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error}); rerun the study to rewrite it") from None
    from elbogap.report import finished, is_global_study

    results = {**results, "runs": finished(results.get("runs", []))}
    if not results["runs"]:
        raise UsageError(f"{path} holds no finished run yet; nothing to plot")
    if is_global_study(results["runs"]):
        from elbogap.global_latents.plots import make_figures as global_figures

        return global_figures(results, results_dir)
    written = [plot_training(results, results_dir / "training.png"), plot_gaps(results, results_dir / "gaps.png"),
               plot_gap_over_training(results, results_dir / "gap_over_training.png")]
    first_runs = list({run["guide"]: run for run in reversed(results["runs"])}.values())[::-1]
    fits, data = [], None
    for run in first_runs:
        run_dir = results_dir / run.get("run_dir", ".")
        if (run_dir / "checkpoint.pt").is_file():
            _, data, model, guide, _ = load_run(run_dir, device="cpu", data=data)  # one study, one data set
            # a user's program keeps parameters in Pyro's param store: each run's figures use its own
            fits.append((run["guide"], model, guide, pyro.get_param_store().get_state()))
    if not fits:
        return written
    torch.manual_seed(0)
    if fits[0][1].latent_dim == 2:
        written.append(plot_posteriors(fits, data.test[:4], results_dir / "posteriors.png"))
    shape = image_shape_of(data)
    if shape is not None:
        written.append(plot_images(fits, data.test[:10], shape, results_dir / "images.png"))
    return written
