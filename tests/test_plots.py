"""Figures drawn from a study's records."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from elbogap import plots
from elbogap.checkpoint import load_checkpoint
from elbogap.figure_data import FILE, GRID_SIZE, POSTERIOR_POINTS, Q_DRAWS
from tests.test_report import results, with_snr


def test_gaps_figure_draws_the_approximation_and_amortization_gaps_with_error_bars(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "save", lambda fig, path: fig)  # keep the figure open to read it
    fig = plots.plot_gaps(results((0,), approx_gap_bound="upper"), tmp_path / "gaps.png")
    kl_axis, split_axis = fig.axes
    bars = [container for container in split_axis.containers if hasattr(container, "errorbar")]
    assert [bar.get_label() for bar in bars] == ["approximation gap", "amortization gap"]
    assert [bar.patches[0].get_height() for bar in bars] == pytest.approx([0.5, 11.5])
    for bar in bars:  # one seed: the bar's error is the run's Monte-Carlo standard error, 0.1
        (segments,) = bar.errorbar.lines[2]
        (_, low), (_, high) = segments.get_segments()[0]
        assert high - low == pytest.approx(0.2)
    assert split_axis.get_xticklabels()[0].get_text() == "≤ diag"
    plt.close(fig)


def test_the_training_figure_draws_the_gradient_snr_per_guide_on_a_log_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "save", lambda fig, path: fig)
    fig = plots.plot_training(with_snr(results((0, 1))), tmp_path / "training.png")
    snr_axis = fig.axes[2]
    assert snr_axis.get_yscale() == "log"
    encoder, decoder = snr_axis.get_lines()  # one line per guide and group: the mean over seeds
    assert (encoder.get_label(), decoder.get_label()) == ("diag encoder", "diag decoder")
    assert list(encoder.get_xdata()) == [10, 20] and list(encoder.get_ydata()) == pytest.approx([1.0, 1.0])
    assert list(decoder.get_ydata()) == pytest.approx([4.0, 4.0])
    plt.close(fig)
    plain = results((0,))
    plain["runs"][0]["curve"] = [[10, -40.0]]
    assert len(plots.plot_training(plain, tmp_path / "plain.png").axes) == 2  # --snr-draws 0: no third panel
    plt.close("all")


def test_figures_are_drawn_from_saved_figure_data_without_any_model(tmp_path):
    """A per-point study's posteriors.png and images.png come from each run's figures.pt: with every checkpoint
    deleted, drawing still works; the true posterior saved on its grid is a normalized density there."""
    import elbogap

    result = elbogap.compare("vae", ["diag", "local"], "digits", out=tmp_path, seeds=[0], steps=20, train_size=100,
                             test_size=12, gap_points=0, jobs=1, figures=False, snr_draws=0)
    for run in result.runs:
        (tmp_path / run["run_dir"] / "checkpoint.pt").unlink()
    written = {path.name for path in plots.make_figures(tmp_path)}
    assert {"posteriors.png", "images.png"} <= written
    saved = load_checkpoint(tmp_path / result.runs[1]["run_dir"] / FILE)  # the per-datapoint family, fitted per point
    panels = saved["posteriors"]["panels"]
    assert len(panels) == POSTERIOR_POINTS and all("log_q" in panel for panel in panels)
    for panel in panels:
        grid = panel["grid"]
        cell = float((grid[1, 0, 0] - grid[0, 0, 0]) * (grid[0, 1, 1] - grid[0, 0, 1]))
        assert float(panel["log_posterior"].exp().sum()) * cell == pytest.approx(1.0, rel=1e-5)  # over the grid's cells
    assert "reconstruction" not in saved["images"]  # no encoder to reconstruct the test images with
    amortized = load_checkpoint(tmp_path / result.runs[0]["run_dir"] / FILE)["images"]
    assert amortized["reconstruction"].shape == amortized["data"].shape == (10, 64)


GAMMA_POISSON = '''
import pyro
import pyro.distributions as dist


def model(x):
    with pyro.plate("data", x.shape[0]):
        rate = pyro.sample("rate", dist.Gamma(x.new_tensor(2.0), 1.0))
        pyro.sample("x", dist.Poisson(rate.unsqueeze(-1)).to_event(1), obs=x)
'''


def test_one_latent_per_point_gets_its_posterior_on_a_line_against_q(tmp_path, elbogap):
    """A Gamma rate per point: each panel holds the true posterior on a line of points, a normalized density there
    (of the log rate, the real line the guides fit), and q's density on it (diag) or q's draws (a flow)."""
    (tmp_path / "gp.py").write_text(GAMMA_POISSON)
    counts = np.random.default_rng(0).poisson(np.random.default_rng(1).gamma(2.0, 1.0, (60, 1)), (60, 5))
    np.save(tmp_path / "counts.npy", counts.astype("float32"))
    out = tmp_path / "out"
    code, err = elbogap("compare", "--model", f"{tmp_path}/gp.py:model", "--data", tmp_path / "counts.npy",
                        "--guides", "diag,sylvester", "--seeds", "0", "--steps", "200", "--jobs", "1",
                        "--gap-points", "0", "--snr-draws", "0", "--quiet", "--out", out)
    assert code == 0, err
    assert (out / "posteriors.png").is_file()
    runs = {run["guide"]: run for run in json.loads((out / "results.json").read_text())["runs"]}
    diag, flow = (load_checkpoint(out / runs[name]["run_dir"] / FILE)["posteriors"] for name in ("diag", "sylvester"))
    assert diag["constrained"] == ["rate"] and len(diag["panels"]) == POSTERIOR_POINTS
    for panel in diag["panels"]:
        line = panel["grid"][:, 0]
        assert panel["grid"].shape == (GRID_SIZE, 1) and panel["log_posterior"].shape == panel["log_q"].shape
        cell = float(line[1] - line[0])
        assert float(panel["log_posterior"].exp().sum()) * cell == pytest.approx(1.0, rel=1e-5)
        assert float(panel["log_q"].exp().sum()) * cell == pytest.approx(1.0, rel=0.05)  # q's mass lies on the line
    assert all(panel["q_draws"].shape == (Q_DRAWS, 1) for panel in flow["panels"])


def test_q_contours_are_drawn_only_where_q_has_mass():
    """A tester's full and exact guides: float32 log q down to -163 underflows to 0 in the corners, and a contour
    level at 0 drew red lines there, where q has no mass. Every level now lies above 0, as a share of q's peak."""
    axis_values = torch.linspace(-4, 4, 41)
    grid = torch.stack(torch.meshgrid(axis_values, axis_values, indexing="ij"), -1)
    log_q = (-10.0 * grid.pow(2).sum(-1)).float()  # about -320 in the corners: exp() is 0 in float32
    figure, axis = plt.subplots()
    plots._posterior_panel(axis, {"grid": grid, "log_posterior": -0.5 * grid.pow(2).sum(-1), "log_q": log_q})
    drawn = axis.collections[-1]
    assert min(drawn.levels) > 0 and max(drawn.levels) < 1
    plt.close(figure)


