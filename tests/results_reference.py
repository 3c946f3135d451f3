"""Which keys of a results.json its reference, docs/results.md, leaves out: the records' fields, checked against
the runs the end-to-end tests write, so that a key added to a record without a line in the reference fails them."""

import re
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "results.md"
#: the parts of a run record whose own keys the reference lists
PARTS = ("train", "test", "convergence", "evidence", "reference")


def documented() -> set[str]:
    """Every name the reference writes as code (in backticks)."""
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", REFERENCE.read_text()))


def undocumented(results: dict) -> set[str]:
    """The keys of ``results`` (top level, each run, and each run's :data:`PARTS`) that the reference lacks, each
    named by where it sits (``run.KEY``, ``run.PART.KEY``)."""
    names = documented()
    missing = {key for key in results if key not in names}
    for run in results["runs"]:
        missing |= {f"run.{key}" for key in run if key not in names}
        for part in PARTS:
            if isinstance(run.get(part), dict):
                missing |= {f"run.{part}.{key}" for key in run[part] if key not in names}
    return missing
