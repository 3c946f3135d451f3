"""Peak memory and time of evaluating N training points of the reference 784-400-50 model.

    python benchmarks/eval_memory.py 3000 12000 60000

Each N runs in a fresh process: an untrained VAE with the diag guide on statically binarized
Fashion-MNIST, evaluated with the default --eval-samples 256 and --iw-samples 1000 (IWAE on every
point). Memory is read from /proc/self/status: VmRSS once the data are loaded, then VmHWM (peak
RSS) after the evaluation, with the peak reset just before it (``5`` to /proc/self/clear_refs),
so the peak is the evaluation's own and not the data loader's.
"""

import subprocess
import sys
import time


def status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def measure(num_points: int) -> str:
    import torch

    from elbogap.config import Config
    from elbogap.factory import build, load_dataset
    from elbogap.inference import evaluate

    config = Config(data="fashion-mnist", binarize="static", hidden_dims=[400], latent_dim=50,
                    train_size=num_points, test_size=10)
    data = load_dataset(config)
    model, guide = build(config, data, "diag")
    before = status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    evaluate(model, guide, data.train, elbo_samples=256, iw_samples=1000, log_px_method="iwae")
    seconds = time.perf_counter() - start
    peak = status_mib("VmHWM")
    return (f"| {num_points} | {seconds:.1f} s | {seconds / num_points * 1000:.2f} ms | {before:.0f} MiB | "
            f"{peak:.0f} MiB | {torch.get_num_threads()} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(measure(int(sys.argv[2])), flush=True)
    else:
        print("| points | time | per point | RSS with the data loaded | peak RSS during evaluation | torch threads |")
        print("|---|---|---|---|---|---|")
        for count in sys.argv[1:] or ["3000", "12000"]:
            subprocess.run([sys.executable, __file__, "--one", count], check=True)
