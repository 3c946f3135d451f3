"""Side-by-side timings of one training epoch and of importance-weighted evaluation, in one process.

Training (the reference workload of Pyro's VAE example): Fashion-MNIST, statically binarized,
VAE 784-400-50 with softplus, Bernoulli likelihood, mean-field guide, batch 128, Adam lr 1e-3:

  (a) elbogap's Trainer (compiled Trace_ELBO over index batches of one tensor, one ClippedAdam);
  (b) a hand-written PyTorch VAE with the same networks and the same one-sample ELBO;
  (c) the plain Pyro-example loop: SVI + Trace_ELBO + pyro.optim.Adam over a DataLoader.

The three loops run interleaved, a block of steps each in turn, so that a slow spell of a shared
machine hits all of them alike; each loop's epoch time is the sum of its blocks. First-call costs
(elbogap's one-time JIT compile among them) are timed apart.

Evaluation: log p(x) by importance sampling with K samples per point, by elbogap's evaluate and
by a per-datapoint ``pyro.infer.Importance`` loop, against a roofline: the decoder's FLOPs at the
machine's matmul rate, measured next to every slice of the evaluation. Peak resident memory is
read per stage (Linux: VmHWM, reset through /proc/self/clear_refs).

AIS: log p(x) of the trained model by annealed importance sampling from the prior (points x
chains x temperatures x leapfrog steps stated), against its roofline: every HMC gradient is a
decoder forward and a backward pass to z (about twice the forward's FLOPs: no weight gradients),
at the matmul rate measured beside each slice.

    python benchmarks/bench.py --out bench.json      # the full reference workload
    python benchmarks/bench.py --train-size 5000 --eval-points 200 --importance-points 2   # quick
"""

import argparse
import itertools
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
from elbogap.inference.ais import AISSettings, ais_log_px, pilot_steps
from elbogap.model import VAE

HIDDEN, LATENT, BATCH, LR = 400, 50, 128, 1e-3
WARM_UP = 4  # steps each loop takes before it is timed


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
    print(f"{label:<44} {seconds:9.2f} s   peak RSS {results[label]['peak_rss_mib']:8.0f} MiB", flush=True)
    return value


def elbogap_steps(x, epochs):
    """elbogap's Trainer, one step per ``next``; the model and guide come back at the end."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = VAE(x.shape[1], LATENT, (HIDDEN,), "softplus", "bernoulli")
    guide = build_guide("diag", model, len(x), (HIDDEN,), "softplus")
    trainer = Trainer(model, guide, x, BATCH, LR, seed=0)
    for _ in range(epochs * math.ceil(len(x) / BATCH)):
        trainer.run(trainer.step_count + 1)
        yield trainer.losses[-1]
    return model, guide


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


def hand_written_steps(x, epochs):
    torch.manual_seed(0)
    vae = HandVAE(x.shape[1])
    optimizer = torch.optim.Adam(vae.parameters(), lr=LR)
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(BATCH):
            optimizer.zero_grad()
            loss = vae.loss(x[index], len(x))
            loss.backward()
            optimizer.step()
            yield float(loss.detach()) / len(x)


def pyro_example_steps(x, epochs):
    """The loop of Pyro's examples/vae/vae.py: SVI.step over a DataLoader."""
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
            yield svi.step(batch) / BATCH


def interleaved(loops: dict, block: int) -> dict:
    """Run the step generators ``loops`` a block of steps each in turn until all are done.

    Returns per loop: ``first_seconds`` (its first ``WARM_UP`` steps), ``seconds`` (the rest),
    ``steps`` and what the generator returned.
    """
    out = {label: {"seconds": 0.0, "steps": 0, "value": None} for label in loops}
    for label, steps in loops.items():
        start = time.perf_counter()
        for _ in itertools.islice(steps, WARM_UP):
            pass
        out[label]["first_seconds"] = time.perf_counter() - start
    running = dict(loops)
    while running:
        for label, steps in list(running.items()):
            start = time.perf_counter()
            taken = 0
            try:
                for _ in range(block):
                    next(steps)
                    taken += 1
            except StopIteration as stop:
                out[label]["value"] = stop.value
                del running[label]
            out[label]["seconds"] += time.perf_counter() - start
            out[label]["steps"] += taken
    return out


def peak_memory_of(steps, count: int) -> float:
    reset_peak_memory()
    for _ in itertools.islice(steps, count):
        pass
    return peak_memory_mib()


def matmul_gflops(size=1024, repeats=10):
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


