"""Imports go one way: no module of elbogap reaches itself through its imports (those inside functions, and the
packages an import runs first, included); the run lifecycle sits below the backends that execute it; ``import elbogap``
is light."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "elbogap"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict) -> set[str]:
    """The package's modules ``name`` imports anywhere in its body, functions included; not those under
    ``if TYPE_CHECKING:``, which never run. ``from a import b`` is module ``a.b`` where that exists, else ``a``."""
    tree = ast.parse(path.read_text())
    unrun = {id(node) for block in ast.walk(tree)
             if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
             for statement in block.body for node in ast.walk(statement)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    targets = set()
    for node in ast.walk(tree):
        if id(node) in unrun:
            continue
        if isinstance(node, ast.Import):
            targets |= {owner(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else owner(base)
                        for alias in node.names}
    return targets - {None, name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm; written here: the
    standard library has none)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in order:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def packages_of(name: str, known: dict) -> set[str]:
    """The packages whose ``__init__`` Python runs before it runs ``name``: ``a`` and ``a.b`` for ``a.b.c``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(known)


def import_graph() -> dict[str, set[str]]:
    """Each module's imports, with the packages each import runs first (not its own, which are running already)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = imported(name, path, known)
        graph[name] = targets.union(*(packages_of(t, known) for t in targets)) - packages_of(name, known) - {name}
    return graph


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert sum(map(len, graph.values())) > 100  # the walk sees the package's imports
    assert "elbogap.inference" in graph["elbogap.model.target"]  # its import of inference.log_joint runs that first
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from elbogap import sweep\n\nif TYPE_CHECKING:\n    import elbogap.runs\n")
    assert imported("elbogap.m", module, modules()) == {"elbogap.sweep"}


def test_import_elbogap_loads_nothing_else_until_its_api_is_used():
    code = ("import sys, elbogap; first = sorted(m for m in sys.modules if m.startswith('elbogap')); "
            "elbogap.compare; print(first, 'elbogap.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['elbogap'] True"


def reachable_from(name: str) -> set[str]:
    known = modules()
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        for target in imported(current, known[current], known) - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_run_lifecycle_imports_no_backend_and_nothing_that_imports_it_back():
    below = reachable_from("elbogap.runs")
    assert "elbogap.sweep" in reachable_from("elbogap.api")  # the walk follows chains
    assert not {name for name in below if name.startswith("elbogap.backends")}
    assert "elbogap.runs" not in below and "elbogap.sweep" not in below


def test_importing_a_backend_task_does_not_import_the_run_lifecycle():
    code = "import sys, elbogap.backends.task; print('elbogap.runs' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "False"
