"""Figures drawn from a study's records."""

import matplotlib.pyplot as plt
import pytest

from elbogap import plots
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