def test_each_figure_is_drawn_where_the_records_hold_its_metrics(tmp_path):
    """No figure is chosen by the kind of model (``plots.FIGURES``): a study whose runs were not evaluated during
    training draws no gap-over-training figure (it drew empty panels before), one evaluated so draws it, and records
    of the whole data set as one unit get the evidence figure and their own gaps and training figures."""
    def drawn(study, name):
        out = tmp_path / name
        out.mkdir()
        (out / "results.json").write_text(json.dumps(study))
        return sorted(path.name for path in plots.make_figures(out))

    points = results((0,))
    points["runs"][0]["curve"] = [[10, -40.0]]
    assert drawn(points, "points") == ["gaps.png", "training.png"]
    assert drawn(with_snr(results((0, 1))), "curve") == ["gap_over_training.png", "gaps.png", "training.png"]
    whole = {"rows": 30, "units": 1, "num_points": 30, "log_px": -40.0, "log_px_stderr": 0.01, "elbo": -41.0,
             "elbo_stderr": 0.02, "kl_gap": 1.0, "kl_gap_stderr": 0.02, "log_px_iwae": -40.1,
             "log_px_iwae_stderr": 0.03, "log_px_per_point": -40.0 / 30}
    study = results((0,))  # with --holdout: its test split holds the held-out rows' predictive density, no ELBO
    held_out = {"num_points": 5, "log_predictive": -3.0, "log_predictive_stderr": 0.01, "log_predictive_method": "ais"}
    study["runs"][0].update(train=whole, test=held_out, curve=[[10, -1.4]])
    assert drawn(study, "whole") == ["evidence.png", "gaps.png", "training.png"]
