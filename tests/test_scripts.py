"""Every script in scripts/ keeps running (a smoke test, as Pyro does for its examples)."""

from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPTS = Path(__file__).parents[1] / "scripts"


def load(name):
    return load_script(SCRIPTS / f"{name}.py")


def test_linear_identity_script_reports_the_identity():
    script = load("linear_identity")
    rows = script.main(script.parse_args(["--guides", "diag,exact", "--steps", "50"]))
    for row in rows:
        # the exact guide's ELBO has no noise (the KL's control variate): what is left is float32's rounding of
        # log p(x), about 1e-6 of a value near -20
        assert row["kl_gap"] == pytest.approx(row["kl_exact"], abs=5 * row["kl_gap_stderr"] + 1e-5)


@pytest.mark.slow  # about 50 s: three guides trained and evaluated; tests/test_api.py covers the API in CI
def test_notebook_compare_script_uses_only_the_api(tmp_path):
    script = load("notebook_compare")
    result = script.main(script.parse_args(["--steps", "30", "--out", str(tmp_path / "out"), "--no-figures"]))
    assert {row["guide"] for row in result.table()} == {"tutorial", "diag", "iaf"}
    assert result.runs[0]["test"]["log_px_method"] == "quadrature"


def test_the_cli_reference_is_what_help_says():
    """docs/cli.md is generated from the parser; editing a flag's help without regenerating it fails here."""
    script = load("cli_reference")
    assert script.REFERENCE.read_text() == script.reference(), "run python scripts/cli_reference.py"
    assert "--warm-start" in script.reference() and "prior-is" in script.reference()


def test_the_registry_reference_lists_every_family_and_estimator():
    """docs/registries.md is generated from the registries; a family or estimator file added without rerunning
    scripts/cli_reference.py fails here."""
    script = load("registry_reference")
    assert script.REFERENCE.read_text() == script.reference(), "run python scripts/cli_reference.py"
    assert "| `sylvester` |" in script.reference() and "| `prior-is` |" in script.reference()
