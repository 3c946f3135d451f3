"""docs/registries.md, the reference of every family and estimator, from the registries themselves.

``python scripts/cli_reference.py`` writes it beside docs/cli.md (``--check``: exit 1 where either differs), and
``tests/test_scripts.py`` runs the check: a family or estimator added as a file is listed here once that is rerun.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap.global_latents.autoguides import AUTOGUIDES  # noqa: E402
from elbogap.guides import families  # noqa: E402
from elbogap.inference.log_px import methods  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "registries.md"


def first_line(doc: str | None) -> str:
    """The first line of a docstring as a table cell, its reST math and cross-references as Markdown."""
    line = (doc or "").strip().splitlines()[0] if doc else ""
    line = re.sub(r":math:`([^`]*)`", r"$\1$", line)
    line = re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"`\1`", line)
    return line.replace("|", "\\|")


class Field(str):
    """A template field shown by its name (``{ais[chains]}`` as *chains*), for a description's template."""

    def __getitem__(self, key):
        return Field(key)

    def __format__(self, spec):
        return f"*{str.__str__(self)}*"


def template(description: str) -> str:
    """A description template with each field shown by its name."""
    return description.format_map({name: Field(name) for name in re.findall(r"\{(\w+)", description)})


def yes(flag) -> str:
    return "yes" if flag else "no"


def family_rows() -> list[str]:
    rows = ["| `--guides` | class | amortized | q* search exact | pathwise gradient exact | density anywhere | "
            "closed-form density | compiled loss | what it is |", "|---|---|---|---|---|---|---|---|---|"]
    for name, cls in families().items():
        rows.append(f"| `{name}` | `{cls.__module__}.{cls.__qualname__}` | {yes(cls.amortized)} | "
                    f"{yes(cls.exact_optimum)} | {yes(cls.exact_pathwise)} | {yes(cls.density_anywhere)} | "
                    f"{yes(cls.density_anywhere and cls.closed_form_density)} | {yes(cls.jit_compatible)} | "
                    f"{first_line(cls.__doc__)} |")
    return rows


def autoguide_rows() -> list[str]:
    rows = ["| `--guides` | in the default study | has a density | seeds stack | starts at the mean-field fit | "
            "contains | first learning rate |", "|---|---|---|---|---|---|---|"]
    for family in AUTOGUIDES.values():
        contains = ", ".join(f"`auto:{name}`" for name in family.contains) or "-"
        default = yes(family.default) + (f" (up to {family.default_up_to:,} latents)" if family.default_up_to else "")
        rows.append(f"| `{family.spec}` | {default} | {yes(not family.no_density)} | {yes(family.stacks)} "
                    f"| {yes(family.starts_at_mean_field)} | {contains} | {family.lr or 'the kind default'} |")
    return rows


def estimator_rows() -> list[str]:
    rows = ["| `--log-px` | same for every guide | needs | how results.md states it |", "|---|---|---|---|"]
    for name, method in methods().items():
        needs = method.requirement or "any model"
        rows.append(f"| `{name}` | {yes(method.guide_independent)} | {needs} | {template(method.description)} |")
    return rows


def reference() -> str:
    parts = ["# Families and estimators", "",
             "Generated from the registries by `python scripts/cli_reference.py` (with docs/cli.md); a test fails "
             "where it drifts.",
             "A family is a module of `elbogap/guides/` that registers its class with `@family(name)`; an estimator "
             "is a module of `elbogap/estimators/` that calls `register` (docs/estimators.md). Adding either is "
             "adding that one file.", "",
             "## Families of elbogap (`--guides NAME`, models with per-point latents)", "",
             "Capability flags, as the class declares them: *amortized* (one encoder for every point, else "
             "parameters per point), *q\\* search exact* (the approximation gap's refit ranges over the whole "
             "family; else it is an upper bound), *pathwise gradient exact* (the reparameterized gradient is "
             "unbiased for every function of z), *density anywhere* (q can be evaluated at any z, not only its "
             "own draws), *closed-form density* (q at any z with no flow to invert: its q* refit sticks the landing), "
             "*compiled loss* (Pyro's JIT can trace it).", "",
             *family_rows(), "",
             "## Pyro's autoguides (`--guides auto:NAME`)", "",
             "Models with global latents compare these by default (the rows marked in the default study); "
             "`auto:AutoNormal` also serves per-point latents, fitted per point. The table is "
             "`elbogap/global_latents/autoguides.py`.", "",
             *autoguide_rows(), "",
             "## Estimators of log p(x) (`--log-px NAME`)", "",
             "`auto` chooses the first of `exact`, `quadrature` that applies, else IWAE on every point and AIS on "
             "a subset. Models with global latents estimate log p(D) by AIS from a fitted reference unless "
             "`--log-px` names a registered estimator that applies to them.", "",
             *estimator_rows(), ""]
    return "\n".join(parts)

