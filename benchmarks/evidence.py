"""The cost of the evidence log p(D) of models with global latents: AIS and NUTS on the three examples.

    python benchmarks/evidence.py [--steps 2000] [--chains 256] [--nuts-warmup 500] [--nuts-samples 500]

For each example model on its data (examples/): the size of the latent vector, AIS's work
(chains x temperatures x leapfrog steps, with the pilot run) and wall time with the chains batched
by ``torch.func.vmap`` and, side by side on a slice of the same run, one program call per chain;
the time of one guide's ELBO evaluation (``--iw-samples`` draws); and the time of the NUTS
reference (2 chains, run one after another). One intra-op thread, as the runs use.
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from elbogap.global_latents.evaluation import guide_draws  # noqa: E402
from elbogap.global_latents.evidence import EvidencePath, ais_evidence  # noqa: E402
from elbogap.global_latents.guides import GlobalAutoGuide  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.global_latents.reference import nuts_reference  # noqa: E402
from elbogap.inference.ais import AISSettings, pilot_steps  # noqa: E402


def examples() -> dict:
    import eight_schools
    import logistic_regression
    import random_effects

    return {"eight schools": (eight_schools.model, eight_schools.eight_schools()),
            "logistic regression": (logistic_regression.model, logistic_regression.breast_cancer()),
            "random effects": (random_effects.model, random_effects.random_effects_data())}


def gradient_ms(model, data, chains: int, vectorized: bool, repeats: int = 5) -> float:
    """Milliseconds for the densities and gradients of ``chains`` chains at once."""
    model.vectorized = vectorized
    path = EvidencePath(model, data)
    z = path.start(chains)
    path.parts(z)
    start = time.perf_counter()
    for _ in range(repeats):
        path.parts(z)
    return 1000 * (time.perf_counter() - start) / repeats


def main(args):
    torch.set_num_threads(1)
    settings = AISSettings(steps=args.steps, chains=args.chains)
    rows = []
    for name, (program, data) in examples().items():
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        model = GlobalLatentModel(program, data, name)
        evidence = ais_evidence(model, data, settings)
        batched, looped = gradient_ms(model, data, args.chains, True), gradient_ms(model, data, args.chains, False, 1)
        guide = GlobalAutoGuide("AutoNormal", model, data)
        start = time.perf_counter()
        guide_draws(model, guide, data, args.iw_samples)
        draws_seconds = time.perf_counter() - start
        start = time.perf_counter()
        reference = nuts_reference(model, data, chains=2, warmup=args.nuts_warmup, samples=args.nuts_samples)
        nuts_seconds = time.perf_counter() - start
        work = args.chains * (settings.steps + pilot_steps(settings)) * settings.leapfrog_steps
        rows.append((name, len(data), model.latent_dim, work, evidence.seconds, evidence.stderr, batched, looped,
                     draws_seconds, nuts_seconds, max(reference.diagnostics["rhat_max"].values())))
    print(f"AIS: {args.chains} chains x {args.steps} temperatures (+{pilot_steps(settings)} pilot) x "
          f"{settings.leapfrog_steps} leapfrog steps; ELBO from {args.iw_samples} draws of AutoNormal; NUTS 2 chains x "
          f"({args.nuts_warmup} warm-up + {args.nuts_samples} samples)\n")
    print("| model | rows | latents | gradient evaluations (chains x steps x leapfrog) | AIS seconds | AIS s.e. "
          "| ms per gradient of all chains, vmap | one call per chain | ratio | ELBO seconds | NUTS seconds "
          "| NUTS max R-hat |")
    print("|---" * 12 + "|")
    for name, n, dim, work, seconds, stderr, batched, looped, draws, nuts, rhat in rows:
        print(f"| {name} | {n} | {dim} | {work:,} | {seconds:.1f} | {stderr:.3f} | {batched:.2f} | {looped:.1f} | "
              f"{looped / batched:.0f}x | {draws:.1f} | {nuts:.1f} | {rhat:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-samples", type=int, default=500)
    main(parser.parse_args())
