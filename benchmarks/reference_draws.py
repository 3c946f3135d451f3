"""The reference posterior of a model with global latents: the AIS chains' final states against draws of the fitted
Gaussian reference weighted by importance, side by side from one evidence run per case and repeat.

    python benchmarks/reference_draws.py [--cases conjugate100,eight-schools,...] [--repeats 2]

First, why the draws need a light tail: draws of a Gaussian narrower than a Gaussian target, the weighted sd's error
over repeats against what Kish's effective count claims. Then per case, each row: the evidence's seconds, the
chains' effective draws, the reference draws' PSIS k-hat and effective draws, which the reference posterior takes
(``source``: the draws where their k-hat is at most 0.3 and they outnumber the chains), and on the conjugate
regressions (an exact Gaussian posterior) the largest relative error of a weight's sd under each, with the error
1/sqrt(2 n) that n effective draws of a Gaussian give.
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.global_cases import cases  # noqa: E402
from elbogap.global_latents.evidence import EvidenceSettings, ais_evidence  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.global_latents.reference import ais_reference  # noqa: E402
from elbogap.inference.weights import pareto_khat  # noqa: E402
from tests.global_latents import truth  # noqa: E402


def sd_error(reference, exact_sd) -> str:
    """The largest relative error of the weights' sds, and the Gaussian error of that many effective draws."""
    if exact_sd is None:
        return "–"
    error = float((reference.moments()["w"]["sd"] / exact_sd - 1).abs().max())
    return f"{error:.3f} (1/sqrt(2n) {(2 * reference.diagnostics['effective_draws']) ** -0.5:.3f})"


def synthetic(repeats: int = 300, draws: int = 2048) -> None:
    """Draws of N(0, s²) weighted toward N(0, 1): the weights' tail has k = 1 - s², and the weighted sd's error over
    ``repeats`` against what Kish's effective count claims (1/sqrt(2n)) and 256 chains' states claim."""
    print("| proposal sd | k | mean k-hat | Kish's effective draws | sd error claimed, 1/sqrt(2n) | sd error over "
          "repeats (rms) | 256 chains' claim |")
    print("|---" * 7 + "|")
    generator = torch.Generator().manual_seed(0)
    for scale in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7):
        errors, khats, counts = [], [], []
        for _ in range(repeats):
            z = torch.randn(draws, generator=generator, dtype=torch.float64) * scale
            log_w = 0.5 * z.pow(2) * (scale**-2 - 1)
            weights = log_w.softmax(0)
            mean = (weights * z).sum()
            errors.append(float(((weights * (z - mean).pow(2)).sum()).sqrt() - 1))
            khats.append(float(pareto_khat(log_w[:, None])[0]))
            counts.append(float(weights.pow(2).sum().reciprocal()))
        count = sum(counts) / repeats
        print(f"| {scale} | {1 - scale**2:.2f} | {sum(khats) / repeats:.2f} | {count:.0f} | {(2 * count) ** -0.5:.3f} "
              f"| {torch.tensor(errors).pow(2).mean().sqrt():.3f} | {512 ** -0.5:.3f} |", flush=True)
    print()


def main(args) -> None:
    torch.set_num_threads(1)
    synthetic()
    print("| case | repeat | evidence (s) | chains' effective draws | draws' k-hat | draws' effective (of 2048) "
          "| source | max sd error, chains | max sd error, reference taken |")
    print("|---" * 9 + "|")
    for case in cases(args.cases):
        model = GlobalLatentModel(case.program, case.data, case.name)
        exact_sd = None
        if case.name.startswith("conjugate"):
            _, cov, _ = truth.regression_posterior(case.data[:, :-1].double(), case.data[:, -1].double(), 1.0, 1.0)
            exact_sd = cov.diagonal().sqrt()
        for repeat in range(args.repeats):
            pyro.set_rng_seed(repeat)
            started = time.perf_counter()
            evidence = ais_evidence(model, case.data, EvidenceSettings())
            seconds = time.perf_counter() - started
            chains = ais_reference(model, evidence.log_w, evidence.states)
            taken = ais_reference(model, evidence.log_w, evidence.states, draws=evidence.draws)
            found = taken.diagnostics
            khat = "–" if found.get("draws_khat") is None else f"{found['draws_khat']:.2f}"
            effective = "–" if "draws_effective" not in found else f"{found['draws_effective']:.0f}"
            print(f"| {case.name} | {repeat} | {seconds:.1f} | {chains.diagnostics['effective_draws']:.0f} | {khat} "
                  f"| {effective} | {found.get('source', 'chains (no draws)')} | {sd_error(chains, exact_sd)} "
                  f"| {sd_error(taken, exact_sd)} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=lambda text: text.split(","),
                        default=["conjugate100", "conjugate1000", "eight-schools", "logistic", "varying"])
    parser.add_argument("--repeats", type=int, default=2)
    main(parser.parse_args())
