"""Figures drawn from a study's records."""

import matplotlib.pyplot as plt
import pytest

from elbogap import plots
from tests.test_report import results


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
