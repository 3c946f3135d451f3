"""Do two versions of elbogap give the same numbers? A fixed set of studies run on a base commit and on the working
tree, and their results.json compared number by number, timings aside.

    python benchmarks/same_numbers.py --base da7a2e0 [--studies default,linear-bdmc,...] [--keep DIR]

The base runs from a ``git worktree`` of that commit (its own code on ``PYTHONPATH``), the working tree from here;
each study is ``elbogap compare`` on the same flags, one process at a time. A number counts as the same where the two
agree to 1e-9 relative; keys that are timings, places or versions are left out (:data:`IGNORED`). Every difference
is printed with its path in results.json, so a refactor shows it changed nothing, and a change that means to move
numbers shows which moved; each study's seconds (training, gap phases, all phases), summed over its runs, are printed
side by side. Exit status 1 where any study differs.
"""

import argparse
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.per_point import two_sites  # noqa: E402
from elbogap.records import upgraded  # noqa: E402
from tests.test_programs import TUTORIAL_VAE  # noqa: E402
from tests.test_user_model import USER_MODEL  # noqa: E402

#: keys whose values differ from run to run however the numbers stand: timings, hosts, versions, paths
IGNORED = re.compile(r"seconds|^wall|^where$|^versions$|^elapsed|^out$|run_dir|^started|^host|^pid|^workers$"
                     r"|^model_from$|^path$|_path$|^total$")

#: paths of the training's trace (curves, convergence checks), listed after the other differences
TRACES = re.compile(r"\.curve(_eval)?\[|\.convergence\.(checks|levels)")

#: the studies of issue 28's list, by name: their flags (``{dir}`` is where the program files are written)
STUDIES = {
    "default": [],
    "linear-bdmc": ["--model", "linear", "--bdmc", "2"],
    "program-ais": ["--model", "{dir}/user_vae.py:model", "--log-px", "ais", "--ais-points", "20", "--steps", "500"],
    "tutorial-vae": ["--model", "{dir}/tutorial_vae.py:VAE", "--guides", "{dir}/tutorial_vae.py:VAE",
                     "--steps", "500"],
    "eight-schools": ["--model", "{dir}/eight_schools.py:model", "--data", "{dir}/eight_schools.csv"],
    # beyond the list: a user's program of 5 latents in two sites, where the q* refits are most of the time
    "program-refits": ["--model", "{dir}/two_sites.py:model", "--data", "{dir}/two_sites.csv", "--log-px", "iwae"],
}


def numbers(value, path: str = "") -> dict[str, float | str]:
    """Every leaf of ``value`` by its path (``runs[3].test.kl_gap``), ignored keys left out."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not IGNORED.search(str(key)):
                out.update(numbers(item, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(numbers(item, f"{path}[{i}]"))
        return out
    return {path: value}


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def differences(base: dict, head: dict) -> list[str]:
    """One line per leaf that differs, is missing on one side, or is new; both sides' runs read under today's names
    (:func:`~elbogap.records.upgraded`), so a base from before the one record schema compares number by number."""
    left, right = numbers(upgraded(base)), numbers(upgraded(head))
    lines = []
    for key in sorted(left.keys() | right.keys()):
        if key not in right:
            lines.append(f"  only in base: {key} = {left[key]!r}")
        elif key not in left:
            lines.append(f"  only in head: {key} = {right[key]!r}")
        elif not same(left[key], right[key]):
            lines.append(f"  {key}: {left[key]!r} -> {right[key]!r}")
    return lines


def write_inputs(folder: Path) -> None:
    """The studies' program and data files (eight schools from the example's own data)."""
    (folder / "user_vae.py").write_text(USER_MODEL)  # the tests' programs: a user's VAE, the tutorial's class
    (folder / "tutorial_vae.py").write_text(TUTORIAL_VAE)
    (folder / "eight_schools.py").write_text(
        "import pyro\nimport pyro.distributions as dist\n\n\ndef model(data):\n"
        "    mu = pyro.sample('mu', dist.Normal(data.new_tensor(0.0), 5.0))\n"
        "    tau = pyro.sample('tau', dist.HalfCauchy(data.new_tensor(5.0)))\n"
        "    with pyro.plate('schools', data.shape[0]):\n"
        "        theta = pyro.sample('theta', dist.Normal(mu, tau))\n"
        "        pyro.sample('y', dist.Normal(theta, data[:, 1]), obs=data[:, 0])\n")
    rows = [(28, 15), (8, 10), (-3, 16), (7, 11), (-1, 9), (1, 11), (18, 10), (12, 18)]
    (folder / "eight_schools.csv").write_text("".join(f"{y},{s}\n" for y, s in rows))
    (folder / "two_sites.py").write_text(inspect.getsource(two_sites))
    np.savetxt(folder / "two_sites.csv", two_sites.simulate(np.random.default_rng(0)), delimiter=",", fmt="%.10g")


def run_study(code: Path, flags: list[str], out: Path, inputs: Path) -> dict:
    """``elbogap compare`` with the package at ``code``; its results.json."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, "-c", "import sys; from elbogap.cli import main; sys.exit(main(sys.argv[1:]))",
               "compare", *[flag.format(dir=inputs) for flag in flags], "--out", str(out), "-q"]
    done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{out.name}: elbogap compare failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads((out / "results.json").read_text())


def phase_seconds(results: dict) -> dict[str, float]:
    """Seconds summed over the runs: training, the gap phases (the q* refits and their ELBOs), and every phase."""
    phases = [run["seconds"] for run in results["runs"]]
    return {"training": sum(p.get("train", 0.0) for p in phases),
            "gaps": sum(value for p in phases for key, value in p.items() if key.startswith("gaps_")),
            "all": sum(sum(p.values()) for p in phases)}


def main(args) -> int:
    folder = Path(args.keep or tempfile.mkdtemp(prefix="same-numbers-"))
    folder.mkdir(parents=True, exist_ok=True)
    write_inputs(folder)
    base = folder / "base-code"
    wanted = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    if base.exists() and subprocess.run(["git", "rev-parse", "HEAD"], cwd=base, capture_output=True,
                                        text=True).stdout.strip() != wanted:  # a kept worktree of another base
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=True, capture_output=True)
    if not base.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(base), wanted], cwd=ROOT, check=True,
                       capture_output=True)
    status = 0
    try:
        for name in args.studies:
            results = {side: run_study(code, STUDIES[name], folder / f"{name}-{side}", folder)
                       for side, code in (("base", base), ("head", ROOT))}
            lines = differences(results["base"], results["head"])
            traces = [line for line in lines if TRACES.search(line)]  # the training's path, after the headline
            lines = [line for line in lines if not TRACES.search(line)] + traces
            print(f"{name}: {'the same numbers' if not lines else f'{len(lines)} differences'}"
                  + (f" ({len(traces)} of them in training curves and convergence checks)" if traces else ""))
            print("\n".join(lines[:args.show]) + (f"\n  ... {len(lines) - args.show} more" if len(lines) > args.show
                                                  else ""), flush=True)
            status |= bool(lines)
            before, after = phase_seconds(results["base"]), phase_seconds(results["head"])
            print("  seconds summed over the runs, base -> head: " + ", ".join(
                f"{phase} {before[phase]:.1f} -> {after[phase]:.1f}" for phase in before), flush=True)
    finally:
        if not args.keep:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. main)")
    parser.add_argument("--studies", type=lambda text: text.split(","), default=list(STUDIES))
    parser.add_argument("--keep", help="a folder to keep the inputs, the base's worktree and the results in")
    parser.add_argument("--show", type=int, default=40, help="differences printed per study")
    sys.exit(main(parser.parse_args()))