def train_stage(x, epochs, block, results):
    for make in (hand_written_steps, pyro_example_steps, elbogap_steps):  # torch's own start-up stays out
        for _ in itertools.islice(make(x[:4 * BATCH], 1), WARM_UP):
            pass
    loops = {"(b) hand-written PyTorch": hand_written_steps(x, epochs),
             "(c) Pyro example loop (SVI + DataLoader)": pyro_example_steps(x, epochs),
             "(a) elbogap Trainer": elbogap_steps(x, epochs)}
    timings = interleaved(loops, block)
    hand = timings["(b) hand-written PyTorch"]
    for label, timing in timings.items():
        # the warm-up steps are counted at the loop's own timed rate; their first-call excess is reported apart
        per_step = timing["seconds"] / timing["steps"]
        epoch = per_step * (timing["steps"] + WARM_UP) / epochs
        results[label] = {"seconds_per_epoch": epoch, "ms_per_step": 1e3 * per_step,
                          "first_call_excess_seconds": timing["first_seconds"] - WARM_UP * per_step,
                          "ratio_to_hand_written": per_step / (hand["seconds"] / hand["steps"])}
    for label, make in (("(b) hand-written PyTorch", hand_written_steps),
                        ("(c) Pyro example loop (SVI + DataLoader)", pyro_example_steps),
                        ("(a) elbogap Trainer", elbogap_steps)):
        results[label]["peak_rss_mib"] = peak_memory_of(make(x, 1), 50)
    for label, r in results.items():
        if label.startswith("("):
            print(f"{label:<44} {r['seconds_per_epoch']:7.2f} s/epoch {r['ms_per_step']:6.2f} ms/step "
                  f"{r['ratio_to_hand_written']:5.2f}x hand-written  "
                  f"first calls +{r['first_call_excess_seconds']:.2f} s  peak RSS {r['peak_rss_mib']:.0f} MiB",
                  flush=True)
    return timings["(a) elbogap Trainer"]["value"]


def evaluation_stage(model, guide, test, iw_samples, slices, results):
    """elbogap's IWAE on ``slices`` slices of the test points, with the matmul rate measured beside each."""
    decoder_flops = 2 * (LATENT * HIDDEN + HIDDEN * test.shape[1])  # per sample; encoder and elementwise work left out
    seconds = roofline = 0.0
    log_px = []
    reset_peak_memory()
    for part in test.tensor_split(slices):
        rate = max(matmul_gflops(), matmul_gflops())
        start = time.perf_counter()
        evaluation = evaluate(model, guide, part, elbo_samples=1, iw_samples=iw_samples, log_px_method="iwae")
        seconds += time.perf_counter() - start
        rate = max(rate, matmul_gflops())
        roofline += decoder_flops * iw_samples * len(part) / (rate * 1e9)
        log_px.append(evaluation.per_point["log_px"])
    label = f"elbogap IWAE K={iw_samples}, {len(test)} points"
    results[label] = {"seconds": seconds, "peak_rss_mib": peak_memory_mib(), "ms_per_point": 1e3 * seconds / len(test)}
    results["roofline"] = {"decoder_flops_per_sample": decoder_flops, "roofline_seconds": roofline,
                           "share_of_roofline": roofline / seconds}
    print(f"{label:<44} {seconds:9.2f} s   peak RSS {results[label]['peak_rss_mib']:8.0f} MiB; "
          f"decoder roofline {roofline:.2f} s: {100 * roofline / seconds:.0f}% of it", flush=True)
    return torch.cat(log_px)


def ais_stage(model, test, settings: AISSettings, slices, results):
    """elbogap's AIS on ``slices`` slices of ``test``, with its decoder-gradient roofline beside each."""
    gradient_flops = 2 * 2 * (LATENT * HIDDEN + HIDDEN * test.shape[1])  # forward + backward to z, per gradient
    # per chain: one evaluation at the start of each run, then leapfrog_steps per transition, pilot and reported run
    gradients_per_chain = 2 + (settings.steps + pilot_steps(settings)) * settings.leapfrog_steps
    seconds = roofline = 0.0
    log_px, acceptance = [], []
    reset_peak_memory()
    for part in test.tensor_split(slices):
        rate = max(matmul_gflops(), matmul_gflops())
        start = time.perf_counter()
        result = ais_log_px(model, part, settings)
        seconds += time.perf_counter() - start
        rate = max(rate, matmul_gflops())
        roofline += gradient_flops * gradients_per_chain * settings.chains * len(part) / (rate * 1e9)
        log_px.append(result.log_px)
        acceptance.append(result.acceptance)
    label = (f"elbogap AIS {len(test)} points x {settings.chains} chains x {settings.steps} temperatures x "
             f"{settings.leapfrog_steps} leapfrog")
    results["ais"] = {"label": label, "seconds": seconds, "peak_rss_mib": peak_memory_mib(),
                      "ms_per_point": 1e3 * seconds / len(test), "settings": settings.to_dict(),
                      "gradients_per_point": gradients_per_chain * settings.chains,
                      "roofline_seconds": roofline, "share_of_roofline": roofline / seconds,
                      "acceptance_by_band": torch.stack(acceptance).mean(0).tolist(),
                      "mean_log_px": float(torch.cat(log_px).mean())}
    print(f"{label:<44} {seconds:9.2f} s   peak RSS {results['ais']['peak_rss_mib']:8.0f} MiB; "
          f"gradient roofline {roofline:.2f} s: {100 * roofline / seconds:.0f}% of it; "
          f"mean log p(x) {results['ais']['mean_log_px']:.3f}", flush=True)
    return torch.cat(log_px)


