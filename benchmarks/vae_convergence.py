"""The trend rule on VAEs (``--schedule fixed``, the default for per-point latents) against fresh draws: how often a
fit is called converged while its ELBO still rose by more than the tolerance over the rule's window (a miss), and
unconverged while it did not (a false alarm), read from the minibatch losses and from fixed draws; and how often the
rule cannot tell (its gain's interval holds the tolerance).

    python benchmarks/vae_convergence.py [--seeds 5] [--settings 500:0.1,2000:0.1,2000:0.001] [--guides diag,iaf]

Each fit is the default study's run (digits, the default VAE, ``--lr 0.003``), trained alone on one thread, for each
``steps:lr_decay`` of ``--settings`` (the default study's is 2000:0.1; a rate decayed a thousandfold leaves fits that
have stopped rising, the false alarms' test).

The truth a verdict is checked against is the gain of the ELBO over the window on every training row (1,438), both
ends scored on the same 32 draws a row, drawn from another stream than the rule's 4 (the rule's own 1,024 rows are
among them), with its standard error: a fit *still rising* where that gain exceeds the tolerance (0.01 nats a point)
by 2 standard errors, *settled* where it is below the tolerance by 2. The rest are too close to the tolerance to
say, and count in neither.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from elbogap import streams  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.factory import build, load_dataset, make_trainer  # noqa: E402
from elbogap.inference import evaluate  # noqa: E402
from elbogap.inference.convergence import fixed_verdict, paired_gain, window_steps  # noqa: E402

TRUTH_DRAWS = 32


def elbo_rows(model, guide, rows, seed: int) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(10_000 + seed)
        return evaluate(model, guide, rows, elbo_samples=TRUTH_DRAWS, iw_samples=1,
                        log_px_method="iwae").per_point["elbo"].double()


def one_fit(guide_name: str, seed: int, steps: int, lr_decay: float) -> dict:
    config = Config(steps=steps, guides=[guide_name], lr_decay=lr_decay).validate()
    data = load_dataset(config)
    pyro.clear_param_store()
    streams.seeded("training", seed)
    model, guide = build(config, data, guide_name)
    trainer = make_trainer(config, model, guide, data, seed)
    begun = time.perf_counter()
    start = window_steps(steps, trainer.convergence_settings)
    trainer.run(steps - start, lambda trainer: trainer.check_window(steps))
    state = copy.deepcopy((model.state_dict(), guide.state_dict()))
    trainer.run(steps, lambda trainer: trainer.check_window(steps))
    seconds = time.perf_counter() - begun
    end = elbo_rows(model, guide, data.train, seed)
    with torch.no_grad():
        model.load_state_dict(state[0])
        guide.load_state_dict(state[1])
    truth = paired_gain(elbo_rows(model, guide, data.train, seed), end)
    return {"fixed_draws": trainer.convergence(steps),
            "minibatches": fixed_verdict(trainer.losses, trainer.convergence_settings),
            "truth": truth["gain"], "truth_stderr": truth["gain_stderr"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--settings", default="500:0.1,2000:0.1,2000:0.001", help="steps:lr_decay, comma list")
    parser.add_argument("--guides", default="diag,iaf")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for setting in args.settings.split(","):
        steps, lr_decay = int(setting.split(":")[0]), float(setting.split(":")[1])
        fits = [one_fit(guide, seed, steps, lr_decay) for guide in args.guides.split(",")
                for seed in range(args.seeds)]
        for fit in fits:
            print(f"{setting}: truth {fit['truth']:.4f} ± {fit['truth_stderr']:.4f}; fixed draws "
                  f"{fit['fixed_draws']['gain']:.4f} ± {fit['fixed_draws']['gain_stderr']:.4f}; minibatches "
                  f"{fit['minibatches']['gain']:.4f} ± {fit['minibatches']['gain_stderr']:.4f}", flush=True)
        for read_from in ("minibatches", "fixed_draws"):
            rows.append(summarize(f"{read_from}, {steps} steps, --lr-decay {lr_decay:g}", read_from, fits))
    print("\n| rule reads | fits | still rising | settled | called converged | of them still rising (miss) "
          "| called unconverged | of them settled (false alarm) | cannot tell (of them rising, settled) "
          "| truth's gain, range | seconds a fit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


def summarize(label: str, read_from: str, fits: list[dict]) -> list:
    tolerance = fits[0][read_from]["tolerance"]
    rising = [fit["truth"] - 2 * fit["truth_stderr"] > tolerance for fit in fits]
    settled = [fit["truth"] + 2 * fit["truth_stderr"] < tolerance for fit in fits]
    verdicts = [fit[read_from]["converged"] for fit in fits]  # True, False, or None: the rule cannot tell
    converged, unconverged = [v is True for v in verdicts], [v is False for v in verdicts]
    unclear = [v is None for v in verdicts]
    truths = [fit["truth"] for fit in fits]
    return [label, len(fits), sum(rising), sum(settled), sum(converged),
            sum(c and r for c, r in zip(converged, rising, strict=True)), sum(unconverged),
            sum(u and s for u, s in zip(unconverged, settled, strict=True)),
            f"{sum(unclear)} ({sum(u and r for u, r in zip(unclear, rising, strict=True))}, "
            f"{sum(u and s for u, s in zip(unclear, settled, strict=True))})",
            f"{min(truths):.3f} to {max(truths):.3f}", f"{sum(fit['seconds'] for fit in fits) / len(fits):.1f}"]


if __name__ == "__main__":
    main()
