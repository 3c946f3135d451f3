"""Side-by-side timings of one training epoch and of importance-weighted evaluation, in one process.

Training (the reference workload of Pyro's VAE example): Fashion-MNIST, statically binarized,
VAE 784-400-50 with softplus, Bernoulli likelihood, mean-field guide, batch 128, Adam lr 1e-3:

  (a) elbogap's Trainer (SVI + Trace_ELBO over index batches of one tensor);
  (b) a hand-written PyTorch VAE with the same networks and the same one-sample ELBO;
  (c) the plain Pyro-example loop: SVI + Trace_ELBO + pyro.optim.Adam over a DataLoader.

Evaluation: log p(x) by importance sampling with K samples per point, by elbogap's evaluate and
by a per-datapoint ``pyro.infer.Importance`` loop, against a roofline from the measured matmul
rate and the decoder's FLOPs. Peak resident memory is read per stage (Linux: VmHWM, reset
through /proc/self/clear_refs).

    python benchmarks/bench.py                        # the full reference workload
    python benchmarks/bench.py --train-size 5000 --eval-points 200 --importance-points 5   # quick
"""

import argparse
import json
import math
import platform
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Importance, Trace_ELBO
from torch import nn

from elbogap.data import load_data
from elbogap.guides import build_guide
from elbogap.inference import Trainer, evaluate
from elbogap.model import VAE

HIDDEN, LATENT, BATCH, LR = 400, 50, 128, 1e-3


def reset_peak_memory() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(label, fn, results):
    reset_peak_memory()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    results[label] = {"seconds": seconds, "peak_rss_mib": peak_memory_mib()}
    print(f"{label:<40} {seconds:9.2f} s   peak RSS {results[label]['peak_rss_mib']:8.0f} MiB", flush=True)
    return value


def elbogap_epoch(x, epochs):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = VAE(x.shape[1], LATENT, (HIDDEN,), "softplus", "bernoulli")
    guide = build_guide("diag", model, len(x), (HIDDEN,), "softplus")
    trainer = Trainer(model, guide, x, BATCH, LR, seed=0)
    steps = epochs * math.ceil(len(x) / BATCH)
    return trainer.run(steps).losses[-1], model, guide


class HandVAE(nn.Module):
    """The same encoder and decoder as elbogap's VAE with the diag guide, in plain PyTorch."""

    def __init__(self, data_dim):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(data_dim, HIDDEN), nn.Softplus())
        self.loc, self.scale = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
        self.decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Softplus(), nn.Linear(HIDDEN, data_dim))

    def loss(self, x, num_data):
        """Negative one-sample ELBO, scaled to the full data set as Pyro's plate scales it."""
        h = self.encoder(x)
        loc, scale = self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        logits = self.decoder(z)
        log_lik = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return -(log_lik + log_prior - log_q).sum() * num_data / len(x)


def hand_written_epoch(x, epochs):
    torch.manual_seed(0)
    vae = HandVAE(x.shape[1])
    optimizer = torch.optim.Adam(vae.parameters(), lr=LR)
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(BATCH):
            optimizer.zero_grad()
            loss = vae.loss(x[index], len(x))
            loss.backward()
            optimizer.step()
    return float(loss.detach()) / len(x)


