"""Write the generated references: docs/cli.md from the parser itself (``--help`` of every command), and
docs/registries.md from the registries of families and estimators (:mod:`registry_reference`).

    python scripts/cli_reference.py          # rewrite both
    python scripts/cli_reference.py --check  # exit 1 where either differs from what the code says now

``tests/test_scripts.py`` runs the check, so neither reference can drift.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # registry_reference beside it, however this is loaded

import registry_reference  # noqa: E402

from elbogap.cli import build_parser  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
#: the width the help text is wrapped to, whatever the terminal that runs this
WIDTH = "100"


def reference() -> str:
    """The reference's text: the top-level help, then each command's."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps to the terminal's width, read from here
    try:
        parser = build_parser()
        commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        parts = ["# Command-line reference", "",
                 "Generated from `--help` by `python scripts/cli_reference.py`; a test fails where it drifts.", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        for name, command in commands.choices.items():
            parts += [f"## elbogap {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def main(args) -> int:
    generated = {REFERENCE: reference(), registry_reference.REFERENCE: registry_reference.reference()}
    if args.check:
        stale = [str(path) for path, text in generated.items() if not path.is_file() or path.read_text() != text]
        if stale:
            print(f"{', '.join(stale)} differ(s) from the code: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    for path, text in generated.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    sys.exit(main(parser.parse_args()))
