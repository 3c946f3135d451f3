"""What every figure module shares: matplotlib without a display, runs grouped by guide, a PNG written and freed,
and the mark of a fit that did not converge."""

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from elbogap.records import cannot_tell  # noqa: E402


def save(fig, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def by_guide(runs: list[dict]) -> dict[str, list[dict]]:
    """The runs by guide, in the order the guides first appear."""
    groups = defaultdict(list)
    for run in runs:
        groups[run["guide"]].append(run)
    return groups


def mark_convergence(axis, runs: list[dict]) -> None:
    """A red cross at the end of each run's training curve whose fit did not converge (``run["converged"]``), and an
    orange ring where its rule could not tell (``converged`` None after a judged gain)."""
    labelled = set()
    for run in runs:
        unclear = cannot_tell(run)
        if (run.get("converged") is False or unclear) and run.get("curve"):
            step, elbo = run["curve"][-1]
            label = "convergence unclear" if unclear else "not converged"
            style = dict(marker="o", color="orange", mfc="none") if unclear else dict(marker="x", color="red")
            axis.plot([step], [elbo], linestyle="none", ms=10, mew=2, label=None if label in labelled else label,
                      **style)
            labelled.add(label)
