"""A module of elbogap as it was at an earlier commit, loaded beside today's, for side-by-side benchmarks."""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path


def former_module(commit: str, path: str):
    """The module at ``path`` (``elbogap/inference/laplace.py``) as ``commit`` had it, imported as
    ``former_<name>``; its own imports of elbogap resolve to today's package."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[1]).stdout
    name = f"former_{Path(path).stem}"
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