def pyro_example_epoch(x, epochs):
    """The loop of Pyro's examples/vae/vae.py: SVI.step over a DataLoader."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = VAE(x.shape[1], LATENT, (HIDDEN,), "softplus", "bernoulli")
    guide = build_guide("diag", model, len(x), (HIDDEN,), "softplus")

    def model_fn(batch):
        pyro.module("decoder", model)
        with pyro.plate("data", batch.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=model.decode(z), validate_args=False).to_event(1), obs=batch)

    def guide_fn(batch):
        pyro.module("encoder", guide)
        with pyro.plate("data", batch.shape[0]):
            pyro.sample("z", guide.distribution(batch))

    svi = SVI(model_fn, guide_fn, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=BATCH, shuffle=True)
    for _ in range(epochs):
        for (batch,) in loader:
            loss = svi.step(batch)
    return loss / BATCH


def matmul_gflops(size=1024, repeats=20):
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def importance_loop(model, guide, x, num_samples):
    """pyro.infer.Importance, one data point at a time, as a user would write it without elbogap."""
    estimates = []
    for row in x:
        importance = Importance(model.model, guide.guide, num_samples=num_samples)
        importance.run(row[None])
        estimates.append(float(importance.get_log_normalizer()))
    return estimates


def main(args):
    torch.set_num_threads(args.threads) if args.threads else None
    data = load_data("fashion-mnist", binarize="static", train_size=args.train_size, test_size=args.eval_points)
    x = data.train
    results = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "pyro": pyro.__version__},
               "workload": {"train_points": len(x), "epochs": args.epochs, "batch": BATCH,
                            "iw_samples": args.iw_samples, "eval_points": len(data.test)}}
    print(f"{len(x)} training points, {args.epochs} epoch(s), batch {BATCH}; {torch.get_num_threads()} threads")
    for warm_up in (hand_written_epoch, pyro_example_epoch, elbogap_epoch):  # first-call costs stay out of timings
        warm_up(x[:4 * BATCH], 1)
    timed("(b) hand-written PyTorch", lambda: hand_written_epoch(x, args.epochs), results)
    timed("(c) Pyro example loop (SVI + DataLoader)", lambda: pyro_example_epoch(x, args.epochs), results)
    _, model, guide = timed("(a) elbogap Trainer", lambda: elbogap_epoch(x, args.epochs), results)
    hand = results["(b) hand-written PyTorch"]["seconds"]
    for label in ("(a) elbogap Trainer", "(c) Pyro example loop (SVI + DataLoader)"):
        results[label]["ratio_to_hand_written"] = results[label]["seconds"] / hand
        print(f"{label:<40} {results[label]['ratio_to_hand_written']:9.2f} x hand-written")

    test = data.test
    evaluation = timed(f"elbogap IWAE K={args.iw_samples}, {len(test)} points",
                       lambda: evaluate(model, guide, test, elbo_samples=1, iw_samples=args.iw_samples,
                                        log_px_method="iwae"), results)
    points = test[:args.importance_points]
    timed(f"pyro Importance loop, {len(points)} points", lambda: importance_loop(model, guide, points,
                                                                                 args.iw_samples), results)
    rate = matmul_gflops()
    # the decoder's two matmuls per sample; the encoder (once per point) and elementwise work are left out
    decoder_flops = 2 * (LATENT * HIDDEN + HIDDEN * x.shape[1])
    roofline = decoder_flops * args.iw_samples * len(test) / (rate * 1e9)
    key = f"elbogap IWAE K={args.iw_samples}, {len(test)} points"
    per_point_loop = results[f"pyro Importance loop, {len(points)} points"]["seconds"] / max(len(points), 1)
    results["roofline"] = {"matmul_gflops": rate, "decoder_flops_per_sample": decoder_flops,
                           "roofline_seconds": roofline,
                           "share_of_roofline": roofline / results[key]["seconds"],
                           "importance_loop_seconds_per_point": per_point_loop,
                           "elbogap_seconds_per_point": results[key]["seconds"] / len(test)}
    print(f"matmul rate {rate:.1f} GFLOP/s; decoder roofline {roofline:.2f} s; elbogap reaches "
          f"{100 * roofline / results[key]['seconds']:.0f}% of it; per point: elbogap "
          f"{results[key]['seconds'] / len(test) * 1e3:.1f} ms, Importance loop {per_point_loop * 1e3:.1f} ms")
    print(f"elbogap IWAE log p(x) = {evaluation.metrics['log_px']:.3f} ± {evaluation.metrics['log_px_stderr']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--train-size", type=int, default=None, help="training points (default: all 60000)")
    parser.add_argument("-e", "--epochs", type=int, default=1)
    parser.add_argument("-k", "--iw-samples", type=int, default=5000)
    parser.add_argument("-p", "--eval-points", type=int, default=1000)
    parser.add_argument("-i", "--importance-points", type=int, default=20,
                        help="points for the (slow) per-datapoint Importance loop; its time is reported per point")
    parser.add_argument("-t", "--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("-o", "--out", default=None, help="write the measurements as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
