"""Wall time of the default ``elbogap compare`` on each backend, side by side in one session.

    python benchmarks/sweep.py [--steps N] [EXTRA COMPARE FLAGS...]

Runs the README's first command three times, each as a fresh process: ``--jobs 1`` (one run at a
time in the command's own process), ``--jobs 2`` (two worker processes) and ``--backend ray`` on a
Ray head started here with ``ray start --head --num-cpus 2`` (one CPU per task), then prints one
table: wall time, training summed over runs, the runs' phases summed, and how far each run's test
KL gap is from the ``--jobs 1`` run with the same guide and seed.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "--jobs 1": ["--jobs", "1"],
    "--jobs 2": ["--jobs", "2"],
    "Ray, 2 CPUs (ray start --head --num-cpus 2)": ["--backend", "ray", "--ray-address", "auto"],
}


def compare(flags: list, out: Path, extra: list) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "elbogap", "compare", "--quiet", "--out", str(out), *flags, *extra],
                   check=True)
    return time.perf_counter() - start


def gaps(out: Path) -> dict:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {(run["guide"], run["seed"]): run["test"]["kl_gap"] for run in runs}


def summed(out: Path, phase: str) -> float:
    return sum(run["seconds"].get(phase, 0.0) for run in json.loads((out / "results.json").read_text())["runs"])


def main(extra: list) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        reference = None
        for name, flags in VARIANTS.items():
            out = Path(root) / f"out{len(rows)}"
            ray = "--backend" in flags
            if ray:
                subprocess.run(["ray", "start", "--head", "--num-cpus", "2", "--include-dashboard=false"],
                               check=True, capture_output=True)
            try:
                wall = compare(flags, out, extra)
            finally:
                if ray:
                    subprocess.run(["ray", "stop", "--force"], check=False, capture_output=True)
            these = gaps(out)
            reference = reference or these
            differences = [abs(these[key] - reference[key]) for key in reference]
            same = sum(difference == 0.0 for difference in differences)
            rest = sum(summed(out, phase) for phase in ("curve_evaluations", "checkpoints", "evaluate_train",
                                                        "gaps_train", "evaluate_test", "gaps_test"))
            rows.append(f"| {name} | {wall:.0f} s | {summed(out, 'train'):.0f} s | {rest:.0f} s | "
                        f"{same} of {len(differences)} bitwise; largest difference {max(differences):.3g} |")
            print(rows[-1], flush=True)
    print("\n| backend | wall | training (summed) | evaluation and gaps (summed) | test KL gaps vs --jobs 1 |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
