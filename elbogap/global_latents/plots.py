"""Figures of the whole data set's metrics (log p(D), the ELBO of D, q's draws against the reference posterior), as a
model with global latents records them: training, gaps, evidence, marginals. :data:`elbogap.plots.FIGURES` draws each
where the records hold its metrics."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from elbogap.checkpoint import load_checkpoint  # noqa: E402
from elbogap.figure_tools import by_guide, mark_convergence, save  # noqa: E402
from elbogap.inference.weights import interval_halfwidth  # noqa: E402

#: global latent elements drawn in marginals.png (the first ones, site after site)
MARGINALS = 6


def _elements(run: dict) -> list[tuple[str, int]]:
    sites = run["sites"]["global"] or run["sites"]["local"]
    return [(site, i) for site in sites for i in range(min(len(run["q_moments"][site]["mean"]), MARGINALS))][:MARGINALS]


def plot_marginals(results: dict, path: Path) -> Path | None:
    """One row per global latent element, one column per guide: q's draws (each run's ``draws.pt`` beside ``path``)
    against the reference posterior's; None where no run saved draws."""
    results_dir = path.parent
    firsts = {guide: runs[0] for guide, runs in by_guide(results["runs"]).items()}
    draws = {}
    for guide, run in firsts.items():
        file = results_dir / run.get("run_dir", ".") / "draws.pt"
        if file.is_file():
            draws[guide] = load_checkpoint(file)
    if not draws:
        return None
    elements = _elements(next(iter(firsts.values())))
    fig, axes = plt.subplots(len(elements), len(draws), figsize=(max(2.8 * len(draws), 5), 1.9 * len(elements)),
                             squeeze=False)
    for column, (guide, state) in enumerate(draws.items()):
        for row, (site, i) in enumerate(elements):
            axis = axes[row, column]
            q = state["q"][site][:, i].double()
            reference = state.get("reference", {}).get(site)
            low, high = torch.quantile(q, torch.tensor([0.005, 0.995], dtype=torch.float64)).tolist()
            if reference is not None:  # the reference's bulk, from its (weighted) moments: AIS states may be few
                weights = state.get("reference_weights")
                r = reference[:, i].double()
                w = torch.full_like(r, 1 / len(r)) if weights is None else weights.double()
                mean = float((w * r).sum())
                sd = float((w * (r - mean).pow(2)).sum().sqrt())
                low, high = min(low, mean - 3.5 * sd), max(high, mean + 3.5 * sd)
                low = max(low, min(float(q.min()), float(r.min())))  # not past the support's edge
                high = min(high, max(float(q.max()), float(r.max())))
            bins = torch.linspace(low, high if high > low else low + 1, 40).tolist()
            if reference is not None:
                weights = state.get("reference_weights")
                axis.hist(reference[:, i].double().numpy(), bins=bins, density=True, color="0.7",
                          weights=None if weights is None else weights.double().numpy(), label="reference")
            axis.hist(q.numpy(), bins=bins, density=True, histtype="step", lw=1.5, color="tab:red", label="q")
            axis.set_yticks([])
            if row == 0:
                axis.set_title(guide, fontsize=9)
            if column == 0:
                axis.set_ylabel(f"{site}[{i}]", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    method = next((run["reference"]["method"] for run in firsts.values() if "reference" in run), None)
    fig.suptitle("q (red) against the reference posterior (grey" + (f", {method}" if method else ", none") + ")",
                 fontsize=10)
    return save(fig, path)


def plot_gaps(results: dict, path: Path) -> Path:
    """KL gap per guide: mean over seeds, the Monte-Carlo standard error as the error bar, seeds as dots."""
    groups = by_guide(results["runs"])
    fig, axis = plt.subplots(figsize=(1.4 * len(groups) + 3, 4))
    for i, runs in enumerate(groups.values()):
        gaps = torch.tensor([run["train"]["kl_gap"] for run in runs], dtype=torch.float64)
        stderr = float(torch.tensor([run["train"]["kl_gap_stderr"] for run in runs]).pow(2).mean().sqrt())
        axis.bar(i, float(gaps.mean()), 0.6, yerr=stderr, capsize=4, color="tab:blue", alpha=0.8)
        axis.plot([i] * len(gaps), gaps.numpy(), "k.", ms=5)
    axis.set_xticks(range(len(groups)), list(groups), rotation=20, fontsize=8)
    axis.set(ylabel="KL gap = log p(D) - ELBO(D) (nats)",
             title="KL(q || p(θ, z | D)) per guide\n(log p(D) by AIS; bars: mean over seeds ± MC s.e.; dots: seeds)")
    axis.grid(axis="y", alpha=0.3)
    return save(fig, path)


def plot_evidence(results: dict, path: Path) -> Path:
    """The evidence estimates side by side: AIS, each guide's ELBO and importance estimate, BDMC bounds."""
    runs = results["runs"]
    bdmc = [run["bdmc"] for run in runs if "bdmc" in run]
    fig, axes = plt.subplots(1, 2 if bdmc else 1, figsize=(11 if bdmc else 7, 4), squeeze=False)
    axis = axes[0, 0]
    groups = by_guide(runs)
    for i, mine in enumerate(groups.values()):
        for run in mine:
            data = run["train"]
            axis.errorbar(i - 0.15, data["elbo"], yerr=interval_halfwidth(data["elbo_stderr"], None), fmt="o",
                          color="tab:blue", label="ELBO(D)" if i == 0 and run is mine[0] else None)
            axis.errorbar(i + 0.15, data["log_px_iwae"],
                          yerr=interval_halfwidth(data["log_px_iwae_stderr"], data.get("log_px_iwae_dof")),
                          fmt="s", color="tab:green", label="q's IS estimate" if i == 0 and run is mine[0] else None)
    for seed in dict.fromkeys(run["seed"] for run in runs):
        data = next(run["train"] for run in runs if run["seed"] == seed)
        axis.axhline(data["log_px"], color="k", lw=1)
        halfwidth = interval_halfwidth(data["log_px_stderr"], data.get("log_px_dof"))
        axis.axhspan(data["log_px"] - halfwidth, data["log_px"] + halfwidth, color="k", alpha=0.1)
    axis.plot([], [], "k-", label="log p(D), AIS (Monte-Carlo 95% interval; its bias not in it)")
    axis.set_xticks(range(len(groups)), list(groups), rotation=20, fontsize=8)
    axis.set(ylabel="nats", title="evidence of D: AIS, and each guide's bounds (Monte-Carlo 95% intervals)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    if bdmc:
        axis = axes[0, 1]
        for i, summary in enumerate(bdmc):
            lower, upper = summary["per_dataset"]["lower"], summary["per_dataset"]["upper"]
            for j, (low, high) in enumerate(zip(lower, upper, strict=True)):
                axis.plot([i * (len(lower) + 1) + j] * 2, [low, high], "-", color="tab:purple")
                axis.plot(i * (len(lower) + 1) + j, low, "^", color="tab:blue", ms=4)
                axis.plot(i * (len(lower) + 1) + j, high, "v", color="tab:red", ms=4)
        axis.set(xlabel="simulated data set (runs side by side)", ylabel="log p(D*)",
                 title="BDMC: forward AIS (▲ lower) and reverse AIS (▼ upper)")
        axis.grid(alpha=0.3)
    return save(fig, path)


def plot_training(results: dict, path: Path) -> Path:
    """The running training ELBO per data point of every run, and the ELBO of D at evaluation points."""
    fig, axis = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (guide, runs) in enumerate(by_guide(results["runs"]).items()):
        for j, run in enumerate(runs):
            if run["curve"]:
                steps, elbo = zip(*run["curve"], strict=True)
                axis.plot(steps, elbo, color=colors[i % len(colors)], alpha=0.6, lw=1, label=guide if j == 0 else None)
            points = [p for p in run.get("curve_eval", []) if "train_elbo" in p]
            axis.plot([p["step"] for p in points], [p["train_elbo"] for p in points], "o",
                      color=colors[i % len(colors)], ms=3)
        axis.axhline(runs[0]["train"]["log_px_per_point"], color="k", lw=1, ls="--")
    values = [value for run in results["runs"] for _, value in run["curve"]]
    if values:
        top = max(values + [results["runs"][0]["train"]["log_px_per_point"]])
        floor = sorted(values)[len(values) // 10]
        axis.set_ylim(floor - 0.2 * (top - floor + 1e-9), top + 0.1 * (top - floor + 1e-9))
    mark_convergence(axis, results["runs"])
    axis.set(xlabel="SVI step", ylabel="nats per data point",
             title="ELBO over training; dashed: log p(D) per point (AIS); ✕: not converged")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return save(fig, path)
