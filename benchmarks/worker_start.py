"""How long local worker processes (``--jobs``) take to be ready for their first run: spawned, each importing torch,
Pyro and elbogap itself, against forked from a server that imported them once (:func:`elbogap.backends.worker_context`).

    python benchmarks/worker_start.py [--workers 2,4] [--repeats 3]

Each measurement runs in a fresh interpreter (no server left from an earlier one), from the context's creation to
every worker's report that it has imported the training stack and built a torch optimizer, as a run's first step
does; then the same again from that interpreter, as a notebook's second study starts its workers (the server is
still there). The two ways alternate, side by side.
"""

import argparse
import json
import statistics
import subprocess
import sys

ONE = """
import json, sys, time
import multiprocessing
from benchmarks.worker_start import ready
from elbogap.backends import worker_context
way, workers = sys.argv[1], int(sys.argv[2])
rounds = []
for _ in range(2):  # a command's workers, then a second study's from the same process (a notebook's)
    started = time.perf_counter()
    context = worker_context() if way == "forkserver" else multiprocessing.get_context("spawn")
    reports = context.Queue()
    processes = [context.Process(target=ready, args=(reports,)) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:
        reports.get()
    rounds.append(time.perf_counter() - started)
    for process in processes:
        process.join()
print(json.dumps(rounds))
"""


def ready(reports) -> None:
    """A worker: what a run needs before its first step (the training stack, an optimizer), then report."""
    import torch

    import elbogap.runs  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    reports.put(True)


def measure(way: str, workers: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", ONE, way, str(workers)], capture_output=True, text=True, check=True,
                         cwd=sys.path[0] + "/..")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| workers | study | spawned: s until all ready (median) | forked from the server: s (median) | ratio |")
    print("|---|---|---|---|---|")
    for workers in (int(count) for count in args.workers.split(",")):
        times = {"spawn": [], "forkserver": []}
        for _ in range(args.repeats):
            for way in times:
                times[way].append(measure(way, workers))
        for study, name in enumerate(("first", "second, same process")):
            spawn = statistics.median(rounds[study] for rounds in times["spawn"])
            fork = statistics.median(rounds[study] for rounds in times["forkserver"])
            print(f"| {workers} | {name} | {spawn:.2f} | {fork:.2f} | {spawn / fork:.1f}x |")


if __name__ == "__main__":
    main()
