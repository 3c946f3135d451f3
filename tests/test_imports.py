"""The import graph: the run lifecycle sits below the backends that execute it, never beside them in a circle."""

import ast
import subprocess
import sys
from pathlib import Path

import elbogap

PACKAGE = Path(elbogap.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_by(name: str) -> set[str]:
    """The elbogap modules ``name`` imports anywhere in its file (lazy imports too), with the packages they sit in."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("elbogap."):
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("elbogap.")}
    with_packages = {".".join(target.split(".")[:end]) for target in found for end in range(2, target.count(".") + 2)}
    return {target for target in with_packages if target in MODULES and target != name}


def reachable_from(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for target in imported_by(todo.pop()) - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_run_lifecycle_imports_no_backend_and_nothing_that_imports_it_back():
    below = reachable_from("elbogap.runs")
    assert not {name for name in below if name.startswith("elbogap.backends")}
    assert "elbogap.runs" not in below and "elbogap.sweep" not in below


def test_importing_a_backend_task_does_not_import_the_run_lifecycle():
    code = "import sys, elbogap.backends.task; print('elbogap.runs' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "False"
