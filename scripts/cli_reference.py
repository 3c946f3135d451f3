"""Write docs/cli.md, the command-line reference, from the parser itself (``--help`` of every command).

    python scripts/cli_reference.py          # rewrite docs/cli.md
    python scripts/cli_reference.py --check  # exit 1 where docs/cli.md differs from what --help says now

``tests/test_scripts.py`` runs the check, so the reference cannot drift from ``--help``.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    text = reference()
    if args.check:
        if not REFERENCE.is_file() or REFERENCE.read_text() != text:
            print(f"{REFERENCE} differs from --help: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    sys.exit(main(parser.parse_args()))