def main(args):
    if args.train_size is not None and args.epochs * math.ceil(args.train_size / BATCH) <= WARM_UP:
        raise SystemExit(f"bench.py: --train-size {args.train_size} leaves no timed step after the {WARM_UP} "
                         f"warm-up steps; give at least {(WARM_UP + 1) * BATCH} points")
    torch.set_num_threads(args.threads) if args.threads else None
    data = load_data("fashion-mnist", binarize="static", train_size=args.train_size, test_size=args.eval_points)
    x = data.train
    results = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "pyro": pyro.__version__, "matmul_gflops": matmul_gflops()},
               "workload": {"train_points": len(x), "epochs": args.epochs, "batch": BATCH,
                            "iw_samples": args.iw_samples, "eval_points": len(data.test)}}
    print(f"{len(x)} training points, {args.epochs} epoch(s), batch {BATCH}; {torch.get_num_threads()} threads; "
          f"matmul {results['machine']['matmul_gflops']:.0f} GFLOP/s")
    model, guide = train_stage(x, args.epochs, args.block, results)

    log_px = evaluation_stage(model, guide, data.test, args.iw_samples, args.slices, results)
    points = data.test[:args.importance_points]
    label = f"pyro Importance loop, {len(points)} points"
    loop = timed(label, lambda: importance_loop(model, guide, points, args.iw_samples), results)
    per_point_loop = results[label]["seconds"] / max(len(points), 1)
    elbogap_per_point = results[f"elbogap IWAE K={args.iw_samples}, {len(data.test)} points"]["ms_per_point"] / 1e3
    results["importance_loop_seconds_per_point"] = per_point_loop
    results["elbogap_speedup_over_importance_loop"] = per_point_loop / elbogap_per_point
    print(f"per point: elbogap {elbogap_per_point * 1e3:.1f} ms, Importance loop {per_point_loop * 1e3:.0f} ms "
          f"({per_point_loop / elbogap_per_point:.0f}x); log p(x) of the first points: elbogap "
          f"{[round(v, 2) for v in log_px[:len(loop)].tolist()]}, Importance {[round(v, 2) for v in loop]}")
    print(f"elbogap IWAE mean log p(x) = {float(log_px.mean()):.3f}")
    if args.ais_points:
        settings = AISSettings(steps=args.ais_steps, chains=args.ais_chains, leapfrog_steps=args.leapfrog_steps)
        ais_stage(model, data.test[:args.ais_points], settings, args.ais_slices, results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--train-size", type=int, default=None, help="training points (default: all 60000)")
    parser.add_argument("-e", "--epochs", type=int, default=1)
    parser.add_argument("-b", "--block", type=int, default=10, help="steps a loop takes before the next one's turn")
    parser.add_argument("-k", "--iw-samples", type=int, default=5000)
    parser.add_argument("-p", "--eval-points", type=int, default=1000)
    parser.add_argument("-s", "--slices", type=int, default=10, help="evaluation slices, each beside a matmul timing")
    parser.add_argument("-i", "--importance-points", type=int, default=5,
                        help="points for the (slow) per-datapoint Importance loop; its time is reported per point")
    parser.add_argument("--ais-points", type=int, default=100, help="test points for the AIS stage (0: skip it)")
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--ais-chains", type=int, default=16)
    parser.add_argument("--leapfrog-steps", type=int, default=10)
    parser.add_argument("--ais-slices", type=int, default=2,
                        help="AIS slices, each one AIS call beside a matmul timing; few slices keep the "
                             "products as tall as in a real evaluation")
    parser.add_argument("-t", "--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("-o", "--out", default=None, help="write the measurements as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
